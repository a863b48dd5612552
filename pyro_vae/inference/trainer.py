"""The one training engine: epoch loop, minibatches, NaN guard, validation, history, progress.

Every method (ELBO, IWAE, β, LIN and its segment variant, LiBI's steps, fixed-model guides,
the ground-truth initialisation, M2 with each guide) supplies only its *step*, a function
``step(batch) -> loss`` returning the per-restart loss summed over the minibatch, ``(R,)``,
after it has updated its parameters; :func:`run_epochs` does the rest:

* **Minibatches** (:class:`Minibatches`): each epoch visits the training split once in a
  random order drawn from a generator seeded by ``seed`` (004 App. D: Adam, minibatches of
  100). A *group* of runs trains in one vectorised loop: each run's restarts draw their
  minibatches from their own data and their own generator, stacked along the restart
  dimension (``x`` of shape ``(R, B, D)``), so a run inside a group sees exactly the
  minibatches it would see alone.
* **The NaN guard** (:func:`check_finite`, :func:`guarded`): a non-finite loss, or Pyro's
  validation meeting a non-finite value first, raises :class:`TrainingError` naming the step,
  the epoch and the restart; nothing is saved as if finished.
* **Validation** every ``val_every`` epochs and always after the last one, on its own seeded
  random stream (so the cadence never changes what training sees), whose per-restart value selects the best restart (004 App. D: "the run that yielded the best value on the
  training objective, computed on the validation set").
* **History** one row per validated epoch and restart, with the method's extra columns.

Optimisers are pluggable (:func:`make_optimizer`): a ``torch.optim`` class, a
``pyro.optim.PyroOptim`` (its torch constructor and arguments are used on the tensors
directly), or any ``params -> optimizer`` factory; the default is Adam with lr 1e-3.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any, Callable, Iterator, NamedTuple, Sequence

import pyro
import torch
from tqdm.auto import tqdm

from pyro_vae.models import unregistered
from pyro_vae.rng import isolated_rng
from pyro_vae.runs.progress import report as report_progress


class TrainingError(RuntimeError):
    """Training produced a non-finite loss; says at which step and restart."""


class TrainResult(NamedTuple):
    """What every trainer returns.

    ``history`` holds one row per validated epoch and restart: epoch, restart, train_loss
    (negative objective per data point, averaged over the epoch), val_objective (per data
    point) and any columns the method adds.
    """

    history: list[dict]
    val_objective: torch.Tensor  # (R,) per data point, higher is better
    best_restart: int
    steps: int
    seconds: float


def check_finite(loss: torch.Tensor, where: str) -> None:
    """Raise :class:`TrainingError` if any restart's loss is not finite."""
    finite = torch.isfinite(loss)
    if not bool(finite.all()):
        bad = int((~finite).reshape(-1).nonzero()[0, 0])
        raise TrainingError(f"loss is {loss.reshape(-1)[bad].item()} at {where} in restart {bad}; nothing was saved")


@contextlib.contextmanager
def guarded(where: str) -> Iterator[None]:
    """Turn Pyro's validation error on a non-finite value into a :class:`TrainingError`."""
    try:
        yield
    except ValueError as err:
        if "invalid values" not in str(err):
            raise
        raise TrainingError(f"non-finite values at {where}: {str(err).splitlines()[0]}") from err


def finite_loss(compute: Callable[[], torch.Tensor], where: str) -> torch.Tensor:
    """``compute()`` under :func:`guarded`, then :func:`check_finite`: the loss, or a
    :class:`TrainingError` naming ``where``."""
    with guarded(where):
        loss = compute()
    check_finite(loss, where)
    return loss


def make_optimizer(params: Sequence[torch.Tensor], optimizer: Any = None, lr: float = 1e-3) -> torch.optim.Optimizer:
    """A torch optimiser over ``params``.

    ``optimizer`` is None (Adam, ``lr``), a ``torch.optim.Optimizer`` subclass (called with
    ``lr``), a :class:`pyro.optim.PyroOptim` (e.g. ``pyro.optim.ClippedAdam({"lr": 1e-3})``:
    its torch constructor with its arguments) or a callable ``params -> optimizer``.
    """
    params = list(params)
    if optimizer is None:
        return torch.optim.Adam(params, lr=lr)
    if isinstance(optimizer, pyro.optim.PyroOptim):
        args = optimizer.pt_optim_args
        if callable(args):
            raise ValueError("optimizer: a PyroOptim with per-parameter arguments (a callable) is not supported; "
                             "pass a dict of arguments")
        return optimizer.pt_optim_constructor(params, **args)
    if isinstance(optimizer, type) and issubclass(optimizer, torch.optim.Optimizer):
        return optimizer(params, lr=lr)
    if callable(optimizer):
        return optimizer(params)
    raise ValueError(f"optimizer={optimizer!r}: expected None, a torch.optim.Optimizer class, a pyro.optim.PyroOptim "
                     "or a callable params -> optimizer")


class Minibatches:
    """Shuffled minibatches of one run's data, or of a group of runs' data stacked by restart.

    Parameters
    ----------
    x : Tensor or sequence of Tensor
        ``(N, D)`` for one run; for a group, one ``(N, D)`` tensor per run (equal N).
    batch_size : int
    seeds : int or sequence of int
        The minibatch order's seed, one per run of the group.
    restarts : sequence of int, optional
        Restarts of each run of the group (their sum is the model's R); a run's minibatch is
        repeated over its restarts.
    """

    def __init__(self, x, batch_size: int, seeds, restarts: Sequence[int] | None = None):
        self.grouped = not torch.is_tensor(x)
        self.xs = list(x) if self.grouped else [x]
        seeds = list(seeds) if isinstance(seeds, (list, tuple)) else [seeds]
        if len(seeds) != len(self.xs):
            raise ValueError(f"seeds: {len(seeds)} given for {len(self.xs)} data sets")
        sizes = {t.shape[0] for t in self.xs}
        if len(sizes) != 1:
            raise ValueError(f"x: the runs of a group need equal training sizes, got {sorted(sizes)}")
        self.n = sizes.pop()
        self.batch_size = batch_size
        self.steps_per_epoch = -(-self.n // batch_size)
        self.generators = [torch.Generator().manual_seed(int(s)) for s in seeds]
        self.restarts = list(restarts) if restarts is not None else [1] * len(self.xs)
        self.device = self.xs[0].device
        self._orders: list[torch.Tensor] = []

    def new_epoch(self) -> None:
        """Draw each run's order for the next epoch."""
        self._orders = [torch.randperm(self.n, generator=g).to(self.device) for g in self.generators]

    def indices(self, i: int) -> list[torch.Tensor]:
        """The row indices of minibatch ``i`` of this epoch, one tensor per run."""
        b = self.batch_size
        return [order[i * b : (i + 1) * b] for order in self._orders]

    def batch(self, i: int) -> torch.Tensor:
        """Minibatch ``i``: ``(B, D)`` for one run, ``(R, B, D)`` for a group."""
        idx = self.indices(i)
        if not self.grouped:
            return self.xs[0][idx[0]]
        parts = [x[j].unsqueeze(0).expand(r, -1, -1) for x, j, r in zip(self.xs, idx, self.restarts)]
        return torch.cat(parts, 0)

    def batch_example(self) -> torch.Tensor:
        """The first two rows, shaped like a minibatch (to trace a model's ``pyro.param`` sites)."""
        if not self.grouped:
            return self.xs[0][:2]
        return torch.cat([x[:2].unsqueeze(0).expand(r, -1, -1) for x, r in zip(self.xs, self.restarts)], 0)

    def random_batch(self, generator: torch.Generator) -> torch.Tensor:
        """A fresh random minibatch (LIN's inner loop), drawn with ``generator`` for every run."""
        b = min(self.batch_size, self.n)
        if not self.grouped:
            return self.xs[0][torch.randperm(self.n, generator=generator)[:b].to(self.device)]
        parts = []
        for x, r in zip(self.xs, self.restarts):
            j = torch.randperm(self.n, generator=generator)[:b].to(self.device)
            parts.append(x[j].unsqueeze(0).expand(r, -1, -1))
        return torch.cat(parts, 0)

    @property
    def generator(self) -> torch.Generator:
        """The first run's generator (methods that draw per-epoch seeds use it, as a single run would)."""
        return self.generators[0]


class NearEqualBatches(Minibatches):
    """One run's shuffled data cut into ``⌈N/B⌉`` near-equal minibatches (``torch.tensor_split``):
    no short last batch, for objectives that need a minimum number of rows per batch (LiBI's
    Henze-Zirkler statistic needs K + 2)."""

    def indices(self, i: int) -> list[torch.Tensor]:
        return [order.tensor_split(self.steps_per_epoch)[i] for order in self._orders]


class IndexBatches(Minibatches):
    """Shuffled minibatches of row *indices* ``(B,)`` of one run's ``n`` rows (for data that is
    more than one tensor, e.g. M2's labelled splits)."""

    def __init__(self, n: int, batch_size: int, seed: int, device: torch.device | str = "cpu"):
        super().__init__(torch.empty(n, 0, device=device), batch_size, seed)

    def batch(self, i: int) -> torch.Tensor:
        return self.indices(i)[0]


def run_epochs(
    step: Callable[[torch.Tensor, int], torch.Tensor],
    batches: Minibatches,
    *,
    epochs: int,
    num_restarts: int,
    validate: Callable[[], torch.Tensor] | None = None,
    val_every: int = 1,
    on_epoch_start: Callable[[int], None] | None = None,
    on_epoch_end: Callable[[int], dict[str, list]] | None = None,
    seed: int | None = None,
    desc: str = "train",
    progress: bool = True,
    callback: Callable[[int, dict], None] | None = None,
    step_counter: Callable[[], int] | None = None,
    epoch_offset: int = 0,
) -> TrainResult:
    """The epoch loop every trainer shares (module doc).

    Parameters
    ----------
    step : callable
        ``step(batch, i)`` → the per-restart loss ``(R,)`` summed over the minibatch, after
        updating the parameters; ``i`` is the minibatch's index in the epoch.
    batches : Minibatches
    epochs, num_restarts : int
    validate : callable, optional
        ``() -> (R,)`` validation objective per data point (higher is better); run every
        ``val_every`` epochs and after the last. Without it the training loss selects.
    on_epoch_start, on_epoch_end : callable, optional
        Hooks; ``on_epoch_end(epoch)`` returns extra history columns (lists over restarts).
    seed : int, optional
        Seeds Pyro's sampling (``pyro.set_rng_seed``) before the first step.
    step_counter : callable, optional
        Optimiser steps taken so far (methods with inner loops count their own); default: one
        per minibatch.
    epoch_offset : int
        Added to the epochs recorded and reported (a method that calls the loop once per round).
    """
    if seed is not None:
        pyro.set_rng_seed(seed)
    history: list[dict] = []
    val = torch.full((num_restarts,), float("nan"))
    n = batches.n
    steps = 0
    start = time.perf_counter()
    with unregistered():
        bar = tqdm(range(1, epochs + 1), desc=desc, disable=not progress, leave=False, unit="epoch")
        for epoch in bar:
            batches.new_epoch()
            if on_epoch_start is not None:
                on_epoch_start(epoch)
            epoch_loss = torch.zeros(num_restarts, device=batches.device)
            for i in range(batches.steps_per_epoch):
                epoch_loss += step(batches.batch(i), i).detach().reshape(-1)
                steps += 1
                report_progress(step_counter() if step_counter else steps, epoch_offset + epoch)
            extra = on_epoch_end(epoch) if on_epoch_end is not None else {}
            train_loss = (epoch_loss / n).cpu()
            if epoch % val_every and epoch != epochs:
                continue
            if validate is not None:
                with isolated_rng(batches.device, (seed or 0) * 100003 + epoch):
                    val = validate()
            else:
                val = -train_loss
            for r in range(num_restarts):
                row = {"epoch": epoch_offset + epoch, "restart": r, "train_loss": float(train_loss[r]), "val_objective": float(val[r])}
                row.update({k: v[r] for k, v in extra.items()})
                history.append(row)
                if callback is not None:
                    callback(step_counter() if step_counter else steps, row)
            bar.set_postfix(loss=f"{train_loss.min().item():.4f}", val=f"{val.max().item():.4f}")
    best = int(torch.nan_to_num(val, nan=-float("inf")).argmax())
    return TrainResult(history, val, best, step_counter() if step_counter else steps, time.perf_counter() - start)
