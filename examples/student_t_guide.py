"""A Student-t guide written as a Pyro user would: one run, no restart machinery (see README.md here).

``q(z | x) = Π_k StudentT(ν, loc_k(x), scale_k(x))`` with a 2 × 32 tanh encoder and a learned
degrees of freedom ν > 1 shared over x. Heavier tails than the mean-field Gaussian guide.
It knows nothing of restarts: ``pyro-vae train ... --restarts 3`` batches three independent
copies of it (:func:`guides.restarts.batch_restarts`).
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from torch import nn
from torch.nn.functional import softplus


class StudentTGuide(nn.Module):
    """``z ~ StudentT(ν, loc(x), scale(x))`` per dimension, inside the plate ``"data"``.

    Parameters
    ----------
    obs_dim, latent_dim : int
        D and K (the guide contract's two positional arguments).
    width : int
        Units of each of the two tanh layers.
    """

    def __init__(self, obs_dim: int, latent_dim: int, width: int = 32):
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Linear(obs_dim, width), nn.Tanh(), nn.Linear(width, width), nn.Tanh(), nn.Linear(width, 2 * latent_dim)
        )
        self.raw_df = nn.Parameter(torch.tensor(1.0))  # ν = 1 + softplus(raw): 2.3 at the start
        self.latent_dim = latent_dim

    def distribution(self, x: torch.Tensor) -> dist.Independent:
        """``q(z | x)`` for the rows of ``x``: batch (N,), event (K,)."""
        out = self.encoder(x)
        loc, scale = out[..., : self.latent_dim], softplus(out[..., self.latent_dim :]) + 1e-4
        df = 1.0 + softplus(self.raw_df)
        return dist.StudentT(df, loc, scale).to_event(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with pyro.plate("data", x.shape[0]):
            return pyro.sample("z", self.distribution(x))


def main(argv: list[str] | None = None) -> dict:
    """Train the guide from Python with restarts, pick the best, and evaluate it (see README.md)."""
    import argparse

    from guides.restarts import batch_restarts
    from pyro_vae.datasets import get_dataset
    from pyro_vae.inference import train
    from pyro_vae.metrics import importance_log_likelihood, mutual_info_encoder, true_log_likelihood
    from pyro_vae.models import build_vae_model
    from pyro_vae.nets import select_restart

    parser = argparse.ArgumentParser(description="A Student-t guide on Figure-8, from Python")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--restarts", type=int, default=3)
    parser.add_argument("--eval-samples", type=int, default=1000)
    args = parser.parse_args(argv)

    dataset = get_dataset("figure8")
    data = dataset.splits(seed=0)
    torch.manual_seed(0)
    model = build_vae_model(dataset.latent_dim, dataset.obs_dim, dataset.noise_var, num_restarts=args.restarts)
    guide = batch_restarts(StudentTGuide, args.restarts, dataset.obs_dim, dataset.latent_dim)
    result = train(model, guide, data.train.x, data.val.x, epochs=args.epochs, progress=False)
    best_model, best_guide = select_restart(model, result.best_restart), select_restart(guide, result.best_restart)
    test = data.test.x
    loglik = importance_log_likelihood(best_model, best_guide, test, num_samples=args.eval_samples)
    info = mutual_info_encoder(best_guide, test)
    out = {
        "best_restart": result.best_restart,
        "val_objective_per_restart": [float(v) for v in result.val_objective],
        "test_loglik": loglik.mean, "test_loglik_mc_se": loglik.mc_se, "proposal": loglik.proposal,
        "true_loglik": float(true_log_likelihood(dataset, test).mean()),
        "mutual_info": info.avg, "mutual_info_method": info.method,
        "df": float(1.0 + softplus(best_guide.raw_df.detach())),
    }
    for key, value in out.items():
        print(f"{key}: {value}")
    return out


if __name__ == "__main__":
    main()
