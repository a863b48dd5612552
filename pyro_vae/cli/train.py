"""``pyro-vae train``, ``evaluate``, ``methods`` and ``demo``: unsupervised VAEs on a data set.

    pyro-vae train figure8 --method iwae --particles 20 --restarts 5 --epochs 100
    pyro-vae train figure8 --method lin --option threshold=0.05 --option window=10
    pyro-vae train case1 --data-option theta=0.5 --decoder family
"""

from __future__ import annotations

import argparse
from typing import Any

from pyro_vae.cli.common import (
    add_command, flags_of, nonneg_int, parse_key_values, positive_float, positive_int, print_json, seed_int,
)
from pyro_vae.cli.data import dataset_from_args

# the RunConfig settings each method reads besides its --option values (shown by `pyro-vae methods`)
METHOD_FLAGS = {"iwae": ("--particles=20",), "beta": ("--beta=1.0", "--anneal-epochs=0")}


def method_options(method: str, pairs, command: str = "train") -> dict[str, Any]:
    """``--option KEY=VALUE`` pairs checked against ``method``'s options; errors name ``--option``."""
    from pyro_vae.inference.methods import METHODS, resolve_options

    options = parse_key_values(pairs, "--option")
    if method not in METHODS or method == "m2":
        allowed = ", ".join(m for m in METHODS if m != "m2")
        raise ValueError(f"--method {method!r}: expected one of {allowed} (m2: `pyro-vae train-m2`)")
    known = METHODS[method].options
    for key, value in options.items():
        if key not in known:
            takes = f"its options are {', '.join(known)}" if known else "it takes none"
            raise ValueError(f"--option {key}={value!r}: method {method!r} has no option {key!r}; {takes} "
                             "(see `pyro-vae methods`)")
    try:
        resolve_options(method, options)
    except ValueError as err:
        raise ValueError(f"--option {err}") from None
    return options


def _config_from_args(args: argparse.Namespace):
    from pyro_vae.pipeline import RunConfig

    return RunConfig(
        dataset=args.dataset,
        method=args.method,
        dataset_params=parse_key_values(args.data_option, "--data-option"),
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
        options=method_options(args.method, args.option),
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


def print_summary(summary: dict) -> None:
    m = summary["metrics"]
    print(f"run:          {summary['run_dir']}")
    best = summary.get("best_restart")
    print(f"best restart: {best if best is not None else 'n/a (metrics rebuilt from params.pt)'}")
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
    from pyro_vae import checks
    from pyro_vae.pipeline import train_and_evaluate

    checks.output_dir("--out", args.out)
    dataset_from_args(args.dataset, args.data_option)
    config = _config_from_args(args)
    config.validate()
    summary = train_and_evaluate(config, args.out, progress=not args.quiet)
    print_json(summary) if args.json else print_summary(summary)
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from pyro_vae import checks
    from pyro_vae.io import read_json
    from pyro_vae.pipeline import evaluate_run
    from pyro_vae.runs import RunDirError

    if args.eval_samples is not None:
        checks.require_memory("--eval-samples", args.eval_samples,  # for a test split of 2000 points
                              {"the importance weights": 8.0 * 2 * args.eval_samples * 2000})
    try:
        method = read_json(f"{args.run_dir}/config.json").get("method")
    except (OSError, ValueError, AttributeError):
        method = None  # load_run names what is wrong
    if method == "m2":
        raise RunDirError(f"run_dir {args.run_dir!r} is an M2 run: `pyro-vae train-m2` computes its metrics; "
                          "evaluate recomputes unsupervised runs")
    summary = evaluate_run(args.run_dir, device=args.device, eval_samples=args.eval_samples)
    print_json(summary) if args.json else print_summary(summary)
    return 0


def method_rows() -> list[dict]:
    from pyro_vae.pipeline import METHODS

    rows = []
    for name, m in METHODS.items():
        settings = list(METHOD_FLAGS.get(name, ()))
        if m.options:
            settings.append("--option " + " ".join(f"{k}={v}" for k, v in m.options.items()))
        rows.append({"name": name, "flags": settings, "options": m.options, "description": m.description})
    return rows


def cmd_methods(args: argparse.Namespace) -> int:
    rows = method_rows()
    if args.json:
        print_json(rows)
        return 0
    header = ("method", "settings (defaults)", "description")
    table = [(r["name"], " ".join(r["flags"]) or "-", r["description"]) for r in rows]
    widths = [max(len(row[i]) for row in [header, *table]) for i in range(2)]
    for row in [header, *table]:
        print(f"{row[0]:<{widths[0]}}  {row[1]:<{widths[1]}}  {row[2]}".rstrip())
    return 0


def cmd_guides(args: argparse.Namespace) -> int:
    from guides.registry import ENTRY_POINT_GROUP, guide_names

    rows = [{"name": n, "import_path": path} for n, path in guide_names().items()]
    if args.json:
        print_json(rows)
        return 0
    for r in rows:
        print(f"{r['name']:<12s} {r['import_path']}")
    print(f"(or any 'package.module:ClassOrFactory'; installed packages add names in the entry point group "
          f"{ENTRY_POINT_GROUP!r}; see guides/README.md)")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """MFG-VAE and IWAE (S=20) on Figure-8: test log-likelihoods beside the true model's."""
    from pyro_vae import checks
    from pyro_vae.pipeline import RunConfig, train_and_evaluate

    checks.output_dir("--out", args.out)
    configs = [
        RunConfig(dataset="figure8", method=method, particles=20, epochs=args.epochs, restarts=args.restarts,
                  seed=args.seed, device=args.device, eval_samples=args.eval_samples)
        for method in ("vae", "iwae")
    ]
    for config in configs:
        checks.check_run(config, config.validate())
    rows = []
    for config in configs:
        print(f"training {config.method} on figure8 ({args.restarts} restarts × {args.epochs} epochs) ...", flush=True)
        rows.append((config.method, train_and_evaluate(config, args.out, progress=not args.quiet)))
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


def add_parsers(sub) -> None:
    p = add_command(sub, "train", "train a VAE on a data set and evaluate it")
    p.add_argument("dataset", help="a data set (see `pyro-vae datasets`)")
    p.add_argument("--method", default="vae", help="vae, iwae, beta, lin, lin_segments, libi (see `pyro-vae methods`; "
                                                   "m2 runs `pyro-vae train-m2`)")
    p.add_argument("--option", action="append", metavar="KEY=VALUE",
                   help="a method option, e.g. threshold=0.05 for lin (repeatable; see `pyro-vae methods`)")
    p.add_argument("--data-option", action="append", metavar="KEY=VALUE",
                   help="a data set parameter, e.g. theta=0.5 for case1 (repeatable)")
    p.add_argument("--param", action="append", dest="data_option", help=argparse.SUPPRESS)  # deprecated spelling
    p.add_argument("--particles", type=positive_int, default=20, help="importance samples S of --method iwae")
    p.add_argument("--beta", type=positive_float, default=1.0, help="KL weight of --method beta")
    p.add_argument("--anneal-epochs", type=nonneg_int, default=0, help="linear KL warm-up of --method beta, epochs")
    p.add_argument("--epochs", type=positive_int, default=100, help="passes over the training split")
    p.add_argument("--batch-size", type=positive_int, default=100, help="minibatch size")
    p.add_argument("--lr", type=positive_float, default=1e-3, help="Adam's learning rate")
    p.add_argument("--restarts", type=positive_int, default=1, help="random initialisations trained as one batch; "
                                                                   "the best by the validation objective is kept")
    p.add_argument("--seed", type=seed_int, default=0, help="seed of initialisation, minibatches and sampling")
    p.add_argument("--data-seed", type=seed_int, default=0, help="data version (which draw of the data set)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    p.add_argument("--hidden", type=positive_int, nargs="+", default=[50, 50, 50], help="hidden layer widths")
    p.add_argument("--decoder", default="auto", choices=("auto", "mlp", "family"),
                   help="auto: the data set's parametric likelihood when it has one (000 App. E), else the MLP")
    p.add_argument("--noise", default="fixed", choices=("fixed", "learned", "posthoc"),
                   help="observation noise σ²: fixed at the data set's, learned per dimension, or posthoc "
                        "(Eq. 9 of 004 after training)")
    p.add_argument("--latent-dim", type=positive_int, default=None, help="K of the model (default: the data set's)")
    p.add_argument("--guide", default="mean_field",
                   help="the variational family: mean_field, flow, an installed name (see `pyro-vae guides`) or "
                        "package.module:ClassOrFactory (guides/README.md)")
    p.add_argument("--init", default="random", choices=("random", "gt", "mixed"),
                   help="gt: every restart at the truth; mixed: half at the truth (004 App. D)")
    p.add_argument("--eval-samples", type=positive_int, default=5000, help="importance samples per test point")
    p.add_argument("--out", default="runs", help="runs folder (created if missing)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train, flag_names={**flags_of(p), "dataset_params": "--data-option", "options": "--option",
                                                 "runs_dir": "--out", "num_particles": "--particles"})

    p = add_command(sub, "evaluate", "recompute the metrics of a run (rebuilds a missing metrics.json)")
    p.add_argument("run_dir", help="a run folder, e.g. runs/figure8-vae-1a2b3c4d-1")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    p.add_argument("--eval-samples", type=positive_int, default=None,
                   help="importance samples per test point (default: the run's)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=cmd_evaluate, flag_names=flags_of(p))

    p = add_command(sub, "methods", "list the inference methods, their flags and options")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_methods)

    p = add_command(sub, "guides", "list the guides --guide accepts by name (built-ins and installed)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_guides)

    p = add_command(sub, "demo", "MFG-VAE vs IWAE on Figure-8 against the true model")
    p.add_argument("--epochs", type=positive_int, default=100, help="passes over the training split")
    p.add_argument("--restarts", type=positive_int, default=3, help="random initialisations per method")
    p.add_argument("--seed", type=seed_int, default=0, help="random seed")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    p.add_argument("--eval-samples", type=positive_int, default=5000, help="importance samples per test point")
    p.add_argument("--out", default="demo-runs", help="runs folder (created if missing)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_demo, flag_names=flags_of(p))
