"""``pyro-vae train-m2``: the semi-supervised M2 model on the semi-circles and the UCI sets.

    pyro-vae train-m2 discrete_semicircle --guide enum --objective iwae --particles 20 \\
        --alpha 0.1 --gamma 1 --labelled-fraction 0.1 --restarts 5
    pyro-vae train-m2 titanic --guide relaxed --split 2 --data-dir ../shared/data/uci
    pyro-vae train-m2 discrete_semicircle --lagging --lin-threshold 0.05 --lin-window 10

Bad input prints one error line naming the argument and exits with code 2 before anything is
written (through the ``pyro-vae`` entry point's handler).
"""

from __future__ import annotations

import argparse

import pyro_vae.inference.m2  # noqa: F401  registers the 'm2' pointer of `pyro-vae train --method`
from guides.m2 import PAPER_TEMPERATURE


def _config_from_args(args: argparse.Namespace):
    from pyro_vae.pipeline_m2 import M2Config

    return M2Config(
        dataset=args.dataset,
        guide=args.guide,
        objective=args.objective,
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
        noise_var=args.noise_var,
        eval_samples=args.eval_samples,
        counterfactuals=args.counterfactuals,
        data_dir=args.data_dir,
        lagging=args.lagging,
        lin_threshold=args.lin_threshold,
        lin_window=args.lin_window,
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
    from pyro_vae.io import dumps_json
    from pyro_vae.pipeline_m2 import train_and_evaluate_m2

    config = _config_from_args(args)
    config.validate()
    summary = train_and_evaluate_m2(config, args.out, progress=not args.quiet)
    print(dumps_json(summary, nonfinite="null")) if args.json else _print_summary(summary)
    return 0


def add_parsers(sub) -> None:
    """Add ``train-m2`` to the ``pyro-vae`` subcommands."""
    p = sub.add_parser("train-m2", help="train the semi-supervised M2 model (004 §7) and evaluate it")
    p.add_argument("dataset", help="discrete_semicircle, continuous_semicircle, diabetic_retinopathy, contraceptive or titanic")
    p.add_argument("--guide", default="auto",
                   help="q(y|x): enum (exact enumeration) or relaxed (Concrete) for a discrete label, gaussian for a "
                        "continuous one; auto = enum / gaussian")
    p.add_argument("--objective", default="elbo", help="elbo (Eqs. 12-13) or iwae (Eqs. 14-15 of 004)")
    p.add_argument("--alpha", type=float, default=0.1, help="weight of the classifier term (004 grid: 0, 0.1, 1)")
    p.add_argument("--gamma", type=float, default=1.0, help="weight of the labelled bound (004 grid: 0.5, 1, 2, 5)")
    p.add_argument("--labelled-fraction", type=float, default=0.1)
    p.add_argument("--particles", type=int, default=20, help="IWAE importance samples S")
    p.add_argument("--temperature", type=float, default=PAPER_TEMPERATURE, help="relaxed guide's temperature (004: 2.2)")
    p.add_argument("--straight-through", action="store_true", help="relaxed guide: one-hot draws, relaxed gradients")
    p.add_argument("--z-encoder", default="xy",
                   help="xy: q(z|x,y) (Kingma et al. 2014); x: q(z|x), the factorised q(y|x)q(z|x) of Eqs. 13, 15 of 004")
    p.add_argument("--lagging", action="store_true",
                   help="Lagging Inference Networks (He et al. 2019): aggressive guide-only inner loops (004 LIN)")
    p.add_argument("--lin-threshold", type=float, default=0.1, help="LIN inner-loop threshold T, nats per point")
    p.add_argument("--lin-window", type=int, default=5, help="LIN inner-loop window R (steps averaged)")
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--restarts", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-seed", type=int, default=0, help="semi-circle data version")
    p.add_argument("--split", type=int, default=0, help="UCI split, 0-4")
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    p.add_argument("--hidden", type=int, nargs="+", default=None, help="default 50 50 50 (semi-circles), 100 100 100 (UCI)")
    p.add_argument("--latent-dim", type=int, default=None, help="K (default: the data set's)")
    p.add_argument("--noise-var", type=float, default=None, help="σ² (default: the data set's)")
    p.add_argument("--eval-samples", type=int, default=2000)
    p.add_argument("--counterfactuals", type=int, default=5, help="counterfactual examples stored")
    p.add_argument("--data-dir", default=None, help="folder with the UCI files (default: the cache, downloading if needed)")
    p.add_argument("--out", default="runs", help="runs folder")
    p.add_argument("--json", action="store_true")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train_m2)
