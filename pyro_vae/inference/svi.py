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

import time
from typing import Callable, NamedTuple

import pyro
import pyro.poutine as poutine
import torch
from torch import nn
from tqdm.auto import tqdm

from pyro_vae.inference.objectives import VariationalObjective
from pyro_vae.models import unregistered


class TrainingError(RuntimeError):
    """Training produced a non-finite loss; says at which step and restart."""


class StepInfo(NamedTuple):
    loss: torch.Tensor  # per restart, summed over the minibatch


class TrainResult(NamedTuple):
    """What :func:`train` returns.

    ``history`` holds one row per epoch and restart: epoch, restart, train_loss (negative
    objective per data point, averaged over the epoch), val_objective (per data point).
    """

    history: list[dict]
    val_objective: torch.Tensor  # (R,) per data point, higher is better
    best_restart: int
    steps: int
    seconds: float


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
    """Trainable tensors of Pyro programs: module parameters plus any ``pyro.param`` they use."""
    params: dict[int, torch.Tensor] = {}
    for prog in programs:
        if isinstance(prog, nn.Module):
            for p in prog.parameters():
                params.setdefault(id(p), p)
    if example_args:
        with poutine.trace(param_only=True) as tr:
            for prog in programs:
                prog(*example_args)
        for site in tr.trace.nodes.values():
            p = site["value"].unconstrained()
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
    x_train: torch.Tensor,
    x_val: torch.Tensor | None = None,
    *,
    objective: str = "elbo",
    num_particles: int = 1,
    beta: float = 1.0,
    anneal_epochs: int = 0,
    epochs: int = 100,
    batch_size: int = 100,
    lr: float = 1e-3,
    seed: int = 0,
    progress: bool = True,
    callback: Callable[[int, dict], None] | None = None,
    trainable: list[torch.Tensor] | None = None,
) -> TrainResult:
    """Fit ``model`` and ``guide`` by SVI; see the module docstring.

    Parameters
    ----------
    model, guide : callable
        Pyro programs ``model(x)``, ``guide(x)`` (e.g. :class:`pyro_vae.models.VAEModel`,
        :class:`guides.mean_field.MeanFieldGuide`, or any callable with the same sites).
    x_train, x_val : Tensor
        ``(N, D)`` data on the device the model lives on. ``x_val`` defaults to ``x_train``.
    objective : {"elbo", "iwae", "beta"}
        ``"iwae"`` uses ``num_particles`` importance samples; ``"beta"`` scales the latent
        site by ``beta``, warmed up linearly from 0 over ``anneal_epochs`` when > 0.
    epochs, batch_size, lr, seed :
        Adam's learning rate; ``seed`` fixes the minibatch order and Pyro's sampling.
    trainable : list of Tensor, optional
        Restrict the optimiser to these tensors (e.g. the guide's, for a fixed model).

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
    if objective not in ("elbo", "iwae", "beta"):
        raise ValueError(f"objective={objective!r}: expected one of 'elbo', 'iwae', 'beta'")
    _check_positive_int("epochs", epochs)
    _check_positive_int("batch_size", batch_size)
    _check_positive_int("num_particles", num_particles)
    if not isinstance(anneal_epochs, int) or anneal_epochs < 0:
        raise ValueError(f"anneal_epochs={anneal_epochs!r}: expected a non-negative integer")
    if not (isinstance(lr, (int, float)) and lr > 0):
        raise ValueError(f"lr={lr!r}: expected a positive number")
    if not beta > 0:
        raise ValueError(f"beta={beta!r}: expected a positive number")
    if x_train.dim() != 2 or x_train.shape[0] == 0:
        raise ValueError(f"x_train of shape {tuple(x_train.shape)}: expected (N, D) with N > 0")
    n = x_train.shape[0]
    if batch_size > n:
        raise ValueError(f"batch_size={batch_size}: larger than the {n} training points")
    x_val = x_train if x_val is None else x_val

    kind = "iwae" if objective == "iwae" else "elbo"
    particles = num_particles if objective == "iwae" else 1
    val_particles = particles

    pyro.set_rng_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    params = trainable if trainable is not None else collect_parameters(model, guide, example_args=(x_train[:2],))
    if not params:
        raise ValueError("model and guide have no trainable parameters")
    optim = torch.optim.Adam(params, lr=lr)
    steps_per_epoch = -(-n // batch_size)
    anneal_steps = anneal_epochs * steps_per_epoch
    restarts = _num_restarts(model)
    history: list[dict] = []
    val = torch.full((restarts,), float("nan"))
    step = 0
    start = time.perf_counter()
    with unregistered():
        bar = tqdm(range(1, epochs + 1), desc=f"train {objective}", disable=not progress, leave=False, unit="epoch")
        for epoch in bar:
            order = torch.randperm(n, generator=gen).to(x_train.device)
            epoch_loss = torch.zeros(restarts, device=x_train.device)
            for i in range(steps_per_epoch):
                idx = order[i * batch_size : (i + 1) * batch_size]
                step_beta = beta if objective == "beta" else 1.0
                if objective == "beta" and anneal_steps:
                    step_beta = beta * min(1.0, (step + 1) / anneal_steps)
                elbo = VariationalObjective(kind, particles, step_beta)
                try:
                    per_restart = -elbo.per_point(model, guide, x_train[idx]).sum(-1)  # (R,)
                except ValueError as err:  # Pyro's validation meets a NaN before the loss does
                    if "invalid values" not in str(err):
                        raise
                    first_line = str(err).splitlines()[0]
                    raise TrainingError(f"non-finite values at step {step + 1} (epoch {epoch}): {first_line}") from err
                if not torch.isfinite(per_restart).all():
                    bad = int((~torch.isfinite(per_restart)).nonzero()[0, 0])
                    raise TrainingError(
                        f"loss is {per_restart[bad].item()} at step {step + 1} (epoch {epoch}) in restart {bad}; "
                        "nothing was saved"
                    )
                optim.zero_grad(set_to_none=True)
                per_restart.sum().backward()
                optim.step()
                epoch_loss += per_restart.detach()
                step += 1
            val = validation_objective(model, guide, x_val, objective, val_particles, beta)
            train_loss = (epoch_loss / n).cpu()
            for r in range(restarts):
                row = {"epoch": epoch, "restart": r, "train_loss": float(train_loss[r]), "val_objective": float(val[r])}
                history.append(row)
                if callback is not None:
                    callback(step, row)
            bar.set_postfix(loss=f"{train_loss.min().item():.4f}", val=f"{val.max().item():.4f}")
    best = int(torch.nan_to_num(val, nan=-float("inf")).argmax())
    return TrainResult(history, val, best, step, time.perf_counter() - start)


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
    total = 0.0
    with torch.no_grad():
        for chunk in torch.split(x, batch_size):
            total = total + elbo.per_point(model, guide, chunk).sum(-1)
    return (total / x.shape[0]).reshape(-1).cpu()
