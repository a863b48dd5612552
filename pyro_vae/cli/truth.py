"""``pyro-vae posterior`` and ``pyro-vae decompose``: the ground truth beside what was learned."""

from __future__ import annotations

import argparse
import sys

import torch

from pyro_vae.cli.common import add_command, flags_of, parse_numbers, positive_int, nonneg_int, seed_int
from pyro_vae.io import atomic_write_bytes


def parse_point(text: str, obs_dim: int) -> list[float]:
    """``"0.1,-0.2"`` → ``[0.1, -0.2]``, checked against the data set's dimension."""
    return parse_numbers(text, "--x", obs_dim)


def _fmt(values) -> str:
    return "[" + ", ".join(f"{v:.4g}" for v in values) + "]"


def _diagnostics_line(p: dict, thresholds: dict) -> str:
    from pyro_vae.posterior.nuts import format_against

    rhat = format_against(p["r_hat"], thresholds["max_rhat"])
    ess = format_against(p["ess_bulk"], thresholds["min_ess_bulk"])
    rel = lambda ok: "≤" if ok else ">"  # noqa: E731
    return (f"R-hat {rhat} {rel(p['r_hat'] <= thresholds['max_rhat'])} {thresholds['max_rhat']:g}, "
            f"bulk ESS {ess} {'≥' if p['ess_bulk'] >= thresholds['min_ess_bulk'] else '<'} "
            f"{thresholds['min_ess_bulk']:g}, {p['divergences']} divergence(s)")


def cmd_posterior(args: argparse.Namespace) -> int:
    from pyro_vae import checks
    from pyro_vae.cli.data import dataset_from_args
    from pyro_vae.posterior.grid import grid_posterior

    if args.plot is not None:
        checks.output_file("--plot", args.plot, (".png",))
    if not args.x:
        raise ValueError("--x: give at least one observation, e.g. --x 0.0,0.0")
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
        dataset = dataset_from_args(args.dataset, None)
    if getattr(dataset, "label_dim", None):
        raise ValueError(f"dataset {args.dataset!r} has labels: p(z | x) needs y as well; expected an unlabelled data set")
    if args.method == "quadrature" and dataset.latent_dim > 2:
        raise ValueError(f"--method quadrature: {args.dataset!r} has latent_dim {dataset.latent_dim}; allowed up to 2")
    typed = [t.strip() for t in args.x]
    values = [parse_point(t, dataset.obs_dim) for t in typed]
    x = torch.tensor(values)

    points, nuts = [], []
    grid = grid_posterior(dataset, x) if (args.method == "quadrature" or args.plot) and dataset.latent_dim <= 2 else None
    if args.method == "nuts":
        from pyro_vae.posterior.nuts import nuts_posteriors

        nuts = nuts_posteriors(
            dataset, x, seed=args.seed, num_chains=args.chains, num_warmup=args.warmup, num_samples=args.samples
        )
    q = guide.distribution(x) if guide is not None else None
    for i, row in enumerate(values):
        if args.method == "nuts":
            res, draws = nuts[i], nuts[i].flat()
            d = res.diagnostics
            point = {
                "x": row, "mean": draws.mean(0).tolist(), "sd": draws.std(0).tolist(),
                "r_hat": max(d["r_hat"]), "ess_bulk": min(d["ess_bulk"]), "divergences": d["divergences"],
                "ok": res.ok, "reasons": list(res.reasons),
            }
        else:
            point = {
                "x": row, "mean": grid.mean[i].tolist(), "sd": grid.sd[i].tolist(),
                "r_hat": None, "ess_bulk": None, "ok": bool(grid.converged[i]),
                "log_marginal": float(grid.log_marginal[i]),
            }
            if not point["ok"]:
                point["reasons"] = ["the grid did not converge"]
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
    failed = [t for t, p in zip(typed, points) if not p["ok"]]
    if args.json:
        from pyro_vae.io import dumps_json

        print(dumps_json(summary, nonfinite="null"), end="")
    else:
        for text, p in zip(typed, points):
            how = _diagnostics_line(p, nuts[0].diagnostics["thresholds"]) if p["r_hat"] is not None else "grid"
            body = f"mean {_fmt(p['mean'])}, sd {_fmt(p['sd'])} ({how})"
            if p["ok"]:
                print(f"x={text}: {body} ok")
            else:
                print(f"!!! FAILED REFERENCE x={text}: {'; '.join(p['reasons'])} -- not usable as ground truth")
                print(f"    x={text}: {body}")
        if args.plot:
            print(f"wrote {args.plot}" + (" (failed references hatched)" if failed else ""))
    if failed:
        hint = ("more --warmup/--samples, or --method quadrature (K ≤ 2)" if args.method == "nuts"
                else "a larger grid is not available from the command line")
        print(f"pyro-vae posterior: warning: {len(failed)} of {len(points)} reference posterior(s) FAILED their "
              f"diagnostics (x={'; x='.join(failed)}); try {hint}", file=sys.stderr)
    return 0


def _posterior_png(dataset, x, grid, nuts, guide) -> bytes:
    """One panel per x: the true posterior (grid density and/or NUTS draws) and the guide's q."""
    from pyro_vae.plots import figure_png_bytes, posterior_panel

    method = "nuts" if nuts else "quadrature"
    fig = posterior_panel(dataset, x, guide=guide, method=method, grid=grid, nuts=nuts or None)
    return figure_png_bytes(fig)


def cmd_decompose(args: argparse.Namespace) -> int:
    """−ELBO = entropy + MLEO + PMO for the truth with its best guide (φ_GT) or for a run."""
    from pyro_vae.cli.data import dataset_from_args
    from pyro_vae.io import dumps_json
    from pyro_vae.metrics.decomposition import decompose_elbo

    if args.run:
        from pyro_vae.pipeline import load_trained

        config, dataset, model, guide, _ = load_trained(args.run)
        if config.dataset != args.dataset:
            raise ValueError(f"--run {args.run!r} was trained on {config.dataset!r}, not {args.dataset!r}")
        x = dataset.splits(config.data_seed).test.x
        parts = decompose_elbo(model, guide, x, dataset, seed=args.seed)
        how = f"run {args.run}"
    else:
        dataset = dataset_from_args(args.dataset, None)
        if getattr(dataset, "label_dim", None):
            raise ValueError(f"dataset {args.dataset!r} has labels: the split of −ELBO is for unsupervised sets")
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
    p = add_command(sub, "posterior", "true posteriors p(z|x) by NUTS or quadrature (and a run's q)")
    p.add_argument("dataset", help="an unsupervised data set (see `pyro-vae datasets`)")
    p.add_argument("--x", action="append", metavar="X1,...,XD",
                   help="an observation, e.g. 0.0,0.0 or -0.5,0.3 (repeatable)")
    p.add_argument("--run", help="a run folder whose guide q(z|x) is compared with the truth")
    p.add_argument("--method", default="nuts", choices=("nuts", "quadrature"),
                   help="nuts, or quadrature on an adaptive grid (latent_dim ≤ 2)")
    p.add_argument("--chains", type=positive_int, default=4, help="NUTS chains from dispersed starting points")
    p.add_argument("--warmup", type=nonneg_int, default=1000, help="NUTS warm-up steps per chain")
    p.add_argument("--samples", type=positive_int, default=1000, help="NUTS draws kept per chain")
    p.add_argument("--seed", type=seed_int, default=0, help="seed of the chains")
    p.add_argument("--plot", help="write the panels to FILE.png (failed references hatched)")
    p.add_argument("--json", action="store_true", help="print JSON (with ok and reasons per point)")
    p.set_defaults(func=cmd_posterior, flag_names=flags_of(p))

    p = add_command(sub, "decompose", "split −ELBO into data entropy, MLEO and PMO (Eq. 2 of 000)")
    p.add_argument("dataset", help="a data set (see `pyro-vae datasets`)")
    p.add_argument("--run", help="a run folder; default: the ground truth with its best guide")
    p.add_argument("--data-seed", type=seed_int, default=0, help="data version whose test split is used")
    p.add_argument("--restarts", type=positive_int, default=3, help="φ_GT restarts (004 uses 10)")
    p.add_argument("--epochs", type=positive_int, default=100, help="φ_GT training epochs")
    p.add_argument("--seed", type=seed_int, default=0, help="random seed")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_decompose, flag_names=flags_of(p))
