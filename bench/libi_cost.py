"""Cost of LiBI per epoch against the plain VAE, and of the flow guide against the mean-field one.

LinearJTE (000 App. E: 500 training and 500 validation points, the parametric decoder, linear
encoders). For restarts R ∈ {1, 10} and minibatches of 500 (full batch, 000) and 100, prints
the CPU seconds per epoch (best of ``--rounds`` interleaved rounds) of

* the VAE: :func:`pyro_vae.inference.train` (one ELBO epoch plus the validation ELBO);
* LiBI step 1: :func:`pyro_vae.inference.libi.fit_likelihood` (Eq. 44 with the Henze-Zirkler
  penalty on each minibatch's codes, plus Eq. 44 on the validation set). LiBI's step 2 is a
  guide-only ELBO epoch, at most the VAE's cost;

and a VAE epoch with the flow guide (``guides.flow``) against one with the mean-field guide, both
with 3 × 50 networks. Then LiBI step 1 at R = 10 with the Henze-Zirkler statistic computed
restart by restart (the previous path, kept below verbatim) against one batched call, with the
largest difference in the trained parameters. Usage:
``python bench/libi_cost.py [--epochs 20] [--rounds 3] [--skip-table]``.
"""

from __future__ import annotations

import argparse
import math
import os
import time
from unittest import mock

import torch

from guides.flow import FlowGuide
from guides.mean_field import MeanFieldGuide
from pyro_vae.datasets import get_dataset
from pyro_vae.inference import train
from pyro_vae.inference import libi
from pyro_vae.inference.libi import code_network_for, fit_likelihood
from pyro_vae.metrics.normality import _check_points, _lognormal_null, _smoothing
from pyro_vae.models import VAEModel


def _previous_henze_zirkler(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The (n, p) statistic as it was: one call per restart, a host sync for the rank check."""
    x = x.double()
    n, p = x.shape
    _check_points("x", n, p)
    centred = x - x.mean(dim=0)
    cov = centred.T @ centred / n
    chol, info = torch.linalg.cholesky_ex(cov)
    log_mean, log_sd = _lognormal_null(n, p)
    if int(info) != 0 or int(torch.linalg.matrix_rank(cov.detach())) < p:
        stat = x.sum() * 0.0 + 4.0 * n
    else:
        b2 = _smoothing(n, p) ** 2
        white = torch.linalg.solve_triangular(chol, centred.T, upper=False).T
        d_j = (white**2).sum(dim=1)
        d_jk = (d_j[:, None] + d_j[None, :] - 2.0 * white @ white.T).clamp_min(0.0)
        stat = (
            torch.exp(-b2 / 2 * d_jk).sum() / n
            - 2 * (1 + b2) ** (-p / 2) * torch.exp(-b2 / (2 * (1 + b2)) * d_j).sum()
            + n * (1 + 2 * b2) ** (-p / 2)
        )
    p_value = 0.5 * torch.special.erfc((torch.log(stat) - log_mean) / (log_sd * math.sqrt(2.0)))
    return stat, p_value


def _per_restart(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    stats = [_previous_henze_zirkler(zr) for zr in z]
    return torch.stack([s for s, _ in stats]), torch.stack([p for _, p in stats])


def _setup(ds, restarts, guide_kind="mean_field"):
    torch.manual_seed(0)
    model = VAEModel(ds.decoder_family(restarts), 2, 2, ds.obs_noise_var(), num_restarts=restarts)
    if guide_kind == "flow":
        guide = FlowGuide(2, 2, (50, 50, 50), num_restarts=restarts)
    elif guide_kind == "mlp":
        guide = MeanFieldGuide(2, 2, (50, 50, 50), num_restarts=restarts)
    else:
        guide = MeanFieldGuide(2, 2, (), num_restarts=restarts)
    return model, guide


def _seconds(fn) -> float:
    start = time.process_time()
    fn()
    return time.process_time() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--skip-table", action="store_true", help="only the Henze-Zirkler comparison")
    args = parser.parse_args()
    torch.set_num_threads(1)
    ds = get_dataset("linear_jte")
    splits = ds.splits(0)
    x, xv = splits.train.x, splits.val.x
    if not args.skip_table:
        _table(args, ds, x, xv)
    _henze_zirkler_paths(args, ds, x, xv)


def _henze_zirkler_paths(args, ds, x, xv) -> None:
    """LiBI step 1, R = 10, the paper's code network (3 × 50) and minibatches of 100."""
    e, restarts = args.epochs, 10
    best = {"per restart": float("inf"), "batched": float("inf")}
    trained = {}
    for _ in range(args.rounds):
        for label in best:
            model, guide = _setup(ds, restarts, "mlp")
            h = code_network_for(guide, 2, 2, restarts)
            patch = mock.patch.object(libi, "henze_zirkler_torch", _per_restart) if label == "per restart" else None
            with patch or mock.patch.object(libi, "henze_zirkler_torch", libi.henze_zirkler_torch):
                best[label] = min(best[label], _seconds(lambda: fit_likelihood(
                    model, h, x, xv, epochs=e, batch_size=100, lr=0.01)) / e)
            trained[label] = torch.cat([t.detach().flatten() for t in h.state_dict().values()])
    gap = float((trained["per restart"] - trained["batched"]).abs().max())
    print(f"LiBI step 1, R={restarts}, batch 100, 3x50 code network, {e} epochs, CPU s per epoch "
          f"(load {'%.2f %.2f %.2f' % os.getloadavg()}):")
    print(f"  Henze-Zirkler per restart {best['per restart']:.4f}   batched {best['batched']:.4f}   "
          f"ratio {best['per restart'] / best['batched']:.2f}x   largest parameter difference {gap:.1e}")


def _table(args, ds, x, xv) -> None:
    e = args.epochs
    print(f"LinearJTE, {x.shape[0]} points, CPU seconds per epoch (best of {args.rounds}), 1 thread")
    print(f"{'R':>3s} {'batch':>6s} {'VAE':>9s} {'LiBI step 1':>12s} {'ratio':>6s} "
          f"{'VAE, MF 3x50':>13s} {'VAE, flow 3x50':>15s} {'ratio':>6s}")
    for restarts in (1, 10):
        for batch in (500, 100):
            best = {"vae": float("inf"), "libi": float("inf"), "mlp": float("inf"), "flow": float("inf")}
            for _ in range(args.rounds):
                model, guide = _setup(ds, restarts)
                best["vae"] = min(best["vae"], _seconds(lambda: train(
                    model, guide, x, xv, epochs=e, batch_size=batch, lr=0.01, progress=False)) / e)
                model, guide = _setup(ds, restarts)
                h = code_network_for(guide, 2, 2, restarts)
                best["libi"] = min(best["libi"], _seconds(lambda: fit_likelihood(
                    model, h, x, xv, epochs=e, batch_size=batch, lr=0.01)) / e)
                for kind in ("mlp", "flow"):
                    model, guide = _setup(ds, restarts, kind)
                    best[kind] = min(best[kind], _seconds(lambda: train(
                        model, guide, x, xv, epochs=e, batch_size=batch, lr=0.01, progress=False)) / e)
            print(f"{restarts:>3d} {batch:>6d} {best['vae']:>9.4f} {best['libi']:>12.4f} "
                  f"{best['libi'] / best['vae']:>6.1f} {best['mlp']:>13.4f} {best['flow']:>15.4f} "
                  f"{best['flow'] / best['mlp']:>6.1f}")


if __name__ == "__main__":
    main()
