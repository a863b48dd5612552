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


def _print_tree(obj, indent: int = 0) -> None:
    """Every key and value of the summary, indented (the text twin of ``--json``)."""
    pad = "  " * indent
    for key, value in obj.items():
        if isinstance(value, dict):
            print(f"{pad}{key}:")
            _print_tree(value, indent + 1)
        elif isinstance(value, float):
            print(f"{pad}{key}: {value:.6g}")
        elif isinstance(value, list) and value and all(isinstance(v, float) for v in value):
            print(f"{pad}{key}: [{', '.join(f'{v:.6g}' for v in value)}]")
        else:
            print(f"{pad}{key}: {value}")


def _fmt(values) -> str:
    return "[" + ", ".join(f"{v:.4g}" for v in values) + "]"


def _how(block: dict) -> str:
    """``R-hat … ≤ 1.01, bulk ESS … ≥ 400, n divergence(s)`` for NUTS, ``grid`` for quadrature."""
    from pyro_vae.posterior.nuts import format_against

    t = block.get("thresholds")
    if block["r_hat"] is None and block["ess_bulk"] is None or not t:
        return "grid" if block["method"] == "quadrature" else "nuts"
    ess = format_against(block["ess_bulk"], t["min_ess_bulk"])
    ess_rel = "≥" if block["ess_bulk"] >= t["min_ess_bulk"] else "<"
    rhat = "R-hat undefined (one chain)" if block["r_hat"] is None else (
        f"R-hat {format_against(block['r_hat'], t['max_rhat'])} {'≤' if block['r_hat'] <= t['max_rhat'] else '>'} "
        f"{t['max_rhat']:g}")
    return f"{rhat}, bulk ESS {ess} {ess_rel} {t['min_ess_bulk']:g}, {block['divergences']} divergence(s)"


def _print_posterior(summary: dict, typed: list[str]) -> None:
    """One verdict line per x (failed references first and unmissable), then every value, labelled."""
    for text, point in zip(typed, summary["points"]):
        truth = point["truth"]
        body = f"true posterior mean {_fmt(truth['mean'])}, sd {_fmt(truth['sd'])} ({_how(truth)})"
        if point["ok"]:
            print(f"x={text}: {body} ok")
        else:
            print(f"!!! FAILED REFERENCE x={text}: {'; '.join(point['reasons'])} -- not usable as ground truth")
            print(f"    x={text}: {body}")
    print(f"data set: {summary['dataset']}   reference posteriors by {summary['method']}"
          + (f"   run: {summary['run']}" if summary.get("run") else ""))
    for text, point in zip(typed, summary["points"]):
        print(f"x={text}")
        _print_tree({k: v for k, v in point.items() if k not in ("x", "ok", "reasons")}, 1)
    if summary.get("wrote"):
        print(f"wrote {', '.join(summary['wrote'])}")


def cmd_posterior(args: argparse.Namespace) -> int:
    from pyro_vae import checks
    from pyro_vae.cli.data import dataset_from_args
    from pyro_vae.posterior.summary import comparison_idata, posterior_comparison

    if args.plot is not None:
        checks.output_file("--plot", args.plot, (".png",))
    if args.save_idata is not None:
        checks.output_file("--save-idata", args.save_idata, (".nc",))
    if not args.x:
        raise ValueError("--x: give at least one observation, e.g. --x 0.0,0.0")
    model = guide = config = None
    if args.run:
        from pyro_vae.pipeline import load_trained

        config, dataset, model, guide, _ = load_trained(args.run)
        if config.dataset != args.dataset:
            raise ValueError(f"--run {args.run!r} was trained on {config.dataset!r}, not {args.dataset!r}")
    else:
        dataset = dataset_from_args(args.dataset, None)
    if getattr(dataset, "label_dim", None):
        raise ValueError(f"dataset {args.dataset!r} has labels: p(z | x) needs y as well; expected an unlabelled data set")
    if args.method == "quadrature":
        for what, k in (("data set", dataset.latent_dim), ("run's model", getattr(model, "latent_dim", 0))):
            if k > 2:
                raise ValueError(f"--method quadrature: the {what} has latent_dim {k}; allowed up to 2 (use --method nuts)")
    typed = [t.strip() for t in args.x]
    values = [parse_point(t, dataset.obs_dim) for t in typed]
    x = torch.tensor(values)

    comparison = posterior_comparison(
        dataset, x, model=model, guide=guide, method=args.method, seed=args.seed, num_chains=args.chains,
        num_warmup=args.warmup, num_samples=args.samples,
        model_label=f"learned model: run {args.run}" if args.run else "learned model",
        guide_label=f"q(z|x): guide {config.guide}" if config is not None else "q(z|x)",
    )
    summary = {**comparison.summary, "run": args.run}
    for point, row in zip(summary["points"], values):
        point["x"] = row  # as typed, not float32 round-off
    roles = [role for role in ("truth", "model") if role in summary["points"][0]]
    failed = [f"x={t} ({role})" if len(roles) > 1 else f"x={t}" for t, p in zip(typed, summary["points"])
              for role in roles if not p[role]["ok"]]
    written = []
    if args.plot:
        atomic_write_bytes(args.plot, _posterior_png(dataset, x, model, guide, args.method, comparison))
        written.append(args.plot)
    if args.save_idata:
        _write_idata(args.save_idata, comparison_idata(comparison))
        written.append(args.save_idata)
    if written:
        summary["wrote"] = written
    if args.json:
        from pyro_vae.io import dumps_json

        print(dumps_json(summary, nonfinite="null"), end="")
    else:
        _print_posterior(summary, typed)
    if failed:
        hint = ("more --warmup/--samples, or --method quadrature (K ≤ 2)" if args.method == "nuts"
                else "a larger grid is not available from the command line")
        print(f"pyro-vae posterior: warning: {len(failed)} of {len(typed) * len(roles)} reference posterior(s) "
              f"FAILED their diagnostics ({'; '.join(failed)}); try {hint}", file=sys.stderr)
    return 0


def _write_idata(path: str, idata) -> None:
    """``idata.to_netcdf`` to a temporary name in the same folder, then renamed into place."""
    import os
    from pathlib import Path

    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        idata.to_netcdf(str(tmp))
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


def _posterior_png(dataset, x, model, guide, method, comparison) -> bytes:
    """One panel per x: the true posterior, the learned model's (with a run) and the guide's q."""
    from pyro_vae.plots import figure_png_bytes, posterior_panel

    grid, nuts = comparison.references["truth"]
    fig = posterior_panel(dataset, x, model=model if model is not None and model.latent_dim <= 2 else None,
                          guide=guide, method=method, grid=grid, nuts=nuts)
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
    p = add_command(sub, "posterior", "true posteriors p(z|x) by NUTS or quadrature (and a run's q beside its model's)")
    p.add_argument("dataset", help="an unsupervised data set (see `pyro-vae datasets`)")
    p.add_argument("--x", action="append", metavar="X1,...,XD",
                   help="an observation, e.g. 0.0,0.0 or -0.5,0.3 (repeatable)")
    p.add_argument("--run", help="a run folder: its guide's q(z|x) beside the learned model's posterior and the truth's")
    p.add_argument("--method", default="nuts", choices=("nuts", "quadrature"),
                   help="nuts, or quadrature on an adaptive grid (latent_dim ≤ 2)")
    p.add_argument("--chains", type=positive_int, default=4, help="NUTS chains from dispersed starting points")
    p.add_argument("--warmup", type=nonneg_int, default=1000, help="NUTS warm-up steps per chain")
    p.add_argument("--samples", type=positive_int, default=1000, help="NUTS draws kept per chain")
    p.add_argument("--seed", type=seed_int, default=0, help="seed of the chains")
    p.add_argument("--plot", help="write the panels to FILE.png (failed references hatched)")
    p.add_argument("--save-idata", metavar="FILE.nc", help="write the draws as ArviZ InferenceData (netCDF)")
    p.add_argument("--json", action="store_true", help="print JSON (with ok and reasons per posterior)")
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
