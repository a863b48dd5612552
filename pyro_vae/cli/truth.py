"""``pyro-vae posterior`` and ``pyro-vae decompose``: the ground truth beside what was learned."""

from __future__ import annotations

import argparse
import math

import torch

from pyro_vae.io import atomic_write_bytes


def parse_point(text: str, obs_dim: int) -> list[float]:
    """``"0.1,-0.2"`` → ``[0.1, -0.2]``, checked against the data set's dimension."""
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise ValueError(f"--x {text!r}: expected {obs_dim} comma-separated numbers") from None
    if len(values) != obs_dim or not all(math.isfinite(v) for v in values):
        raise ValueError(f"--x {text!r}: expected {obs_dim} comma-separated finite numbers")
    return values


def _check_plot_path(path: str | None) -> None:
    if path is not None and not path.lower().endswith(".png"):
        raise ValueError(f"--plot {path!r}: expected a file ending in .png")


def cmd_posterior(args: argparse.Namespace) -> int:
    from pyro_vae.datasets import get_dataset
    from pyro_vae.posterior.grid import grid_posterior

    if args.method not in ("nuts", "quadrature"):
        raise ValueError(f"--method {args.method!r}: expected 'nuts' or 'quadrature'")
    for name in ("chains", "warmup", "samples"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name} {getattr(args, name)}: expected a positive integer")
    _check_plot_path(args.plot)
    guide = None
    if args.run:
        from pyro_vae.pipeline import load_trained

        config, dataset, _, guide, _ = load_trained(args.run)
        if not hasattr(guide, "distribution"):
            raise ValueError(f"--run {args.run!r}: its guide ({config.guide}) has no Gaussian q(z|x) to compare; "
                             "the comparison needs a mean-field guide")
        if config.dataset != args.dataset:
            raise ValueError(f"--run {args.run!r} was trained on {config.dataset!r}, not {args.dataset!r}")
    else:
        dataset = get_dataset(args.dataset)
    if args.method == "quadrature" and dataset.latent_dim > 2:
        raise ValueError(f"--method quadrature: {args.dataset!r} has latent_dim {dataset.latent_dim}; allowed up to 2")
    if not args.x:
        raise ValueError("--x: give at least one observation, e.g. --x 0.0,0.0")
    x = torch.tensor([parse_point(t, dataset.obs_dim) for t in args.x])

    points, nuts = [], []
    grid = grid_posterior(dataset, x) if (args.method == "quadrature" or args.plot) and dataset.latent_dim <= 2 else None
    if args.method == "nuts":
        from pyro_vae.posterior.nuts import nuts_posteriors

        nuts = nuts_posteriors(
            dataset, x, seed=args.seed, num_chains=args.chains, num_warmup=args.warmup, num_samples=args.samples
        )
    q = guide.distribution(x) if guide is not None else None
    for i, row in enumerate(x):
        if args.method == "nuts":
            res, draws = nuts[i], nuts[i].flat()
            d = res.diagnostics
            point = {
                "x": row.tolist(), "mean": draws.mean(0).tolist(), "sd": draws.std(0).tolist(),
                "r_hat": max(d["r_hat"]), "ess_bulk": min(d["ess_bulk"]), "divergences": d["divergences"],
                "ok": res.ok, "reasons": list(res.reasons),
            }
        else:
            point = {
                "x": row.tolist(), "mean": grid.mean[i].tolist(), "sd": grid.sd[i].tolist(),
                "r_hat": None, "ess_bulk": None, "ok": bool(grid.converged[i]),
                "log_marginal": float(grid.log_marginal[i]),
            }
        if q is not None:
            point["guide_mean"] = q.loc[i].tolist()
            point["guide_sd"] = q.scale[i].tolist()
        points.append(point)
    if grid is not None and q is not None:
        from pyro_vae.posterior.compare import grid_kl

        kl = grid_kl(dataset, q, grid, x)
        for point, a, b in zip(points, kl.kl_qp.tolist(), kl.kl_pq.tolist()):
            point["kl_q_p"], point["kl_p_q"] = a, b
    if args.plot:
        atomic_write_bytes(args.plot, _posterior_png(dataset, x, grid, nuts, guide))
    summary = {"method": args.method, "dataset": args.dataset, "points": points}
    if args.json:
        from pyro_vae.io import dumps_json

        print(dumps_json(summary, nonfinite="null"))
    else:
        for p in points:
            diag = f"R-hat {p['r_hat']:.3f}, ESS {p['ess_bulk']:.0f}" if p["r_hat"] is not None else "grid"
            flag = "ok" if p["ok"] else "NOT OK: " + "; ".join(p.get("reasons", ["grid did not converge"]))
            print(f"x={p['x']}: mean {p['mean']}, sd {p['sd']} ({diag}) {flag}")
        if args.plot:
            print(f"wrote {args.plot}")
    return 0


def _posterior_png(dataset, x, grid, nuts, guide) -> bytes:
    """One panel per x: the true posterior (grid density and/or NUTS draws) and the guide's q."""
    from pyro_vae.plots import figure_png_bytes, posterior_panel

    method = "nuts" if nuts else "quadrature"
    fig = posterior_panel(dataset, x, guide=guide, method=method, grid=grid, nuts=nuts or None)
    return figure_png_bytes(fig)


def cmd_decompose(args: argparse.Namespace) -> int:
    """−ELBO = entropy + MLEO + PMO for the truth with its best guide (φ_GT) or for a run."""
    from pyro_vae.datasets import get_dataset
    from pyro_vae.io import dumps_json
    from pyro_vae.metrics.decomposition import decompose_elbo

    if args.run:
        from pyro_vae.pipeline import load_trained

        config, dataset, model, guide, _ = load_trained(args.run)
        x = dataset.splits(config.data_seed).test.x
        parts = decompose_elbo(model, guide, x, dataset, seed=args.seed)
        how = f"run {args.run}"
    else:
        dataset = get_dataset(args.dataset)
        x = dataset.splits(args.data_seed).test.x
        if dataset.marginal() is not None:
            from pyro_vae.metrics import linear_gaussian as lg

            params = lg.linear_gaussian_params(dataset)
            entropy = -float(dataset.marginal().log_prob(x.double()).mean())
            pmo = float(lg.optimal_pmo(params))
            out = {"elbo": -entropy - pmo, "mleo": 0.0, "pmo": pmo, "data_entropy": entropy,
                   "how": "closed form (000 App. C): ground truth with the optimal mean-field guide"}
            print(dumps_json(out) if args.json else "\n".join(f"{k:>13s}: {v}" for k, v in out.items()))
            return 0
        from pyro_vae.inference.fixed_model import gt_initialise

        gt = gt_initialise(dataset, args.restarts, data_seed=args.data_seed, epochs=args.epochs, seed=args.seed)
        parts = decompose_elbo(dataset, gt.guide, x, dataset, seed=args.seed)
        how = f"ground truth with φ_GT ({args.restarts} restarts × {args.epochs} epochs)"
    out = {
        "elbo": parts.elbo, "mleo": parts.mleo, "pmo": parts.pmo, "data_entropy": parts.data_entropy,
        "elbo_se": parts.elbo_se, "mleo_se": parts.mleo_se, "pmo_se": parts.pmo_se,
        "log_p_model_method": parts.model_log_lik_method, "how": how,
    }
    print(dumps_json(out, nonfinite="null") if args.json else "\n".join(f"{k:>18s}: {v}" for k, v in out.items()))
    return 0


def add_parsers(sub) -> None:
    p = sub.add_parser("posterior", help="true posteriors p(z|x) by NUTS or quadrature (and a run's q)")
    p.add_argument("dataset")
    p.add_argument("--x", action="append", help="an observation, e.g. 0.0,0.0 (repeatable; write --x=-1,0 when it starts with a minus)")
    p.add_argument("--run", help="a run folder whose guide q(z|x) is compared with the truth")
    p.add_argument("--method", default="nuts", help="nuts or quadrature (latent_dim ≤ 2)")
    p.add_argument("--chains", type=int, default=4)
    p.add_argument("--warmup", type=int, default=1000)
    p.add_argument("--samples", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--plot", help="write the panels to FILE.png")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_posterior)

    p = sub.add_parser("decompose", help="split −ELBO into data entropy, MLEO and PMO (Eq. 2 of 000)")
    p.add_argument("dataset")
    p.add_argument("--run", help="a run folder; default: the ground truth with its best guide")
    p.add_argument("--data-seed", type=int, default=0)
    p.add_argument("--restarts", type=int, default=3, help="φ_GT restarts (004 uses 10)")
    p.add_argument("--epochs", type=int, default=100, help="φ_GT training epochs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_decompose)
