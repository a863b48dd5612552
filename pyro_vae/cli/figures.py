"""``pyro-vae figure NAME``: the papers' figures that no experiment config draws.

Writes the figure's PNG(s) into ``--out`` and records how they were made under the figure's
name in ``--out/provenance.json`` (the command, project commit, package versions, machine, load,
wall time, training settings, measured numbers and the reductions against the paper).

NAME                 draws
004_fig2             three models with one p(x) (analytic; exact posteriors)
004_fig3             f(z) = ⌊z⌋ and its multi-modal posteriors (analytic)
004_fig4             p(x) with f(z) and the posteriors at starred x; draws of every benchmark
004_fig6             f(z, y) and p(x | y): truth vs M2 trained with IWAE and with the ELBO (trains)
000_fig2_5           posterior means of the VAE and of LiBI on LinearJTE and CubicJTE (trains)
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Callable

from pyro_vae.cli.common import RawHelpFormatter

FIGURE_NAMES = ("004_fig2", "004_fig3", "004_fig4", "004_fig6", "000_fig2_5")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid value {text!r}: expected a positive integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"invalid value {value}: expected a positive integer")
    return value


# --------------------------------------------------------------------------- the figures
def _fig2(args) -> tuple[dict, dict]:
    from pyro_vae.datasets.toys import VARIANT_NOISE_VAR
    from pyro_vae.reproduce.paper_figures import nonidentifiability_figure

    return {"004_fig2.png": nonidentifiability_figure()}, {
        "settings": {"datasets": ["variant1", "variant2", "variant3"], "noise_var": VARIANT_NOISE_VAR,
                     "x_marks": [0.02, 0.1, 0.2], "posterior": "grid quadrature (exact)"},
        "reductions": [],
        "choices": [f"σ² = {VARIANT_NOISE_VAR:g} (the paper gives none)", "the cross-sections x (the paper's are not given)"],
    }


def _fig3(args) -> tuple[dict, dict]:
    from pyro_vae.reproduce.paper_figures import rapid_change_figure

    return {"004_fig3.png": rapid_change_figure()}, {
        "settings": {"dataset": "floor", "noise_var": [0.01, 0.25], "x_marks": [-1.8, 0.0, 0.8, 1.8],
                     "posterior": "grid quadrature (exact)"},
        "reductions": [],
        "choices": ["σ² = 0.01 (the data set's default) and σ² = 0.25 (the paper gives none)", "the cross-sections x"],
    }


def _fig4(args) -> tuple[dict, dict]:
    from pyro_vae.reproduce.paper_figures import BENCHMARK_POINTS, benchmark_figure, benchmark_samples_figure

    return {"004_fig4.png": benchmark_figure(), "004_fig4_datasets.png": benchmark_samples_figure(seed=args.seed)}, {
        "settings": {"datasets": ["figure8", "clusters"], "starred_points": BENCHMARK_POINTS,
                     "posterior": "grid quadrature (exact)", "density": "exact p(x), pixel-averaged",
                     "samples": {"num_samples": 1000, "seed": args.seed}},
        "reductions": [],
        "choices": ["the starred x (the paper's are not given)"],
    }


def _fig6(args) -> tuple[dict, dict]:
    from pyro_vae.datasets import get_dataset
    from pyro_vae.reproduce.figure_runs import M2_SETTINGS, fit_m2
    from pyro_vae.reproduce.paper_figures import functional_collapse_figure

    epochs = args.epochs or M2_SETTINGS["epochs"]
    restarts = args.restarts or M2_SETTINGS["restarts"]
    models, notes, runs = {}, {}, {}
    for label, objective in (("IWAE (S = 20)", "iwae"), ("VAE (ELBO)", "elbo")):
        start = time.perf_counter()
        model, metrics, config = fit_m2(objective, epochs=epochs, restarts=restarts, seed=args.seed,
                                        progress=not args.quiet)
        models[label] = model
        notes[label] = (f"function gap {metrics['function_gap']:.3f} (truth {metrics['function_gap_true']:.3f}), "
                        f"p(x) kNN {metrics['smooth_knn']['mean']:.2f}")
        runs[label] = {"config": config, "seconds": time.perf_counter() - start, "metrics": {
            k: metrics.get(k) for k in ("function_gap", "function_gap_true", "function_gap_ratio", "smooth_knn",
                                        "cohorts", "cohort_separation", "cohort_separation_true",
                                        "classifier_accuracy", "best_restart", "val_objective_per_restart")}}
    fig = functional_collapse_figure(get_dataset("discrete_semicircle"), models, seed=args.seed, notes=notes)
    reductions = [f"{restarts} restarts (004 App. D: 5)", "α = 0.1, γ = 1 fixed (004: chosen on a grid by p(x)'s smooth kNN)",
                  "one data version (version 0)"]
    if epochs != 100:
        reductions.insert(0, f"{epochs} epochs (004 App. D: 100)")
    return {"004_fig6.png": fig}, {
        "settings": {"dataset": "discrete_semicircle", "epochs": epochs, "restarts": restarts, "seed": args.seed,
                     "encoder": "factorised q(y|x) q(z|x) (Eqs. 13/15 of 004)", "y": "enumerated exactly"},
        "runs": runs, "reductions": reductions,
        "choices": ["q(y|x) enumerated exactly (004 used a relaxed categorical at T = 2.2)"],
    }


def _fig2_5(args) -> tuple[dict, dict]:
    from pyro_vae.reproduce.figure_runs import JTE_SETTINGS, fit_jte
    from pyro_vae.reproduce.paper_figures import posterior_means, posterior_means_figure

    epochs = args.epochs or JTE_SETTINGS["epochs"]
    restarts = args.restarts or JTE_SETTINGS["restarts"]
    figures, runs = {}, {}
    numbers = {("linear_jte", "vae"): 2, ("linear_jte", "libi"): 3, ("cubic_jte", "vae"): 4, ("cubic_jte", "libi"): 5}
    for (dataset, method), number in numbers.items():
        fit = fit_jte(dataset, method, epochs=epochs, restarts=restarts, seed=args.seed, progress=not args.quiet)
        libi = method == "libi"
        means = posterior_means(fit.dataset, fit.x, gt_guide=fit.gt_guide, model=fit.model, guide=fit.guide,
                                z=fit.z if libi else None, codes=fit.codes)
        figures[f"000_fig{number}.png"] = posterior_means_figure(fit.dataset, means, method="LiBI" if libi else "VAE")
        runs[f"000_fig{number}"] = {
            "dataset": dataset, "method": method, "config": fit.settings, "seconds": fit.seconds,
            "rms_distances": means.distances(),
            "metrics": {k: fit.metrics.get(k) for k in ("mleo", "mleo_se", "pmo", "test_loglik", "test_loglik_exact",
                                                        "true_loglik", "smooth_knn", "smooth_knn_se", "best_restart",
                                                        "val_objective_per_restart", "gt_decoder_mse")},
        }
    return figures, {
        "settings": {**JTE_SETTINGS, "epochs": epochs, "restarts": restarts, "seed": args.seed, "data_seed": 0,
                     "libi": "1 round (repeats = 1), ε_HZ = 1, ε_Σ = ε_μ = 0.5, step 2 as many epochs as step 1",
                     "decoder": "the data set's parametric family (A learned, B fixed; 000 App. E)",
                     "encoder": "the project's mean-field MLP, 3 × 50 leaky ReLU",
                     "points": "the 500 test points of data version 0",
                     "posterior_means": "grid quadrature (exact)"},
        "runs": runs,
        "reductions": [f"{epochs} θ-epochs in minibatches of 100 (000 App. E: 30k full-batch epochs, lr 0.01)",
                       f"{restarts} restarts (000: 10); one data version (000 shows one model)",
                       "LiBI with minibatches of 100: its full-batch regime diverges on the current code "
                       "(a fix is under way); minibatch 100, lr 0.01 trains"],
        "choices": ["encoder: the project's 3 × 50 MLP (000: linear for LinearJTE, a cube-root network for CubicJTE)",
                    "posterior means by exact quadrature (000: Monte Carlo)"],
    }


BUILDERS: dict[str, Callable] = {"004_fig2": _fig2, "004_fig3": _fig3, "004_fig4": _fig4, "004_fig6": _fig6,
                                 "000_fig2_5": _fig2_5}


# --------------------------------------------------------------------------- the command
def command_line(args: argparse.Namespace) -> str:
    """The ``pyro-vae figure`` command that reproduces ``args`` (options at their defaults left out)."""
    parts = ["pyro-vae", "figure", args.name, "--out", str(args.out)]
    for flag, value, default in (("--epochs", args.epochs, None), ("--restarts", args.restarts, None),
                                 ("--seed", args.seed, 0), ("--dpi", args.dpi, 120)):
        if value != default:
            parts += [flag, str(value)]
    return " ".join(parts + (["--quiet"] if args.quiet else []))


def source_commit(out: Path) -> str | None:
    """The project's commit, marked ``+local-changes`` only for changes outside ``out`` (the
    figures folder may itself be tracked, and each figure rewrites it)."""
    import subprocess

    from pyro_vae.reproduce.results import project_commit

    commit = project_commit()
    if commit is None or not commit.endswith("+local-changes"):
        return commit
    root = Path(__file__).resolve().parents[2]
    try:
        exclude = f":(exclude){out.resolve().relative_to(root)}"
    except ValueError:  # the folder is outside the repository: every change counts
        return commit
    status = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no", "--", ".",
                             exclude], capture_output=True, text=True, timeout=10)
    return commit if status.returncode != 0 or status.stdout.strip() else commit.split("+")[0]


def cmd_figure(args: argparse.Namespace) -> int:
    import torch

    from pyro_vae.io import read_json, write_json
    from pyro_vae.plots import save_png
    from pyro_vae.provenance import package_versions, utc_now
    from pyro_vae.reproduce.results import machine

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {args.out!r}: expected a folder, found a file")
    if not 50 <= args.dpi <= 600:
        raise ValueError(f"--dpi {args.dpi}: expected a number in [50, 600]")
    record_path = out / "provenance.json"
    records = read_json(record_path) if record_path.is_file() else {}
    if not isinstance(records, dict):
        raise ValueError(f"{str(record_path)!r}: expected a JSON object of figure records")
    start, commit, load = time.perf_counter(), source_commit(out), os.getloadavg()
    figures, info = BUILDERS[args.name](args)
    written = [str(save_png(fig, out / name, dpi=args.dpi)) for name, fig in figures.items()]
    records.setdefault("figures", {})[args.name] = {
        "command": command_line(args),
        "files": sorted(figures),
        "commit": commit,
        "packages": package_versions(),
        "machine": machine(),
        "torch_threads": torch.get_num_threads(),
        "load_average_at_start": [round(v, 2) for v in load],
        "wall_seconds": round(time.perf_counter() - start, 1),
        "dpi": args.dpi,
        "created": utc_now(),
        **info,
    }
    write_json(record_path, records)
    for path in written:
        print(f"wrote {path}")
    print(f"recorded {args.name} in {record_path}")
    return 0


def add_parsers(sub) -> None:
    """Register ``figure`` on the ``pyro-vae`` sub-command parser."""
    p = sub.add_parser("figure", help="draw a paper figure that no experiment config draws (PNG + provenance.json)",
                       description=__doc__, formatter_class=RawHelpFormatter)
    p.add_argument("name", choices=FIGURE_NAMES, help="the figure")
    p.add_argument("--out", default="figures", help="folder for the PNGs and provenance.json")
    p.add_argument("--epochs", type=_positive_int, default=None,
                   help="training epochs of 004_fig6 / 000_fig2_5 (default: 100 / 600, the committed figures')")
    p.add_argument("--restarts", type=_positive_int, default=None, help="training restarts (default: 3)")
    p.add_argument("--seed", type=int, default=0, help="seed of the training behind the figure")
    p.add_argument("--dpi", type=int, default=120, help="resolution of the PNGs")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_figure)
