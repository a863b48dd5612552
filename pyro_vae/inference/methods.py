"""The inference methods behind ``pyro-vae train --method NAME``.

Each method is a :class:`Method`: a function ``fit(model, guide, x_train, x_val, config,
progress) -> TrainResult`` and the options it reads from ``config.options`` with their
defaults. ``config`` is a :class:`pyro_vae.pipeline.RunConfig` (common fields: epochs,
batch_size, lr, seed, particles, beta, anneal_epochs). A new method registers itself with
:func:`register_method`; the pipeline, the CLI and the run store then know it.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

from pyro_vae.inference.svi import TrainResult, train


class Method(NamedTuple):
    fit: Callable[..., TrainResult]
    options: dict[str, Any]  # option name -> default
    description: str
    checks: Callable[[dict], None] | None = None  # raises ValueError for bad option values
    groupable: bool = False  # fit(..., group=Group) trains a group of runs in one vectorised loop
    grouped_options: tuple[str, ...] = ()  # options that may differ between the runs of a group
    grouped_fields: tuple[str, ...] = ()  # run settings (RunConfig fields) that may differ, e.g. β


class Group(NamedTuple):
    """Runs trained together: their minibatch seeds and restart counts, in the model's order
    (``x_train``/``x_val`` are then one tensor per run), each run's resolved options (which
    may differ in the method's ``grouped_options``) and its ``grouped_fields`` values."""

    seeds: list[int]
    restarts: list[int]
    options: list[dict] | None = None
    fields: list[dict] | None = None


METHODS: dict[str, Method] = {}


def register_method(name: str, method: Method) -> None:
    """Make ``name`` available to ``train_and_evaluate`` and ``pyro-vae train --method``."""
    METHODS[name] = method


def resolve_options(name: str, options: dict) -> dict:
    """The method's defaults updated by ``options``; unknown names or bad values raise ValueError."""
    if name not in METHODS:
        raise ValueError(f"method={name!r}: expected one of {sorted(METHODS)}")
    method = METHODS[name]
    unknown = sorted(set(options) - set(method.options))
    if unknown:
        allowed = sorted(method.options) or "none"
        raise ValueError(f"option {unknown[0]!r} is not one of method {name!r}'s options: {allowed}")
    resolved = {**method.options, **options}
    if method.checks is not None:
        method.checks(resolved)
    return resolved


def group_kwargs(config, group: Group | None) -> dict[str, Any]:
    """The trainer's ``seed`` (and ``group_restarts``) for one run or a group."""
    if group is None:
        return {"seed": config.seed}
    return {"seed": list(group.seeds), "group_restarts": list(group.restarts)}


def group_beta(config, group: Group | None) -> float | list[float]:
    """β of a run, or one β per run of a group whose runs may differ in it."""
    if group is None or not group.fields or "beta" not in group.fields[0]:
        return config.beta
    return [f["beta"] for f in group.fields]


def _svi(objective: str) -> Callable[..., TrainResult]:
    def fit(model, guide, x_train, x_val, config, progress: bool = True, group: Group | None = None) -> TrainResult:
        return train(
            model, guide, x_train, x_val,
            objective=objective, num_particles=config.particles, beta=group_beta(config, group),
            anneal_epochs=config.anneal_epochs, epochs=config.epochs, batch_size=config.batch_size,
            lr=config.lr, progress=progress, val_every=getattr(config, "val_every", 1), **group_kwargs(config, group),
        )

    return fit


register_method("vae", Method(_svi("elbo"), {}, "MFG-VAE: the ELBO (Trace_ELBO-equivalent)", groupable=True))
register_method("iwae", Method(_svi("iwae"), {}, "IWAE bound with --particles S (Burda et al. 2016)", groupable=True))
register_method("beta", Method(_svi("beta"), {}, "β-VAE with --beta and optional --anneal-epochs warm-up",
                               groupable=True, grouped_fields=("beta",)))
