"""Speed of one SVI step: this project's Pyro step against a hand-written PyTorch step.

Prints, for the default architecture (3 × 50 leaky-ReLU encoder and decoder, 004 App. D),
minibatches of 100 on Figure-8-shaped data (K=1, D=2):

* ms per step of ``pyro_vae`` (``VariationalObjective`` on Pyro traces + Adam) and of a
  hand-written torch ELBO step of the same networks, and their ratio;
* per-restart cost: a batched step with R=10 restarts, divided by 10, against the
  hand-written single-run step;
* throughput of R=10 batched restarts against 10 sequential single runs (ratio).

Usage: ``python bench/svi_step.py [--device cpu|cuda] [--steps 300]``.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.distributions import Normal

from guides.mean_field import MeanFieldGuide
from pyro_vae.inference import VariationalObjective, resolve_device
from pyro_vae.models import build_vae_model, unregistered


def _pair(num_restarts, device):
    torch.manual_seed(0)
    model = build_vae_model(1, 2, 0.02, num_restarts=num_restarts).to(device)
    guide = MeanFieldGuide(2, 1, num_restarts=num_restarts).to(device)
    opt = torch.optim.Adam(list(model.parameters()) + list(guide.parameters()), lr=1e-3)
    return model, guide, opt


def pyro_step(model, guide, opt, x, kind="elbo", particles=1):
    loss = VariationalObjective(kind, particles).differentiable_loss(model, guide, x)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def torch_step(model, guide, opt, x, kind="elbo", particles=1):
    """The same ELBO / IWAE written directly in torch, no Pyro."""
    q = guide.distribution(x)
    z = q.rsample((particles,))
    log_w = model.log_likelihood(x, z) + Normal(0.0, 1.0).log_prob(z).sum(-1) - q.log_prob(z).sum(-1)
    bound = log_w.mean(0) if kind == "elbo" else torch.logsumexp(log_w, 0) - torch.log(torch.tensor(float(particles)))
    loss = -bound.sum()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def _time_once(fn, steps, device):
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps * 1e3


def _time_all(fns: dict, steps: int, device, rounds: int = 5) -> dict:
    """ms per step of each function: interleaved rounds, best round kept (robust to load)."""
    for fn in fns.values():
        for _ in range(10):
            fn()
    best = {name: float("inf") for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            best[name] = min(best[name], _time_once(fn, max(1, steps // rounds), device))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    x = torch.randn(100, 2, device=device)
    print(f"device={device}, torch threads={torch.get_num_threads()}, batch 100, 3x50 leaky-ReLU nets")
    with unregistered():
        for kind, particles in (("elbo", 1), ("iwae", 20)):
            single = _pair(None, device)
            batched = _pair(10, device)
            t = _time_all(
                {
                    "ours": lambda: pyro_step(*single, x, kind, particles),
                    "hand": lambda: torch_step(*single, x, kind, particles),
                    "ours10": lambda: pyro_step(*batched, x, kind, particles),
                    "hand10": lambda: torch_step(*batched, x, kind, particles),
                },
                args.steps,
                device,
            )
            ours, hand, ours10, hand10 = t["ours"], t["hand"], t["ours10"], t["hand10"]
            label = kind if kind == "elbo" else f"iwae S={particles}"
            print(f"\n[{label}]")
            print(f"  single run:   pyro-vae {ours:7.3f} ms/step   hand-written torch {hand:7.3f} ms/step   ratio {ours / hand:5.2f}")
            print(f"  R=10 batched: pyro-vae {ours10:7.3f} ms/step   hand-written torch {hand10:7.3f} ms/step   ratio {ours10 / hand10:5.2f}")
            print(f"  per-restart step (R=10 batched / 10) vs hand-written single run: ratio {ours10 / 10 / hand:5.2f}")
            print(f"  throughput, 10 batched restarts vs 10 sequential runs: {10 * ours / ours10:5.2f}x")


if __name__ == "__main__":
    main()
