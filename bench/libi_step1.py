"""What drives LiBI's step 1 (000 Eq. 44) at the paper's full-batch protocol, and what fixes it.

Two modes, both on LinearJTE or CubicJTE (000 App. E: 500 training points, the parametric
decoder θ = A, seed-0 data):

``trace``
    For each regime (code network: the CLI's default 3 × 50 leaky-ReLU or a linear one as in
    000 App. E; full batch 500 or minibatches of 100; lr 0.01 or 1e-3; each remedy), prints the
    terms of Eq. 44 over the first steps of restart 0 of 2: the likelihood term, log₁₀ of
    ``ε_HZ·exp(HZ)``, the exponents ``HZ``, ``‖Σ − I‖²/ε_Σ``, ``‖μ‖²/ε_μ``, the gradient norm
    (before clipping), the size of the code network's update ``‖Δϕ‖``, and the closed-form MLEO
    ``KL(p_data ‖ p_θ)`` (LinearJTE).
``run``
    Step 1 alone for ``--epochs`` epochs for the regimes named by ``--regimes``; prints each
    restart's final terms and MLEO (closed form for LinearJTE; for CubicJTE the mean of
    log p_data − log p_θ on the 500 test points, both by
    :func:`~pyro_vae.metrics.cholesky_quadrature.family_log_marginal`) and the largest loss after the warm-up
    relative to the first.

Usage: ``python bench/libi_step1.py trace [--steps 8] [--every 1]`` or
``python bench/libi_step1.py run --dataset cubic_jte --epochs 2000 --regimes paper,clip``.
Single-threaded; prefix with ``nice``.
"""

from __future__ import annotations

import argparse
import math
import time

import torch

from guides.mean_field import MeanFieldGuide
from pyro_vae.datasets import get_dataset
from pyro_vae.inference.libi import code_network_for, fit_likelihood
from pyro_vae.inference.libi_stability import initialise_codes
from pyro_vae.metrics.linear_gaussian import linear_gaussian_params, mleo
from pyro_vae.metrics.cholesky_quadrature import family_log_marginal
from pyro_vae.models import VAEModel
from pyro_vae.nets import select_restart

#: name -> (code network hidden widths, batch size, lr, code_init, clip_norm)
REGIMES = {
    "paper": ((50, 50, 50), 500, 1e-2, "none", None),  # the command: CLI default h, full batch
    "minibatch": ((50, 50, 50), 100, 1e-2, "none", None),
    "lr1e-3": ((50, 50, 50), 500, 1e-3, "none", None),
    "linear": ((), 500, 1e-2, "none", None),  # 000 App. E's linear encoder
    "whiten": ((50, 50, 50), 500, 1e-2, "whiten", None),
    "clip": ((50, 50, 50), 500, 1e-2, "none", 1.0),
    "gaussian": ((50, 50, 50), 500, 1e-2, "gaussian", None),
    "gaussian+clip": ((50, 50, 50), 500, 1e-2, "gaussian", 1.0),
    "linear+clip": ((), 500, 1e-2, "none", 1.0),
    "whiten+clip": ((50, 50, 50), 500, 1e-2, "whiten", 1.0),
    "clip10": ((50, 50, 50), 500, 1e-2, "none", 10.0),
    "gaussian+clip10": ((50, 50, 50), 500, 1e-2, "gaussian", 10.0),
}


def setup(dataset: str, hidden, restarts: int = 2, seed: int = 0):
    ds = get_dataset(dataset)
    torch.manual_seed(seed)
    model = VAEModel(ds.decoder_family(restarts), 2, 2, ds.obs_noise_var(), num_restarts=restarts)
    guide = MeanFieldGuide(2, 2, hidden, num_restarts=restarts)
    torch.manual_seed(seed)
    return ds, model, code_network_for(guide, 2, 2, restarts)


def model_kl(ds, model, x_test: torch.Tensor) -> list[float]:
    """MLEO per restart: closed form (linear) or mean log p_data − log p_θ on x_test (quadrature)."""
    truth = ds.marginal()
    out = []
    for r in range(model.num_restarts):
        m = select_restart(model, r)
        if truth is not None:
            out.append(float(mleo(linear_gaussian_params(m), truth.loc, truth.covariance_matrix)))
        else:
            log_p = family_log_marginal(m, x_test).log_marginal
            out.append(float((family_log_marginal(ds, x_test).log_marginal - log_p).mean()))
    return out


def trace(args) -> None:
    ds = get_dataset(args.dataset)
    x = ds.splits(0).train.x
    print(f"{args.dataset}, restart 0 of 2, eps_HZ=1, eps_Sigma=eps_mu=0.5; log10 HZ-term = log10(eps_HZ exp HZ)")
    header = f"{'regime':>14s} {'step':>5s} {'nll':>9s} {'lg HZterm':>9s} {'HZ':>7s} {'Sig.exp':>8s} {'mu.exp':>7s} " \
             f"{'|grad|':>9s} {'|dphi|':>9s} {'MLEO':>7s}"
    for name in args.regimes.split(","):
        hidden, batch, lr, init, clip = REGIMES[name]
        _, model, h = setup(args.dataset, hidden)
        initialise_codes(h, x, 2, init)
        print(header)
        prev = {"phi": torch.cat([p.detach().reshape(2, -1) for p in h.parameters()], 1).clone()}

        def on_step(step, terms, norms):
            phi = torch.cat([p.detach().reshape(2, -1) for p in h.parameters()], 1)
            dphi = float((phi[0] - prev["phi"][0]).norm())
            prev["phi"] = phi.clone()
            if step <= args.steps or step % args.every == 0:
                kl = model_kl(ds, model, None)[0] if ds.marginal() is not None else float("nan")
                terms = type(terms)(*(v.detach() for v in terms))
                print(f"{name:>14s} {step:5d} {float(terms.nll[0]):9.3g} {math.log10(float(terms.hz[0])):9.2f} "
                      f"{float(terms.hz_stat[0]):7.3g} {float(terms.sigma_exponent[0]):8.3g} "
                      f"{float(terms.mu_exponent[0]):7.3g} {float(norms[0]):9.3g} {dphi:9.3g} {kl:7.3g}")

        epochs = -(-args.last * batch // 500)
        fit_likelihood(model, h, x, x[:100], epochs=epochs, batch_size=batch, lr=lr, clip_norm=clip, on_step=on_step)


def run(args) -> None:
    ds = get_dataset(args.dataset)
    splits = ds.splits(0)
    x = splits.train.x
    for name in args.regimes.split(","):
        hidden, batch, lr, init, clip = REGIMES[name]
        for seed in range(args.seeds):
            _, model, h = setup(args.dataset, hidden, seed=seed)
            initialise_codes(h, x, 2, init)
            losses: list[float] = []
            start = time.process_time()
            fit_likelihood(model, h, x, x[:100], epochs=args.epochs, batch_size=batch, lr=lr, clip_norm=clip,
                           seed=seed, on_step=lambda s, t, n: losses.append(float(t.total.detach().max())))
            cpu = time.process_time() - start
            from pyro_vae.inference.libi import step1_terms

            with torch.no_grad():
                t = step1_terms(model, h, x)
            warm = max(losses[args.warmup:], default=float("nan"))
            print(f"{name:>14s} seed {seed} epochs {args.epochs}: nll {[round(v, 3) for v in t.nll.tolist()]} "
                  f"HZ {[round(v, 3) for v in t.hz_stat.tolist()]} Sig.exp {[round(v, 3) for v in t.sigma_exponent.tolist()]} "
                  f"max loss after {args.warmup} steps / first {warm / losses[0]:.3g} "
                  f"MLEO {[round(v, 4) for v in model_kl(ds, model, splits.test.x)]} ({cpu:.0f} s CPU)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("trace", "run"))
    parser.add_argument("--dataset", default="linear_jte", choices=("linear_jte", "cubic_jte"))
    parser.add_argument("--regimes", default="paper,minibatch,lr1e-3,linear,whiten,clip,gaussian")
    parser.add_argument("--steps", type=int, default=5, help="trace: every one of the first STEPS steps")
    parser.add_argument("--every", type=int, default=50, help="trace: then every EVERY-th step")
    parser.add_argument("--last", type=int, default=200, help="trace: up to about this step")
    parser.add_argument("--epochs", type=int, default=2000)
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=200)
    args = parser.parse_args()
    torch.set_num_threads(1)
    (trace if args.mode == "trace" else run)(args)


if __name__ == "__main__":
    main()
