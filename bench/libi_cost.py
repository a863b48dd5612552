"""Cost of LiBI per epoch against the plain VAE, and of the flow guide against the mean-field one.

LinearJTE (000 App. E: 500 training and 500 validation points, the parametric decoder, linear
encoders). For restarts R ∈ {1, 10} and minibatches of 500 (full batch, 000) and 100, prints
the CPU seconds per epoch (best of ``--rounds`` interleaved rounds) of

* the VAE: :func:`pyro_vae.inference.train` (one ELBO epoch plus the validation ELBO);
* LiBI step 1: :func:`pyro_vae.inference.libi.fit_likelihood` (Eq. 44 with the Henze-Zirkler
  penalty on each minibatch's codes, plus Eq. 44 on the validation set). LiBI's step 2 is a
  guide-only ELBO epoch, at most the VAE's cost;

and a VAE epoch with the flow guide (``guides.flow``) against one with the mean-field guide, both
with 3 × 50 networks. Usage: ``python bench/libi_cost.py [--epochs 20] [--rounds 3]``.
"""

from __future__ import annotations

import argparse
import time

import torch

from guides.flow import FlowGuide
from guides.mean_field import MeanFieldGuide
from pyro_vae.datasets import get_dataset
from pyro_vae.inference import train
from pyro_vae.inference.libi import code_network_for, fit_likelihood
from pyro_vae.models import VAEModel


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
    args = parser.parse_args()
    torch.set_num_threads(1)
    ds = get_dataset("linear_jte")
    splits = ds.splits(0)
    x, xv = splits.train.x, splits.val.x
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
