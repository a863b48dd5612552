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
