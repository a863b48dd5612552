"""Cost of the papers' sweeps: one full-protocol run by phase, and a data-version slice of 004 Table 2.

Prints (with the machine's load average beside every figure):

1. **Phases of one run** (figure8, data version 0, 10 restarts with 5 at the truth, 100 epochs,
   S = 5000): GT initialisation (decoder fit + φ_GT), training, validation, and each evaluation
   metric (importance-sampled log-likelihood, the exact log-likelihood by the per-point grid,
   the truth's log-likelihood, smooth kNN, I_q).
2. **The slice** (all 8 method settings of 004 Table 2 — VAE, IWAE S ∈ {3, 10, 20}, LIN on its
   2 × 2 grid — for ``--versions`` data versions): the per-run path (every run alone, its own
   GT initialisation and true log-likelihood, validation every epoch) against the sweep's path
   (runs grouped over data versions, shared artefacts, validation every 10 epochs), in the same
   process, as a ratio; then the sweep's path with ``--slice-workers`` workers (the wall time
   a user sees). ``--skip-per-run`` times only that. Both paths use this tree's
   evaluation code.
3. **Steps**: the per-restart ELBO step in groups of 10, 50 and 100 restarts against a
   hand-written single-run PyTorch step, the cost of one more restart (the limit batching alone
   tends to), and the FLOP floor: the slice's training FLOPs over the rate that
   torch's batched matmul reaches on these shapes in the same run.
4. **LIN's grid in one group** (``--lin-grid``): LIN's 2 × 2 grid of (T, R) over ``--versions``
   data versions trained as one group per grid point (as before T and R could differ inside a
   group) against one group for the whole grid, training and evaluation, in the same process.
5. **The exact log-likelihood** (``--exact``): a trained-size decoder (3 × 50 leaky ReLU) with
   K = 1 and K = 2 on 2 000 test points in 5-D, by the previous refinement (every x on every
   grid, densities term by term) against the current one (per-x refinement, nested grids,
   blocked matrix products), with the largest difference between the two.

Usage: ``python bench/sweep_cost.py [--epochs 100] [--restarts 10] [--versions 1] [--skip-slice] [--skip-per-run] [--slice-workers 2] [--lin-grid] [--exact]``.
Run with one torch thread per process (set here) on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
import time

import torch

from guides.mean_field import MeanFieldGuide
from pyro_vae.datasets import get_dataset
from pyro_vae.inference import VariationalObjective, validation_objective
from pyro_vae.metrics import importance_log_likelihood, mutual_info_gaussian_encoder, smooth_knn_test, true_log_likelihood
from pyro_vae.metrics.decomposition import decompose_elbo
from pyro_vae.models import build_vae_model, unregistered
from pyro_vae.nets import MLP, select_restart
from pyro_vae.pipeline import KNN_REPEATS, RunConfig, sample_model, train_and_evaluate
from pyro_vae.reproduce.sweep import prebuild_artefacts, run_sweep
from pyro_vae.truth_init import ground_truth_init


def load() -> str:
    return "load %.2f %.2f %.2f" % os.getloadavg()


def timed(label: str, fn):
    start = time.perf_counter()
    out = fn()
    seconds = time.perf_counter() - start
    print(f"  {label:<44s} {seconds:8.2f} s   ({load()})", flush=True)
    return out, seconds


def slice_configs(args, val_every: int) -> list[RunConfig]:
    common = dict(dataset="figure8", restarts=args.restarts, init="mixed", epochs=args.epochs,
                  eval_samples=args.eval_samples, val_every=val_every)
    out = []
    for v in range(args.versions):
        out.append(RunConfig(**common, method="vae", data_seed=v))
        out += [RunConfig(**common, method="iwae", particles=s, data_seed=v) for s in (3, 10, 20)]
        out += [RunConfig(**common, method="lin", options={"threshold": t, "window": w}, data_seed=v)
                for t in (0.05, 0.1) for w in (5, 10)]
    return out


def phases(args) -> None:
    print(f"1. phases of one run (figure8 v0, R={args.restarts}, {args.epochs} epochs, S={args.eval_samples})")
    cfg = RunConfig("figure8", restarts=args.restarts, init="mixed", epochs=args.epochs, eval_samples=args.eval_samples)
    dataset = cfg.validate()
    splits = dataset.splits(0)
    timed("GT initialisation (decoder fit + phi_GT)", lambda: ground_truth_init(cfg, dataset, splits.train.x, splits.val.x))
    torch.manual_seed(0)
    model = build_vae_model(1, 2, dataset.obs_noise_var(), num_restarts=args.restarts)
    guide = MeanFieldGuide(2, 1, num_restarts=args.restarts)
    from pyro_vae.inference import train

    result, _ = timed("training, ELBO (validation every epoch)",
                      lambda: train(model, guide, splits.train.x, splits.val.x, epochs=args.epochs, progress=False))
    with unregistered():
        _, one = timed("  of which one validation pass (x epochs)", lambda: validation_objective(model, guide, splits.val.x))
    print(f"  validation share of training: {one * args.epochs / result.seconds:.0%}")
    m, g = select_restart(model, result.best_restart), select_restart(guide, result.best_restart)
    x = splits.test.x
    truth, _ = timed("true log-likelihood (quadrature)", lambda: true_log_likelihood(dataset, x))
    est, _ = timed(f"IS log-likelihood (S={args.eval_samples})",
                   lambda: importance_log_likelihood(m, g, x, num_samples=args.eval_samples))
    timed("ELBO split + exact log-lik (per-point grid)",
          lambda: decompose_elbo(m, g, x, dataset, num_samples=args.eval_samples, true_log_lik=truth, importance=est))
    gen = sample_model(m, 100 * KNN_REPEATS)
    timed(f"smooth kNN ({KNN_REPEATS} x 100 vs 100)", lambda: smooth_knn_test(gen, x, n=100, repeats=KNN_REPEATS))
    q = g.distribution(x)
    timed("I_q(x; z_i)", lambda: mutual_info_gaussian_encoder(q.loc.detach(), q.scale.detach()))


def the_slice(args) -> None:
    print(f"2. figure8 slice of 004 Table 2: 8 settings x {args.versions} version(s), R={args.restarts}, "
          f"{args.epochs} epochs, S={args.eval_samples}")
    with tempfile.TemporaryDirectory() as root:
        def per_run():
            for i, cfg in enumerate(slice_configs(args, val_every=1)):
                train_and_evaluate(cfg, os.path.join(root, f"alone-{i}"), progress=False)

        def sweep(workers):
            return lambda: run_sweep(slice_configs(args, val_every=10), os.path.join(root, f"sweep-{workers}"),
                                     progress=False, workers=workers)

        old = new = None
        if not args.skip_per_run:
            _, old = timed("per-run path (alone, nothing shared)", per_run)
            _, new = timed("sweep path (grouped, shared artefacts), 1 worker", sweep(1))
        if args.slice_workers > 1 or args.skip_per_run:
            timed(f"sweep path, {args.slice_workers} workers (1 thread each; target <= 8 min)", sweep(args.slice_workers))
    if old is not None:
        print(f"  ratio per-run / sweep: {old / new:.2f}x")


def steps(args) -> None:
    print("3. steps and the compute floor (minibatch 100, 3 x 50 leaky-ReLU, K=1, D=2)")
    x = get_dataset("figure8").sample(100, seed=0)[0]

    def hand_written(model, guide, opt):
        q = guide.distribution(x)
        z = q.rsample()
        log_w = model.log_likelihood(x, z) + torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1) - q.log_prob(z).sum(-1)
        opt.zero_grad(set_to_none=True)
        (-log_w.sum()).backward()
        opt.step()

    def ours(model, guide, opt, particles=1, kind="elbo"):
        loss = VariationalObjective(kind, particles).differentiable_loss(model, guide, x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def pair(r):
        torch.manual_seed(0)
        model, guide = build_vae_model(1, 2, 0.02, num_restarts=r), MeanFieldGuide(2, 1, num_restarts=r)
        return model, guide, torch.optim.Adam(list(model.parameters()) + list(guide.parameters()), lr=1e-3)

    def ms(fn, n=100):
        for _ in range(10):
            fn()
        best = float("inf")
        for _ in range(3):
            start = time.perf_counter()
            for _ in range(n):
                fn()
            best = min(best, (time.perf_counter() - start) / n * 1e3)
        return best

    with unregistered():
        single = pair(None)
        base = ms(lambda: hand_written(*single))
        figures = {r: ms(lambda: ours(*pair_r), max(5, 300 // r)) / r for r, pair_r in ((10, pair(10)), (50, pair(50)), (100, pair(100)))}
        iwae = ms(lambda p=pair(10): ours(*p, particles=20, kind="iwae"), 10)
    print(f"  hand-written single-run ELBO step      {base:7.3f} ms   ({load()})")
    for r, per in figures.items():
        print(f"  ours, per restart in a group of {r:<3d}     {per:7.3f} ms   = {per / base:.2f}x hand-written")
    # the cost of one more restart (the slope from R = 50 to 100): what batching alone tends to as R grows
    marginal = (figures[100] * 100 - figures[50] * 50) / 50
    print(f"  one more restart (R = 50 -> 100)       {marginal:7.3f} ms   = {marginal / base:.2f}x hand-written "
          f"(the limit of batching alone)")
    # FLOPs: forward 2·Σ in·out per point and network, backward ≈ 2× forward
    enc = 2 * (2 * 50 + 50 * 50 + 50 * 50 + 50 * 2)
    dec = 2 * (1 * 50 + 50 * 50 + 50 * 50 + 50 * 2)
    elbo_step = 3 * (enc + dec) * 100 * 10
    iwae_step = 3 * (enc + (dec * 20)) * 100 * 10  # the encoder runs once, the decoder per particle
    a, b = torch.randn(10, 2000, 50), torch.randn(10, 50, 50)
    rate = 2 * 10 * 2000 * 50 * 50 / (ms(lambda: torch.bmm(a, b), 200) / 1e3)
    print(f"  batched matmul rate on (10, 2000, 50) x (10, 50, 50): {rate / 1e9:.1f} GFLOP/s on one thread")
    print(f"  an R=10 step: ELBO {elbo_step / 1e6:.0f} MFLOP, IWAE-20 {iwae_step / 1e6:.0f} MFLOP; "
          f"IWAE-20 step at {iwae_step / (iwae * 1e-3) / 1e9:.1f} GFLOP/s")
    steps_per_run = 50 * args.epochs
    per_version = steps_per_run * (elbo_step * 5 + 3 * (enc + dec * 3) * 1000 + 3 * (enc + dec * 10) * 1000 + iwae_step)
    print(f"  slice per data version: {per_version / 1e12:.2f} TFLOP of training (LIN counted as VAE steps) "
          f"-> floor {per_version / rate / 60:.1f} min on one core at that rate")


def lin_grid(args) -> None:
    grid = [(t, w) for t in (0.05, 0.1) for w in (5, 10)]
    print(f"4. LIN's (T, R) grid on figure8: {len(grid)} points x {args.versions} version(s), R={args.restarts}, "
          f"{args.epochs} epochs, S={args.eval_samples}")
    configs = [RunConfig("figure8", method="lin", options={"threshold": t, "window": w}, data_seed=v,
                         restarts=args.restarts, init="mixed", epochs=args.epochs, eval_samples=args.eval_samples,
                         val_every=10) for t, w in grid for v in range(args.versions)]
    with tempfile.TemporaryDirectory() as root:
        for name in ("points", "grid"):  # the shared artefacts are built first, untimed, in both stores
            prebuild_artefacts(configs, os.path.join(root, name), progress=False)

        def per_point():
            for t, w in grid:
                point = [c for c in configs if c.options == {"threshold": t, "window": w}]
                run_sweep(point, os.path.join(root, "points"), progress=False)

        _, old = timed("one group per grid point", per_point)
        _, new = timed("one group for the grid", lambda: run_sweep(configs, os.path.join(root, "grid"), progress=False))
    print(f"  ratio per point / whole grid: {old / new:.2f}x")


def _previous_quadrature(f, noise_var: float, x: torch.Tensor, k: int, rtol: float = 1e-3) -> torch.Tensor:
    """The refinement before per-x stopping: all x on each grid (201/1001 points per axis, doubled up to
    801/64001), ``(x − f(z))²`` term by term in blocks of 2^24 numbers, until every x moved by ≤ rtol."""
    from pyro_vae.posterior.quadrature import latent_grid

    (points, top), previous = ((1001, 64001) if k == 1 else (201, 801)), None
    x = x.double()
    const = -0.5 * x.shape[1] * math.log(2 * math.pi * noise_var)
    while True:
        grid, log_w = latent_grid(k, points, "normal", dtype=torch.float64)
        loc = f(grid.float()).double()
        cols = max(1, 2**24 // loc.shape[1])
        rows = max(1, 2**24 // (cols * loc.shape[1]))
        out = []
        for chunk in torch.split(x, rows):
            acc = torch.full((chunk.shape[0],), -math.inf, dtype=torch.float64)
            for start in range(0, loc.shape[0], cols):
                sl = slice(start, start + cols)
                ll = const - 0.5 * ((chunk[:, None, :] - loc[None, sl]) ** 2 / noise_var).sum(-1)
                acc = torch.logaddexp(acc, torch.logsumexp(ll + log_w[sl], -1))
            out.append(acc)
        current = torch.cat(out)
        if previous is not None and float((current - previous).abs().max()) <= rtol or 2 * points - 1 > top:
            return current
        previous, points = current, 2 * points - 1


def exact_loglik(args) -> None:
    from pyro_vae.posterior.quadrature import log_marginal_quadrature

    print("5. exact log-likelihood: 3x50 leaky-ReLU decoder, 2000 test points in 5-D, sigma^2 = 0.01")
    for k in (1, 2):
        torch.manual_seed(k)
        f = MLP(k, 5).requires_grad_(False)  # the papers' 3 x 50 leaky-ReLU decoder
        x = f(torch.randn(2000, k)) + 0.1 * torch.randn(2000, 5)
        old, t_old = timed(f"K={k} previous refinement (all x, term by term)", lambda: _previous_quadrature(f, 0.01, x, k))
        new, t_new = timed(f"K={k} per-x refinement (nested, blocked)",
                           lambda: log_marginal_quadrature(f, 0.01, x, k).log_marginal)
        print(f"  K={k}: ratio {t_old / t_new:.1f}x, max |difference| {float((old - new).abs().max()):.2g} nats")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--restarts", type=int, default=10)
    parser.add_argument("--versions", type=int, default=1)
    parser.add_argument("--eval-samples", type=int, default=5000)
    parser.add_argument("--skip-phases", action="store_true")
    parser.add_argument("--skip-slice", action="store_true")
    parser.add_argument("--skip-steps", action="store_true")
    parser.add_argument("--skip-per-run", action="store_true", help="time the slice's sweep path only")
    parser.add_argument("--slice-workers", type=int, default=2, help="also time the slice's sweep with this many workers")
    parser.add_argument("--lin-grid", action="store_true", help="also time LIN's grid grouped per point vs whole")
    parser.add_argument("--exact", action="store_true", help="also time the exact log-likelihood, previous vs current")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, 1 thread, {load()}")
    if not args.skip_steps:
        steps(args)
    if not args.skip_phases:
        phases(args)
    if not args.skip_slice:
        the_slice(args)
    if args.lin_grid:
        lin_grid(args)
    if args.exact:
        exact_loglik(args)


if __name__ == "__main__":
    main()
