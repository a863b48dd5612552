"""The ``pyro-vae`` command line: datasets, sample, train, evaluate, posterior, decompose, demo.

Bad input (unknown data set or method, non-positive sizes, a batch larger than the data, a
device that is not there, an unreadable run folder) prints one error line and exits with
code 2 before anything is written. Training that goes NaN exits with code 1 and names the step.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

from pyro_vae.cli.diagnose import add_parsers as add_diagnose_parsers
from pyro_vae.cli.reproduce import add_parsers as add_reproduce_parsers
from pyro_vae.cli.m2 import add_parsers as add_m2_parsers
from pyro_vae.cli.truth import add_parsers as add_truth_parsers
from pyro_vae.io import ARRAY_EXTENSIONS, dumps_json, save_arrays

EXIT_USAGE, EXIT_FAILED = 2, 1


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid value {text!r}: expected a positive integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"invalid value {value}: expected a positive integer")
    return value


def _params(pairs: Sequence[str]) -> dict:
    out = {}
    for pair in pairs or ():
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--param {pair!r}: expected KEY=VALUE")
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw
    return out


def _print_json(obj) -> None:
    print(dumps_json(obj, nonfinite="null"))


# --------------------------------------------------------------------------- datasets
def cmd_datasets(args: argparse.Namespace) -> int:
    from pyro_vae.datasets import dataset_table

    rows = dataset_table()
    if args.json:
        _print_json(rows)
        return 0
    header = ("name", "K", "D", "σ²", "prior", "conditions (004 §5.1)", "paper")
    table = [(r["name"], r["latent_dim"], r["obs_dim"], f"{r['noise_var']:g}", r["prior"], r["conditions"], r["paper"]) for r in rows]
    widths = [max(len(str(row[i])) for row in [header, *table]) for i in range(len(header))]
    for row in [header, *table]:
        print("  ".join(str(cell).ljust(w) for cell, w in zip(row, widths)).rstrip())
    return 0


# --------------------------------------------------------------------------- sample
def cmd_sample(args: argparse.Namespace) -> int:
    from pyro_vae.datasets import get_dataset

    if Path(args.out).suffix.lower() not in ARRAY_EXTENSIONS:
        raise ValueError(f"--out {args.out!r}: expected a file ending in one of {sorted(ARRAY_EXTENSIONS)}")
    dataset = get_dataset(args.name, **_params(args.param))
    drawn = dataset.sample(args.n, seed=args.seed)
    arrays = dict(zip(("x", "z", "y"), (t.cpu().numpy() for t in drawn)))
    path = save_arrays(args.out, **arrays)
    print(f"wrote {args.n} samples of {args.name} (seed {args.seed}) to {path}")
    return 0


# --------------------------------------------------------------------------- train
def _config_from_args(args: argparse.Namespace):
    from pyro_vae.pipeline import RunConfig

    return RunConfig(
        dataset=args.dataset,
        method=args.method,
        dataset_params=_params(args.param),
        data_seed=args.data_seed,
        particles=args.particles,
        beta=args.beta,
        anneal_epochs=args.anneal_epochs,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        restarts=args.restarts,
        seed=args.seed,
        device=args.device,
        hidden=tuple(args.hidden),
        decoder=args.decoder,
        noise=args.noise,
        eval_samples=args.eval_samples,
        init=args.init,
        latent_dim=args.latent_dim,
        guide=args.guide,
        options=_params(args.option),
    )


METRIC_LABELS = (
    ("val_objective", "validation objective (per point)"),
    ("test_elbo", "test ELBO (per point)"),
    ("test_loglik", "test log-likelihood (IS, Eq. 48 of 000)"),
    ("test_loglik_exact", "test log-likelihood (quadrature)"),
    ("true_loglik", "true model's test log-likelihood"),
    ("mleo", "MLEO = KL(p_data || p_θ) (Eq. 2 of 000)"),
    ("pmo", "PMO = E KL(q || p_θ(z|x))"),
    ("smooth_knn", "smooth k-NN statistic vs test set (lower=better)"),
)


def _print_summary(summary: dict) -> None:
    m = summary["metrics"]
    print(f"run:          {summary['run_dir']}")
    print(f"best restart: {summary['best_restart']}")
    for key, label in METRIC_LABELS:
        value = m.get(key)
        if value is None:
            continue
        extra = ""
        if key == "test_loglik":
            extra = f" ± {m['test_loglik_se']:.4f} (SE over points; MC SE {m['test_loglik_mc_se']:.1e}, ESS {m['test_loglik_ess']:.0f})"
        if key == "true_loglik":
            extra = f" ± {m['true_loglik_se']:.4f}"
        if key == "smooth_knn":
            extra = f" ± {m['smooth_knn_se']:.4f}"
        print(f"{label:<50s} {value: .4f}{extra}")


def cmd_train(args: argparse.Namespace) -> int:
    from pyro_vae.pipeline import train_and_evaluate

    config = _config_from_args(args)
    config.validate()
    summary = train_and_evaluate(config, args.out, progress=not args.quiet)
    _print_json(summary) if args.json else _print_summary(summary)
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from pyro_vae.pipeline import evaluate_run

    summary = evaluate_run(args.run_dir, device=args.device, eval_samples=args.eval_samples)
    _print_json(summary) if args.json else _print_summary(summary)
    return 0


def cmd_methods(args: argparse.Namespace) -> int:
    from pyro_vae.pipeline import METHODS

    rows = [{"name": n, "options": m.options, "description": m.description} for n, m in METHODS.items()]
    if args.json:
        _print_json(rows)
    else:
        for r in rows:
            opts = ", ".join(f"{k}={v}" for k, v in r["options"].items()) or "-"
            print(f"{r['name']:<8s} {r['description']}  [options: {opts}]")
    return 0


# --------------------------------------------------------------------------- demo
def cmd_demo(args: argparse.Namespace) -> int:
    """MFG-VAE and IWAE (S=20) on Figure-8: test log-likelihoods beside the true model's."""
    from pyro_vae.pipeline import RunConfig, train_and_evaluate

    rows = []
    for method in ("vae", "iwae"):
        config = RunConfig(
            dataset="figure8", method=method, particles=20, epochs=args.epochs, restarts=args.restarts,
            seed=args.seed, device=args.device, eval_samples=args.eval_samples,
        )
        config.validate()
        print(f"training {method} on figure8 ({args.restarts} restarts × {args.epochs} epochs) ...", flush=True)
        rows.append((method, train_and_evaluate(config, args.out, progress=not args.quiet)))
    print()
    print("Figure-8 (004 App. G.1), test set of 2000 points, nats per point")
    print(f"{'method':<8s} {'test log-lik (IS)':>18s} {'(quadrature)':>13s} {'true model':>11s} {'gap':>8s}")
    for method, summary in rows:
        m = summary["metrics"]
        print(
            f"{method:<8s} {m['test_loglik']:>10.4f} ± {m['test_loglik_se']:.4f} {m['test_loglik_exact']:>13.4f} "
            f"{m['true_loglik']:>11.4f} {m['test_loglik'] - m['true_loglik']:>8.4f}"
        )
    print(f"\nruns recorded in {args.out}/ (index.sqlite); `pyro-vae evaluate RUN_DIR` recomputes a run's metrics")
    return 0


# --------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pyro-vae", description="Study when variational autoencoders fail.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("datasets", help="list the benchmark data sets")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_datasets)

    p = sub.add_parser("sample", help="draw x and the true z from a data set")
    p.add_argument("name")
    p.add_argument("-n", type=_positive_int, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="FILE.csv or FILE.npz")
    p.add_argument("--param", action="append", metavar="KEY=VALUE", help="data set parameter, e.g. theta=0.5")
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("train", help="train a VAE on a data set and evaluate it")
    p.add_argument("dataset")
    p.add_argument("--method", default="vae", help="vae, iwae, beta, ... (see `pyro-vae methods`)")
    p.add_argument("--particles", type=int, default=20, help="IWAE importance samples S")
    p.add_argument("--beta", type=float, default=1.0)
    p.add_argument("--anneal-epochs", type=int, default=0, help="linear KL warm-up for beta")
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--restarts", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-seed", type=int, default=0, help="data version")
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    p.add_argument("--hidden", type=int, nargs="+", default=[50, 50, 50])
    p.add_argument("--decoder", default="auto", help="auto (the data set's parametric likelihood when it has one, 000 App. E), mlp or family")
    p.add_argument("--noise", default="fixed", help="fixed, learned (per dimension, jointly) or posthoc (Eq. 9 of 004 after training)")
    p.add_argument("--latent-dim", type=int, default=None, help="K of the model (default: the data set's)")
    p.add_argument("--guide", default="mean_field", help="the variational family (mean_field, ...)")
    p.add_argument("--option", action="append", metavar="KEY=VALUE", help="a method option, e.g. threshold=0.05")
    p.add_argument("--eval-samples", type=int, default=5000)
    p.add_argument("--init", default="random", help="random, gt (every restart at the truth) or mixed (half at the truth, 004 App. D)")
    p.add_argument("--param", action="append", metavar="KEY=VALUE")
    p.add_argument("--out", default="runs", help="runs folder")
    p.add_argument("--json", action="store_true")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="recompute the metrics of a finished run")
    p.add_argument("run_dir")
    p.add_argument("--device", default="cpu")
    p.add_argument("--eval-samples", type=_positive_int, default=None)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_evaluate)

    add_truth_parsers(sub)
    add_m2_parsers(sub)
    add_reproduce_parsers(sub)
    add_diagnose_parsers(sub)

    p = sub.add_parser("methods", help="list the inference methods and their options")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_methods)

    p = sub.add_parser("demo", help="MFG-VAE vs IWAE on Figure-8 against the true model")
    p.add_argument("--epochs", type=_positive_int, default=100)
    p.add_argument("--restarts", type=_positive_int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--eval-samples", type=_positive_int, default=5000)
    p.add_argument("--out", default="demo-runs")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_demo)
    return parser


def route_m2(argv: list[str]) -> list[str]:
    """``train DATASET --method m2 ...`` is ``train-m2 DATASET ...`` (the M2 options live there)."""
    if argv[:1] != ["train"]:
        return argv
    for i, token in enumerate(argv):
        if token == "--method=m2":
            return ["train-m2", *argv[1:i], *argv[i + 1 :]]
        if token == "--method" and argv[i + 1 : i + 2] == ["m2"]:
            return ["train-m2", *argv[1:i], *argv[i + 2 :]]
    return argv


def main(argv: Sequence[str] | None = None) -> int:
    argv = route_m2(list(sys.argv[1:] if argv is None else argv))
    args = build_parser().parse_args(argv)
    from pyro_vae.inference import TrainingError

    try:
        return args.func(args)
    except TrainingError as err:
        print(f"pyro-vae: training failed: {err}", file=sys.stderr)
        return EXIT_FAILED
    except ValueError as err:
        print(f"pyro-vae {args.command}: error: {err}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
