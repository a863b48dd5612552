"""``pyro-vae fit-data`` and ``pyro-vae diagnose``: the papers' guidelines on a user's data and model.

``fit-data FILE`` trains a VAE on a CSV/NPZ/NPY file through the ordinary pipeline and stores
it as a run. ``diagnose RUN`` (a folder of ``train`` or ``fit-data``), ``diagnose RUN --data
FILE`` (that model on other data) or ``diagnose --data FILE`` (fit first, then diagnose) runs
the checks of :mod:`pyro_vae.diagnose` and prints a report (text, or ``--json``), optionally
with a one-page PNG summary (``--plot``). Every flag is checked before any work; a bad one
exits with code 2 and one line naming it, and nothing is written.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pyro_vae.cli.common import add_command
from pyro_vae.io import atomic_write_bytes, dumps_json

NOISES = ("learned", "fixed", "posthoc")


def _int(flag: str, text: str, minimum: int = 1) -> int:
    try:
        value = int(text)
    except (TypeError, ValueError):
        value = None
    if value is None or value < minimum:
        raise ValueError(f"{flag} {text!r}: expected an integer >= {minimum}")
    return value


def _float(flag: str, text: str | None) -> float | None:
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value < float("inf"):
        raise ValueError(f"{flag} {text!r}: expected a positive number")
    return value


def parse_latent_dims(text: str | None) -> list[int] | None:
    """``"1,2,3"`` → ``[1, 2, 3]``: at least two distinct positive integers."""
    if text is None:
        return None
    try:
        dims = [int(part) for part in text.split(",")]
    except ValueError:
        dims = []
    if len(dims) < 2 or len(set(dims)) != len(dims) or min(dims) < 1:
        raise ValueError(f"--latent-dims {text!r}: expected two or more distinct positive integers, e.g. 1,2,3")
    return sorted(dims)


def parse_checks(text: str | None) -> tuple[str, ...]:
    from pyro_vae.diagnose.api import CHECKS

    if text is None:
        return CHECKS
    names = tuple(part.strip() for part in text.split(",") if part.strip())
    bad = [n for n in names if n not in CHECKS]
    if bad or not names:
        raise ValueError(f"--checks {text!r}: expected a comma-separated selection of {', '.join(CHECKS)}")
    return names


def _check_plot(path: str | None) -> None:
    if path is None:
        return
    if not path.lower().endswith(".png"):
        raise ValueError(f"--plot {path!r}: expected a file name ending in .png")
    parent = Path(path).resolve().parent
    if not parent.is_dir():
        raise ValueError(f"--plot {path!r}: folder {str(parent)!r} does not exist")


def _fit_options(args: argparse.Namespace, epochs_flag: str) -> dict:
    if args.noise not in NOISES:
        raise ValueError(f"--noise {args.noise!r}: expected one of {', '.join(NOISES)}")
    noise_var = _float("--noise-var", args.noise_var)
    if args.noise == "fixed" and noise_var is None:
        raise ValueError("--noise fixed: give the variance with --noise-var (e.g. from domain knowledge, 004 §9 item 2)")
    return dict(
        labels=args.labels, latent_dim=_int("--latent-dim", args.latent_dim), noise=args.noise, noise_var=noise_var,
        epochs=_int(epochs_flag, getattr(args, epochs_flag.lstrip("-").replace("-", "_"))),
        seed=_int("--seed", args.seed, 0), device=args.device,
    )


def _fit_config(path: str, options: dict, data_flag: str = "--data", **extra):
    from pyro_vae.diagnose.fit import fit_data_config

    try:
        return fit_data_config(path, **options, **extra)
    except ValueError as err:
        text = str(err)
        flag = "--labels" if options.get("labels") is not None and "labels" in text else data_flag
        if text.startswith("device="):
            flag = "--device"
        raise ValueError(f"{flag}: {text}") from None


# --------------------------------------------------------------------------- fit-data
def cmd_fit_data(args: argparse.Namespace) -> int:
    from pyro_vae.diagnose.fit import fit_data

    options = _fit_options(args, "--epochs")
    extra = dict(restarts=_int("--restarts", args.restarts), lr=_float("--lr", args.lr),
                 eval_samples=_int("--eval-samples", args.eval_samples), data_seed=_int("--data-seed", args.data_seed, 0))
    config = _fit_config(args.file, options, "FILE", **extra)
    summary = fit_data(config, args.out, progress=not args.quiet)
    if args.json:
        print(dumps_json(summary, nonfinite="null"))
    else:
        m = summary["metrics"]
        print(f"run: {summary['run_dir']}")
        print(f"test ELBO {m['test_elbo']:.4f}, test log-lik (IS) {m['test_loglik']:.4f} ± {m['test_loglik_se']:.4f}"
              + ("" if m.get("test_loglik_exact") is None else f", quadrature {m['test_loglik_exact']:.4f}")
              + f"; σ² {', '.join(f'{v:.3g}' for v in m['noise_var'])}")
        print(f"next: pyro-vae diagnose {summary['run_dir']}")
    return 0


# --------------------------------------------------------------------------- diagnose
def cmd_diagnose(args: argparse.Namespace) -> int:
    from pyro_vae.diagnose import api
    from pyro_vae.diagnose.data import load_subject
    from pyro_vae.diagnose.fit import fit_data, latent_variant
    from pyro_vae.pipeline import load_trained

    if args.run is None and args.data is None:
        raise ValueError("RUN: give a run folder (from `train` or `fit-data`), or --data FILE to fit one first")
    latent_dims = parse_latent_dims(args.latent_dims)
    checks = parse_checks(args.checks)
    max_points = _int("--max-points", args.max_points, 10)
    particles = _int("--particles", args.particles, 10)
    khat_points = _int("--khat-points", args.khat_points)
    family_epochs = _int("--family-epochs", args.family_epochs)
    seed = _int("--seed", args.seed, 0)
    _check_plot(args.plot)
    from pyro_vae.inference import resolve_device

    try:
        resolve_device(args.device)
    except ValueError as err:
        raise ValueError(f"--device: {err}") from None
    fit_config = None
    if args.run is None:
        fit_config = _fit_config(args.data, _fit_options(args, "--fit-epochs"))
    elif not Path(args.run).is_dir() or not (Path(args.run) / "config.json").is_file():
        raise ValueError(f"RUN {args.run!r}: not a run folder (no config.json); give a folder made by `train` or `fit-data`")
    runs_dir = args.runs_dir or (str(Path(args.run).resolve().parent) if args.run else "runs")

    # ---- work starts here: every flag has been checked
    run_dir = args.run
    if fit_config is not None:
        run_dir = fit_data(fit_config, runs_dir, progress=not args.quiet)["run_dir"]
    subject = load_subject(run_dir, data=args.data if args.run else None, labels=args.labels if args.run else None,
                           max_points=max_points, seed=seed, device=args.device)
    if args.run is None and subject.labelled is None and args.labels:
        raise ValueError(f"--labels {args.labels!r}: the fitted run kept no labels")
    latent_models = None
    if latent_dims and "latent" in checks:
        latent_models = {}
        for k in latent_dims:
            path = latent_variant(subject.config, k, runs_dir, progress=not args.quiet)
            _, _, model, guide, _ = load_trained(path, args.device)
            latent_models[k] = (model, guide)
    report = api.diagnose(
        subject.model, subject.guide, subject.x_eval, x_train=subject.x_train, labelled=subject.labelled,
        latent_models=latent_models, checks=checks, num_particles=particles, khat_points=khat_points,
        family_epochs=family_epochs, seed=seed, context={**subject.source, "run": str(run_dir)},
    )
    if args.plot:
        from pyro_vae.plots.common import figure_png_bytes
        from pyro_vae.plots.diagnose import diagnosis_figure

        atomic_write_bytes(args.plot, figure_png_bytes(diagnosis_figure(report)))
    print(dumps_json(report.to_dict(), nonfinite="null") if args.json else report.text())
    return 0


def add_parsers(sub) -> None:
    """Register ``fit-data`` and ``diagnose`` on the ``pyro-vae`` sub-parsers."""
    p = add_command(sub, "fit-data", "train a VAE on your own data file (CSV/NPZ/NPY), stored as a run")
    p.add_argument("file", help="data file: .csv with a header row, .npz (array x) or .npy (2-D)")
    p.add_argument("--labels", default=None, help="labels column (CSV name, NPZ array, NPY column index); not trained on")
    p.add_argument("--latent-dim", default="1", help="K of the model (default 1)")
    p.add_argument("--noise", default="learned", help="learned (jointly, per dimension; default), fixed or posthoc (Eq. 9)")
    p.add_argument("--noise-var", default=None, help="σ² (fixed) or its initial value (default 1%% of the mean column variance)")
    p.add_argument("--epochs", default="100", help="passes over the training rows")
    p.add_argument("--restarts", default="1", help="random initialisations trained as one batch")
    p.add_argument("--lr", default="1e-3", help="Adam's learning rate")
    p.add_argument("--eval-samples", default="1000", help="importance samples per test point")
    p.add_argument("--seed", default="0", help="seed of initialisation, minibatches and sampling")
    p.add_argument("--data-seed", default="0", help="shuffles the rows into train/validation/test (5:2:2)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    p.add_argument("--out", default="runs", help="runs folder")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_fit_data)

    p = add_command(sub, "diagnose", "check a model against the papers' failure modes (004 §9)")
    p.add_argument("run", nargs="?", default=None, help="run folder (from `train` or `fit-data`)")
    p.add_argument("--data", default=None, help="data file (CSV/NPZ/NPY): the run's model on these points, or fit one first")
    p.add_argument("--labels", default=None, help="labels column of --data, for the semi-supervised check")
    p.add_argument("--latent-dims", default=None, help="compare K values, e.g. 1,2,3 (trains the missing runs)")
    p.add_argument("--checks", default=None, help="comma-separated subset of posterior,floor,khat,family,residuals,noise,latent,classes")
    p.add_argument("--max-points", default="1000", help="held-out points the checks use")
    p.add_argument("--particles", default="1000", help="draws of q per point")
    p.add_argument("--khat-points", default="200", help="points for PSIS k̂")
    p.add_argument("--family-epochs", default="10", help="training epochs of the richer family")
    p.add_argument("--latent-dim", default="1", help="with --data and no RUN: K of the model to fit")
    p.add_argument("--noise", default="learned", help="with --data and no RUN: learned, fixed or posthoc")
    p.add_argument("--noise-var", default=None, help="with --data and no RUN: σ² (fixed) or its initial value")
    p.add_argument("--fit-epochs", default="100", help="with --data and no RUN: training epochs")
    p.add_argument("--runs-dir", default=None, help="where fitted runs go (default: RUN's runs folder, or ./runs)")
    p.add_argument("--seed", default="0", help="seed of the checks' draws")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    p.add_argument("--plot", default=None, help="write a one-page PNG summary")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_diagnose)
