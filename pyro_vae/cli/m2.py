"""``pyro-vae train-m2``: the semi-supervised M2 model on the semi-circles and the UCI sets.

    pyro-vae train-m2 discrete_semicircle --guide enum --method iwae --particles 20 \\
        --alpha 0.1 --gamma 1 --labelled-fraction 0.1 --restarts 5
    pyro-vae train-m2 titanic --guide relaxed --split 2 --data-dir ../shared/data/uci
    pyro-vae train-m2 discrete_semicircle --method lin --option threshold=0.05 --option window=10

One vocabulary with ``pyro-vae train``: ``--method`` (vae, iwae, lin), LIN's ``--option
threshold=T --option window=R``, ``--noise``. The older spellings ``--objective``, ``--lagging``,
``--lin-threshold``, ``--lin-window`` and ``--noise-var`` still work (hidden from the help).

Bad input prints one error line naming the argument and exits with code 2 before anything is
written (through the ``pyro-vae`` entry point's handler).
"""

from __future__ import annotations

import argparse
import math

import pyro_vae.inference.m2  # noqa: F401  registers the 'm2' pointer of `pyro-vae train --method`
from guides.m2 import PAPER_TEMPERATURE
from pyro_vae.cli.common import (
    add_command, finite_float, flags_of, fraction, nonneg_float, nonneg_int, parse_key_values, positive_float,
    positive_int, print_json, seed_int,
)


M2_METHODS = {"vae": "elbo", "iwae": "iwae", "lin": "elbo"}  # --method → the bound J is built from
LIN_OPTIONS = {"threshold": "lin_threshold", "window": "lin_window"}  # --option KEY → M2Config field


def _noise_var(text: str) -> float | None:
    """``--noise fixed`` (the data set's σ²) or a positive number σ²."""
    from pyro_vae.cli.common import NUMBER

    if text == "fixed":
        return None
    if not NUMBER.fullmatch(text.strip()) or not 0 < float(text) < math.inf:
        raise ValueError(f"--noise {text!r}: expected 'fixed' (the data set's σ²) or a finite number > 0 "
                         "(learned/posthoc noise is for `pyro-vae train`)")
    return float(text)


def _method_settings(args: argparse.Namespace) -> dict:
    """``--method`` and ``--option`` (and the deprecated spellings) as M2Config fields."""
    method = args.method
    if method == "elbo":  # the objective's name, accepted as the method's
        method = "vae"
    if method not in M2_METHODS:
        raise ValueError(f"--method {args.method!r}: expected one of {', '.join(M2_METHODS)} for the M2 model")
    objective = M2_METHODS[method]
    if args.objective is not None:  # deprecated --objective elbo|iwae
        if method == "iwae" and args.objective != "iwae":
            raise ValueError(f"--objective {args.objective!r} contradicts --method iwae")
        objective = args.objective
    lagging = method == "lin" or args.lagging
    options = parse_key_values(args.option, "--option")
    fields = {"objective": objective, "lagging": lagging}
    for key, value in options.items():
        if not lagging or key not in LIN_OPTIONS:
            takes = f"takes {', '.join(LIN_OPTIONS)}" if lagging else "takes none"
            raise ValueError(f"--option {key}={value!r}: train-m2 --method {method} {takes}")
        fields[LIN_OPTIONS[key]] = value
    for field, given in (("lin_threshold", args.lin_threshold), ("lin_window", args.lin_window)):
        if given is not None:  # deprecated --lin-threshold / --lin-window
            fields.setdefault(field, given)
    return fields


def _config_from_args(args: argparse.Namespace):
    from pyro_vae.pipeline_m2 import M2Config

    noise_var = _noise_var(args.noise) if args.noise_var is None else args.noise_var
    return M2Config(
        dataset=args.dataset,
        guide=args.guide,
        alpha=args.alpha,
        gamma=args.gamma,
        labelled_fraction=args.labelled_fraction,
        particles=args.particles,
        temperature=args.temperature,
        straight_through=args.straight_through,
        z_given_y=_z_given_y(args.z_encoder),
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        restarts=args.restarts,
        seed=args.seed,
        data_seed=args.data_seed,
        split=args.split,
        device=args.device,
        hidden=tuple(args.hidden) if args.hidden is not None else None,
        latent_dim=args.latent_dim,
        noise_var=noise_var,
        eval_samples=args.eval_samples,
        counterfactuals=args.counterfactuals,
        data_dir=args.data_dir,
        **_method_settings(args),
    )


def _z_given_y(text: str) -> bool:
    if text not in ("xy", "x"):
        raise ValueError(f"--z-encoder {text!r}: expected 'xy' (q(z|x,y), Kingma et al.) or 'x' (q(z|x))")
    return text == "xy"


def _fmt_knn(entry) -> str:
    return "n/a" if entry is None else f"{entry['mean']:.3f} ± {entry['se']:.3f}"


def _print_summary(summary: dict) -> None:
    m = summary["metrics"]
    print(f"run:          {summary['run_dir']}")
    print(f"best restart: {summary['best_restart']}  (validation J per point {m['val_objective']:.4f})")
    print(f"{'test J per point (Eq. 5 of 004)':<52s} {m['test_objective']: .4f}")
    print(f"{'test bound on log p(x) per point (U)':<52s} {m['test_log_px_bound']: .4f}")
    print(f"{'smooth k-NN, learned p(x) vs test (lower=better)':<52s} {_fmt_knn(m['smooth_knn'])}")
    for row in m["cohorts"]:
        print(f"{'smooth k-NN, learned vs true p(x|' + row['cohort'] + ')':<52s} {_fmt_knn(row['smooth_knn'])}")
    if "classifier_accuracy" in m:
        print(f"{'q(y|x) test accuracy (majority class)':<52s} {m['classifier_accuracy']:.4f} ({m['majority_accuracy']:.4f})")
    else:
        print(f"{'q(y|x) test RMSE of the mean':<52s} {m['classifier_rmse']:.4f}")
    gap, truth = m["function_gap"], m["function_gap_true"]
    extra = f" (truth {truth:.4f})" if truth is not None else ""
    print(f"{'functional collapse: mean |f(z,a) - f(z,b)|':<52s} {gap:.4f}{extra}")
    if m.get("counterfactual_rmse") is not None:
        print(f"{'counterfactual RMSE vs the true f(z, y flipped)':<52s} {m['counterfactual_rmse']:.4f}")
    print(f"{'seconds per epoch':<52s} {m['seconds_per_epoch']:.3f}")


def cmd_train_m2(args: argparse.Namespace) -> int:
    from pyro_vae import checks
    from pyro_vae.pipeline_m2 import train_and_evaluate_m2

    checks.output_dir("--out", args.out)
    config = _config_from_args(args)
    config.validate()
    summary = train_and_evaluate_m2(config, args.out, progress=not args.quiet)
    print_json(summary) if args.json else _print_summary(summary)
    return 0


def add_parsers(sub) -> None:
    """Add ``train-m2`` to the ``pyro-vae`` subcommands."""
    p = add_command(sub, "train-m2", "train the semi-supervised M2 model (004 §7) and evaluate it")
    p.add_argument("dataset", help="discrete_semicircle, continuous_semicircle, diabetic_retinopathy, contraceptive or titanic")
    p.add_argument("--method", default="vae",
                   help="vae: the ELBO bounds (Eqs. 12-13 of 004); iwae: the IWAE bounds (Eqs. 14-15) with --particles; "
                        "lin: Lagging Inference Networks (He et al. 2019) on the ELBO, --option threshold=T window=R")
    p.add_argument("--option", action="append", metavar="KEY=VALUE",
                   help="a method option: threshold (T, nats per point; default 0.1) and window (R; default 5) "
                        "of --method lin, as in `pyro-vae train --method lin`")
    p.add_argument("--guide", default="auto",
                   help="q(y|x): enum (exact enumeration) or relaxed (Concrete) for a discrete label, gaussian for a "
                        "continuous one; auto = enum / gaussian")
    p.add_argument("--alpha", type=nonneg_float, default=0.1, help="weight of the classifier term (004 grid: 0, 0.1, 1)")
    p.add_argument("--gamma", type=positive_float, default=1.0, help="weight of the labelled bound (004 grid: 0.5, 1, 2, 5)")
    p.add_argument("--labelled-fraction", type=fraction, default=0.1, help="share of training labels the model sees")
    p.add_argument("--particles", type=positive_int, default=20, help="importance samples S of --method iwae")
    p.add_argument("--temperature", type=positive_float, default=PAPER_TEMPERATURE, help="relaxed guide's temperature (004: 2.2)")
    p.add_argument("--straight-through", action="store_true", help="relaxed guide: one-hot draws, relaxed gradients")
    p.add_argument("--z-encoder", default="xy",
                   help="xy: q(z|x,y) (Kingma et al. 2014); x: q(z|x), the factorised q(y|x)q(z|x) of Eqs. 13, 15 of 004")
    p.add_argument("--epochs", type=positive_int, default=100, help="passes over the training split")
    p.add_argument("--batch-size", type=positive_int, default=100, help="minibatch size")
    p.add_argument("--lr", type=positive_float, default=1e-3, help="Adam's learning rate")
    p.add_argument("--restarts", type=positive_int, default=1, help="random initialisations trained as one batch")
    p.add_argument("--seed", type=seed_int, default=0, help="seed of initialisation, minibatches and sampling")
    p.add_argument("--data-seed", type=seed_int, default=0, help="semi-circle data version")
    p.add_argument("--split", type=nonneg_int, default=0, help="UCI split, 0-4")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    p.add_argument("--hidden", type=positive_int, nargs="+", default=None,
                   help="hidden layer widths (default: 50 50 50 on the semi-circles, 100 100 100 on UCI)")
    p.add_argument("--latent-dim", type=positive_int, default=None, help="K (default: the data set's)")
    p.add_argument("--noise", default="fixed", help="observation noise σ²: fixed (the data set's) or a number > 0")
    p.add_argument("--eval-samples", type=positive_int, default=2000, help="importance samples per test point")
    p.add_argument("--counterfactuals", type=nonneg_int, default=5, help="counterfactual examples stored")
    p.add_argument("--data-dir", default=None, help="folder with the UCI files (default: the cache, downloading if needed)")
    p.add_argument("--out", default="runs", help="runs folder (created if missing)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    # deprecated spellings, kept working: --objective (now --method), --lagging (--method lin),
    # --lin-threshold/--lin-window (--option threshold=/window=), --noise-var (--noise)
    p.add_argument("--objective", choices=("elbo", "iwae"), default=None, help=argparse.SUPPRESS)
    p.add_argument("--lagging", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--lin-threshold", type=finite_float, default=None, help=argparse.SUPPRESS)
    p.add_argument("--lin-window", type=positive_int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--noise-var", type=positive_float, default=None, help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_train_m2, flag_names={
        **flags_of(p), "objective": "--method", "lagging": "--method", "lin_threshold": "--option threshold",
        "lin_window": "--option window", "noise_var": "--noise", "z_given_y": "--z-encoder", "name": "dataset",
        "runs_dir": "--out", "num_particles": "--particles",
    })
