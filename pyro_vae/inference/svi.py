"""One SVI loop for every objective, with restarts as a batch dimension.

``train(model, guide, x_train, x_val, objective=...)`` runs Adam (lr 1e-3, minibatches of
100; 004 Appendix D) over epochs. With a restart-batched model and guide (``num_restarts=R``)
the R independent initialisations train in one vectorised loop: the loss is the *sum* of the
per-restart losses, the restarts share no parameter and Adam is element-wise, so every
restart follows the trajectory of a single run with the same initialisation, minibatch order
and noise. The validation objective is kept per restart and selects the best one (the papers'
protocol: "select the run that yielded the best value on the training objective, computed on
the validation set", 004 Appendix D).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import pyro
import pyro.poutine as poutine
import torch
from torch import nn

from guides.restarts import check_restart_guide
from pyro_vae import checks
from pyro_vae.inference.objectives import VariationalObjective
from pyro_vae.models import recorded_modules
from pyro_vae.inference.trainer import (
    Minibatches, TrainingError, TrainResult, finite_loss, make_optimizer, run_epochs,
)

__all__ = ["TrainResult", "TrainingError", "collect_parameters", "resolve_device", "train", "validation_objective"]


def resolve_device(device: str | torch.device) -> torch.device:
    """``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"`` (CUDA when available) as a torch device."""
    if isinstance(device, torch.device):
        device = str(device)
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cpu":
        return torch.device("cpu")
    if isinstance(device, str) and device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"device={device!r}: CUDA is not available on this machine; allowed here: 'cpu', 'auto'")
        dev = torch.device(device)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device={device!r}: only {torch.cuda.device_count()} CUDA device(s) present")
        return dev
    raise ValueError(f"device={device!r}: expected 'cpu', 'cuda', 'cuda:N' or 'auto'")


def collect_parameters(*programs: Callable, example_args: tuple = ()) -> list[nn.Parameter]:
    """Trainable tensors of Pyro programs: module parameters plus any ``pyro.param`` they use.

    The programs run once with this package's modules unregistered (their parameters are read
    off the modules they would register): Pyro's param store may still hold, under the same
    names, the tensors of a model trained earlier in this process, of another shape.
    """
    params: dict[int, torch.Tensor] = {}
    for prog in programs:
        if isinstance(prog, nn.Module):
            for p in prog.parameters():
                params.setdefault(id(p), p)
    if example_args:  # run once to see their pyro.params, on a forked random stream, validating nothing
        dev = next((a.device for a in example_args if isinstance(a, torch.Tensor)), torch.device("cpu"))
        cuda = [dev.index if dev.index is not None else torch.cuda.current_device()] if dev.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda), pyro.validation_enabled(False), recorded_modules() as modules, \
                poutine.trace(param_only=True) as tr:
            for prog in programs:
                prog(*example_args)
        for module in modules:
            for p in module.parameters():
                if p.requires_grad:
                    params.setdefault(id(p), p)
        for site in tr.trace.nodes.values():
            value = site["value"]
            p = value.unconstrained() if hasattr(value, "unconstrained") else value  # a PyroModule's local param
            if p.requires_grad:
                params.setdefault(id(p), p)
    return list(params.values())


def _check_positive_int(name: str, value) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name}={value!r}: expected a positive integer")


def _num_restarts(model) -> int:
    return getattr(model, "num_restarts", None) or 1


def train(
    model: Callable,
    guide: Callable,
    x_train: torch.Tensor | Sequence[torch.Tensor],
    x_val: torch.Tensor | Sequence[torch.Tensor] | None = None,
    *,
    objective: str = "elbo",
    num_particles: int = 1,
    beta: float | Sequence[float] = 1.0,
    anneal_epochs: int = 0,
    epochs: int = 100,
    batch_size: int = 100,
    lr: float = 1e-3,
    seed: int | Sequence[int] = 0,
    progress: bool = True,
    callback: Callable[[int, dict], None] | None = None,
    trainable: list[torch.Tensor] | None = None,
    optimizer: Any = None,
    val_every: int = 1,
    group_restarts: Sequence[int] | None = None,
) -> TrainResult:
    """Fit ``model`` and ``guide`` by SVI; see the module docstring.

    Parameters
    ----------
    model, guide : callable
        Pyro programs ``model(x)``, ``guide(x)`` (e.g. :class:`pyro_vae.models.VAEModel`,
        :class:`guides.mean_field.MeanFieldGuide`, or any callable with the same sites).
    x_train, x_val : Tensor
        ``(N, D)`` data on the device the model lives on. ``x_val`` defaults to ``x_train``.
        For a *group* of runs trained together, one tensor per run (see ``group_restarts``).
    objective : {"elbo", "iwae", "beta"}
        ``"iwae"`` uses ``num_particles`` importance samples; ``"beta"`` scales the latent
        site by ``beta``, warmed up linearly from 0 over ``anneal_epochs`` when > 0. For a
        group (``group_restarts``), ``beta`` may be one value per run.
    epochs, batch_size, lr, seed :
        Adam's learning rate; ``seed`` fixes the minibatch order and Pyro's sampling (one
        seed per run for a group).
    trainable : list of Tensor, optional
        Restrict the optimiser to these tensors (e.g. the guide's, for a fixed model).
    optimizer : optional
        See :func:`pyro_vae.inference.trainer.make_optimizer` (default Adam with ``lr``).
    val_every : int
        Validate every this many epochs (and always after the last, which selects).
    group_restarts : sequence of int, optional
        For a group: the restarts of each run, in the model's restart order; run g's
        restarts see only ``x_train[g]``'s minibatches (in the order its own seed gives).

    Returns
    -------
    TrainResult

    Raises
    ------
    ValueError
        Bad arguments, before any work.
    TrainingError
        A non-finite loss; the message names the step, epoch and restart.
    """
    per_run_beta = isinstance(beta, (list, tuple))
    if per_run_beta and (group_restarts is None or len(beta) != len(group_restarts)):
        raise ValueError(f"beta={beta!r}: one value per run needs a group with as many runs (group_restarts="
                         f"{group_restarts!r})")
    for b in beta if per_run_beta else [beta]:
        checks.positive_number("beta", b)
    x_train, x_val = checks.training_data(model, guide, x_train, x_val, lr=lr, epochs=epochs,
                                          batch_size=batch_size, num_particles=num_particles)
    if objective not in ("elbo", "iwae", "beta"):
        raise ValueError(f"objective={objective!r}: expected one of 'elbo', 'iwae', 'beta'")
    _check_positive_int("epochs", epochs)
    _check_positive_int("batch_size", batch_size)
    _check_positive_int("num_particles", num_particles)
    _check_positive_int("val_every", val_every)
    if not isinstance(anneal_epochs, int) or anneal_epochs < 0:
        raise ValueError(f"anneal_epochs={anneal_epochs!r}: expected a non-negative integer")
    if not (isinstance(lr, (int, float)) and lr > 0):
        raise ValueError(f"lr={lr!r}: expected a positive number")
    batches, x_val = _minibatches(model, x_train, x_val, batch_size, seed, group_restarts)
    if per_run_beta:  # (R, 1): each restart's latent log-densities scaled by its run's β
        beta = torch.tensor([float(b) for b in beta]).repeat_interleave(torch.tensor(list(group_restarts)))
        beta = beta.reshape(-1, 1).to(device=batches.device, dtype=batches.xs[0].dtype)
    example = batches.batch_example()
    check_restart_guide(model, guide, example)  # one guide shared by R restarts is refused

    kind = "iwae" if objective == "iwae" else "elbo"
    particles = num_particles if objective == "iwae" else 1
    params = trainable if trainable is not None else collect_parameters(model, guide, example_args=(example,))
    if not params:
        raise ValueError("model and guide have no trainable parameters")
    optim = make_optimizer(params, optimizer, lr)
    anneal_steps = anneal_epochs * batches.steps_per_epoch
    state = {"step": 0, "epoch": 0}

    def step(xb: torch.Tensor, i: int) -> torch.Tensor:
        step_beta = beta if objective == "beta" else 1.0
        if objective == "beta" and anneal_steps:
            step_beta = beta * min(1.0, (state["step"] + 1) / anneal_steps)
        where = f"step {state['step'] + 1} (epoch {state['epoch']})"
        per_restart = finite_loss(  # (R,)
            lambda: -VariationalObjective(kind, particles, step_beta).per_point(model, guide, xb).sum(-1), where)
        optim.zero_grad(set_to_none=True)
        per_restart.sum().backward()
        optim.step()
        state["step"] += 1
        return per_restart

    def start_epoch(epoch: int) -> None:
        state["epoch"] = epoch

    return run_epochs(
        step, batches, epochs=epochs, num_restarts=_num_restarts(model), seed=_first(seed),
        validate=lambda: validation_objective(model, guide, x_val, objective, particles, beta),
        val_every=val_every, on_epoch_start=start_epoch, desc=f"train {objective}", progress=progress, callback=callback,
    )


def _first(seed) -> int:
    return int(seed[0]) if isinstance(seed, (list, tuple)) else int(seed)


def _minibatches(model, x_train, x_val, batch_size: int, seed, group_restarts) -> tuple[Minibatches, Any]:
    """Checked minibatches of one run's data or of a group's, and the validation data to match."""
    grouped = not torch.is_tensor(x_train)
    xs = list(x_train) if grouped else [x_train]
    for x in xs:
        if not torch.is_tensor(x) or x.dim() != 2 or x.shape[0] == 0:
            shape = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
            raise ValueError(f"x_train of shape {shape}: expected (N, D) with N > 0")
        if batch_size > x.shape[0]:
            raise ValueError(f"batch_size={batch_size}: larger than the {x.shape[0]} training points")
    if not grouped:
        return Minibatches(x_train, batch_size, _first(seed)), (x_train if x_val is None else x_val)
    restarts = list(group_restarts or [])
    if len(restarts) != len(xs) or sum(restarts) != _num_restarts(model):
        raise ValueError(f"group_restarts={group_restarts!r}: expected one count per data set ({len(xs)}) summing to "
                         f"the model's {_num_restarts(model)} restarts")
    seeds = list(seed) if isinstance(seed, (list, tuple)) else [seed] * len(xs)
    x_val = xs if x_val is None else list(x_val)
    return Minibatches(xs, batch_size, seeds, restarts), GroupedData(x_val, restarts)


class GroupedData:
    """Validation data of a group: each run's ``(N, D)`` tensor repeated over its restarts."""

    def __init__(self, xs: Sequence[torch.Tensor], restarts: Sequence[int]):
        if len({x.shape[0] for x in xs}) != 1:
            raise ValueError("the runs of a group need equal validation sizes")
        self.stacked = torch.cat([x.unsqueeze(0).expand(r, -1, -1) for x, r in zip(xs, restarts)], 0)
        self.shape = self.stacked.shape


def validation_objective(
    model: Callable,
    guide: Callable,
    x: torch.Tensor,
    objective: str = "elbo",
    num_particles: int = 1,
    beta: float = 1.0,
    batch_size: int = 1000,
) -> torch.Tensor:
    """The training objective per data point on ``x``, one value per restart ``(R,)``."""
    kind = "iwae" if objective == "iwae" else "elbo"
    scale = beta if objective == "beta" else 1.0
    elbo = VariationalObjective(kind, num_particles if kind == "iwae" else 1, scale)
    if isinstance(x, GroupedData):
        x = x.stacked
    total = 0.0
    with torch.no_grad():
        for chunk in torch.split(x, batch_size, dim=-2):
            total = total + elbo.per_point(model, guide, chunk).sum(-1)
    return (total / x.shape[-2]).reshape(-1).cpu()
