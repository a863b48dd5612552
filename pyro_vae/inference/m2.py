"""The semi-supervised M2 objective (Eqs. 5 and 11–15 of 004) and its training loop.

    J(θ, φ) = Σ_unlabelled U(x) + γ · Σ_labelled L(x, y) + α · Σ_labelled log q_φ(y | x)

* ``L(x, y)`` lower-bounds ``log p_θ(x, y)``: the ELBO of Eq. 12 (``kind="elbo"``) or the
  IWAE bound of Eq. 14 (``kind="iwae"``, S importance samples of ``q_φ(z | x, y)``).
* ``U(x)`` lower-bounds ``log p_θ(x)`` (Eq. 13 / Eq. 15). How ``y`` is handled depends on the
  guide (:mod:`guides.m2`):

  - enumerated (discrete y): exact sum over the C classes. ELBO: ``U = Σ_c q(c|x) (L(x, c) −
    log q(c|x))``, which equals ``TraceEnum_ELBO`` on ``config_enumerate(guide)``. IWAE: the
    stratified form of Eq. 15 with S draws of z per class, ``U = log Σ_c exp L_S(x, c)`` (each
    class's importance weights over ``q(c|x)·q(z|x,c)`` — the q(c|x) cancels), so q(y|x) is
    then trained by the α term only;
  - relaxed (discrete y): ``y_s`` drawn from the Concrete ``q_φ(y|x)``, reparameterised, scored by
    the categorical log-mass extended linearly (:mod:`pyro_vae.models_m2`); as the temperature
    goes to 0 (or with straight-through draws) this is the enumerated objective in expectation;
  - Gaussian (continuous y): ``y_s ~ q_φ(y|x)`` reparameterised, Eq. 13 / Eq. 15 as written.

* The weights γ and α multiply the per-point bounds *outside* any logsumexp. Under the ELBO,
  ``γ · L`` is exactly what ``poutine.scale(·, γ)`` on the labelled model and guide gives with
  ``Trace_ELBO`` (see :func:`pyro_elbo_loss`); under IWAE a scale inside the trace would land
  inside the logsumexp (as with ``RenyiELBO``), which is not ``γ · L``.

Everything is per data point and per restart, shape ``([R,] N)``, so one code path gives the
training loss, the validation objective per restart and the selection of the best restart.

Minibatches (:func:`train_m2`): each epoch visits the training split once in a random order,
in minibatches of ``batch_size`` drawn from labelled and unlabelled points *together*; in each
minibatch the labelled points contribute ``γ L + α log q`` and the unlabelled ones ``U``, so the
minibatch objectives of an epoch add up to J on the training split (an unbiased, unscaled
estimate of J per step).
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple

import pyro.poutine as poutine
import torch
from pyro.infer import Trace_ELBO, TraceEnum_ELBO, config_enumerate

from pyro_vae import checks
from pyro_vae.inference.methods import Method, register_method
from pyro_vae.inference.objectives import bound_from_log_weights, log_weights
from pyro_vae.inference.svi import TrainResult, collect_parameters
from pyro_vae.inference.trainer import IndexBatches, finite_loss, make_optimizer, run_epochs

KINDS = ("elbo", "iwae")


class M2Terms(NamedTuple):
    """Per-point terms of J, each ``(R, N_·)`` (R = 1 for an unbatched model), unweighted."""

    unlabelled: torch.Tensor  # U(x), unlabelled points
    labelled: torch.Tensor  # L(x, y), labelled points
    classifier: torch.Tensor  # log q(y | x), labelled points

    def objective(self, alpha: float, gamma: float) -> torch.Tensor:
        """J per restart, ``(R,)``: ``Σ U + γ Σ L + α Σ log q`` (Eq. 5 of 004)."""
        return self.unlabelled.sum(-1) + gamma * self.labelled.sum(-1) + alpha * self.classifier.sum(-1)


def _check(kind: str, num_particles: int) -> None:
    if kind not in KINDS:
        raise ValueError(f"kind={kind!r}: expected one of {KINDS}")
    if not isinstance(num_particles, int) or isinstance(num_particles, bool) or num_particles < 1:
        raise ValueError(f"num_particles={num_particles!r}: expected a positive integer")


def _restart_dim(t: torch.Tensor) -> torch.Tensor:
    """``(N,)`` → ``(1, N)``; ``(R, N)`` unchanged."""
    return t.unsqueeze(0) if t.dim() == 1 else t


def _restart_dim_3(t: torch.Tensor) -> torch.Tensor:
    """``(N, C)`` → ``(1, N, C)``; ``(R, N, C)`` unchanged."""
    return t.unsqueeze(0) if t.dim() == 2 else t


def labelled_bound(model: Callable, guide: Callable, x: torch.Tensor, y: torch.Tensor, *,
                   kind: str = "elbo", num_particles: int = 1) -> torch.Tensor:
    """``L(x, y)`` per point, ``(R, N)``: the ELBO of Eq. 12 or the IWAE bound of Eq. 14 of 004.

    The guide is called with the labels, so it samples only ``"z"``; the model scores the
    observed ``y`` with ``log p(y)``.
    """
    _check(kind, num_particles)
    log_w = log_weights(model, guide, x, y=y, num_particles=num_particles)  # (S, R, N)
    return bound_from_log_weights(log_w, kind)


def _enumerated_rows(x: torch.Tensor, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Every row of ``x`` once per class: ``(C·N, D)`` rows and their one-hot labels, class-major."""
    n = x.shape[0]
    eye = torch.eye(num_classes, dtype=x.dtype, device=x.device)
    return x.repeat(num_classes, 1), eye.repeat_interleave(n, dim=0)


def _combine_enumerated(per_class: torch.Tensor, log_q: torch.Tensor, kind: str) -> torch.Tensor:
    """U from ``L(x, c)`` of shape ``(R, C, N)`` and ``log q(c | x)`` of shape ``(R, N, C)``."""
    if kind == "iwae":
        return torch.logsumexp(per_class, dim=-2)
    log_q = log_q.movedim(-1, -2)  # (R, C, N)
    return (log_q.exp() * (per_class - log_q)).sum(-2)


def unlabelled_bound(model: Callable, guide: Callable, x: torch.Tensor, *, kind: str = "elbo",
                     num_particles: int = 1) -> torch.Tensor:
    """``U(x)`` per point, ``(R, N)``: Eq. 13 (ELBO) or Eq. 15 (IWAE) of 004; see the module doc
    for how an enumerated, relaxed or Gaussian ``q(y|x)`` is handled."""
    _check(kind, num_particles)
    if getattr(guide, "enumerates_labels", False):
        no_labels = x.new_zeros(0, guide.label_dim)
        return m2_terms(model, guide, x, x[:0], no_labels, kind=kind, num_particles=num_particles).unlabelled
    log_w = log_weights(model, guide, x, num_particles=num_particles)
    return bound_from_log_weights(log_w, kind)


def _empty(like: torch.Tensor, restarts: int) -> torch.Tensor:
    return like.new_zeros(restarts, 0)


def m2_terms(model: Callable, guide: Callable, x_u: torch.Tensor, x_l: torch.Tensor, y_l: torch.Tensor, *,
             kind: str = "elbo", num_particles: int = 1) -> M2Terms:
    """The per-point terms of J on unlabelled ``x_u`` and labelled ``(x_l, y_l)``.

    Either part may be empty. With an enumerated guide the C copies of the unlabelled rows and
    the labelled rows go through one trace.
    """
    _check(kind, num_particles)
    restarts = getattr(model, "num_restarts", None) or 1
    like = x_u if x_u.numel() else x_l
    n_u, n_l = x_u.shape[0], x_l.shape[0]
    if getattr(guide, "enumerates_labels", False) and n_u:
        c = guide.label_dim
        xs, ys = _enumerated_rows(x_u, c)
        xs, ys = torch.cat([xs, x_l]), torch.cat([ys, y_l.to(xs)])
        per = labelled_bound(model, guide, xs, ys, kind=kind, num_particles=num_particles)
        per = per.expand(restarts, -1)
        log_q = _restart_dim_3(guide.label_distribution(x_u).logits)
        unlabelled = _combine_enumerated(per[:, : c * n_u].reshape(restarts, c, n_u), log_q, kind)
        labelled = per[:, c * n_u:]
    else:
        unlabelled = unlabelled_bound(model, guide, x_u, kind=kind, num_particles=num_particles) if n_u \
            else _empty(like, restarts)
        labelled = labelled_bound(model, guide, x_l, y_l, kind=kind, num_particles=num_particles) if n_l \
            else _empty(like, restarts)
    classifier = _restart_dim(guide.label_log_prob(x_l, y_l)) if n_l else _empty(like, restarts)
    return M2Terms(unlabelled.expand(restarts, -1), labelled.expand(restarts, -1), classifier.expand(restarts, -1))


def m2_objective(model: Callable, guide: Callable, x_u: torch.Tensor, x_l: torch.Tensor, y_l: torch.Tensor, *,
                 alpha: float = 0.0, gamma: float = 1.0, kind: str = "elbo", num_particles: int = 1) -> torch.Tensor:
    """J per restart, ``(R,)`` (Eq. 5 of 004, weights outside every logsumexp)."""
    return m2_terms(model, guide, x_u, x_l, y_l, kind=kind, num_particles=num_particles).objective(alpha, gamma)


def pyro_elbo_loss(model: Callable, guide: Callable, x_u: torch.Tensor, x_l: torch.Tensor, y_l: torch.Tensor, *,
                   alpha: float = 0.0, gamma: float = 1.0, max_plate_nesting: int = 2) -> torch.Tensor:
    """−J under the ELBO with Pyro's own estimators (for Pyro SVI scripts), summed over restarts.

    ``TraceEnum_ELBO`` on ``config_enumerate(guide)`` (enumerated guide) or ``Trace_ELBO`` for the
    unlabelled part; ``Trace_ELBO`` on ``poutine.scale(model, γ)``, ``poutine.scale(guide, γ)``
    for the labelled part; ``−α Σ log q(y|x)`` as an auxiliary loss. Equal in expectation to
    ``−m2_objective(..., kind="elbo").sum()`` (tested).
    """
    if not gamma > 0:
        raise ValueError(f"gamma={gamma!r}: poutine.scale needs a positive weight")
    loss = x_u.new_zeros(())
    if x_u.shape[0]:
        if getattr(guide, "enumerates_labels", False):
            elbo = TraceEnum_ELBO(max_plate_nesting=max_plate_nesting)
            loss = loss + elbo.differentiable_loss(model, config_enumerate(guide, "parallel"), x_u)
        else:
            loss = loss + Trace_ELBO(max_plate_nesting=max_plate_nesting).differentiable_loss(model, guide, x_u)
    if x_l.shape[0]:
        scaled_model, scaled_guide = poutine.scale(model, scale=gamma), poutine.scale(guide, scale=gamma)
        loss = loss + Trace_ELBO(max_plate_nesting=max_plate_nesting).differentiable_loss(
            scaled_model, scaled_guide, x_l, y_l)
        loss = loss - alpha * guide.label_log_prob(x_l, y_l).sum()
    return loss


# --------------------------------------------------------------------------- training
def _check_split(name: str, split) -> None:
    for attr in ("x", "y", "labelled"):
        if not hasattr(split, attr):
            raise ValueError(f"{name}: expected a LabelledSplit with x, y and labelled; it has no {attr!r}")
    x, y, mask = split.x, split.y, split.labelled
    if x.dim() != 2 or x.shape[0] == 0:
        raise ValueError(f"{name}.x of shape {tuple(x.shape)}: expected (N, D) with N > 0")
    if y.shape[0] != x.shape[0] or mask.shape != (x.shape[0],) or mask.dtype != torch.bool:
        raise ValueError(f"{name}: y {tuple(y.shape)} and labelled {tuple(mask.shape)} must have N={x.shape[0]} rows "
                         "(labelled a boolean mask)")


def _parts(split, idx: torch.Tensor):
    mask = split.labelled[idx]
    x, y = split.x[idx], split.y[idx]
    return x[~mask], x[mask], y[mask]


def validation_objective_m2(model: Callable, guide: Callable, split, *, alpha: float = 0.0, gamma: float = 1.0,
                            kind: str = "elbo", num_particles: int = 1, batch_size: int = 1000) -> torch.Tensor:
    """J per data point of ``split`` (a :class:`~pyro_vae.datasets.LabelledSplit`), per restart ``(R,)``."""
    _check_split("split", split)
    n = split.x.shape[0]
    total = 0.0
    with torch.no_grad():
        for start in range(0, n, batch_size):
            idx = torch.arange(start, min(start + batch_size, n), device=split.x.device)
            total = total + m2_objective(model, guide, *_parts(split, idx), alpha=alpha, gamma=gamma, kind=kind,
                                         num_particles=num_particles)
    return (total / n).reshape(-1).cpu()


def check_training_args(train, val, *, alpha, gamma, num_particles, epochs, batch_size, lr):
    """Check an M2 trainer's arguments (``ValueError`` naming the bad one); returns ``val`` (default ``train``)."""
    for name, value in (("epochs", epochs), ("batch_size", batch_size), ("num_particles", num_particles)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name}={value!r}: expected a positive integer")
    check_weights(alpha, gamma)
    if not (isinstance(lr, (int, float)) and not isinstance(lr, bool) and lr > 0):
        raise ValueError(f"lr={lr!r}: expected a positive number")
    _check_split("train", train)
    val = train if val is None else val
    _check_split("val", val)
    if batch_size > train.x.shape[0]:
        raise ValueError(f"batch_size={batch_size}: larger than the {train.x.shape[0]} training points")
    return val


def train_m2(
    model: Callable,
    guide: Callable,
    train,
    val=None,
    *,
    objective: str = "elbo",
    alpha: float = 0.0,
    gamma: float = 1.0,
    num_particles: int = 1,
    epochs: int = 100,
    batch_size: int = 100,
    lr: float = 1e-3,
    seed: int = 0,
    progress: bool = True,
    callback: Callable[[int, dict], None] | None = None,
    optimizer: Any = None,
    val_every: int = 1,
) -> TrainResult:
    """Fit an M2 model and guide by maximising J with Adam (004 App. D: lr 1e-3, batches of 100).

    Parameters
    ----------
    model, guide
        :class:`~pyro_vae.models_m2.M2Model` and a guide of :mod:`guides.m2` (or programs with
        the same sites and methods ``label_log_prob``, ``label_distribution``).
    train, val : LabelledSplit
        ``x`` (N, D), ``y`` (N, label_dim) and the boolean ``labelled`` mask; only the labels
        marked visible are used. ``val`` (default ``train``) scores every restart.
    objective : {"elbo", "iwae"}
        IWAE uses ``num_particles`` importance samples in both U and L; the ELBO uses one.
    alpha, gamma : float
        Weights of the classifier term (≥ 0) and of the labelled bound (> 0), Eq. 5 of 004.
    epochs, batch_size, lr, seed
        ``seed`` fixes the minibatch order and Pyro's sampling.
    optimizer, val_every
        As in :func:`pyro_vae.inference.train`.

    Returns
    -------
    TrainResult
        History rows (epoch, restart, train_loss = −J per point, val_objective = J per point),
        the validation objective per restart and the best restart (highest).

    Raises
    ------
    ValueError
        Bad arguments, before any work.
    TrainingError
        A non-finite loss; the message names the step, epoch and restart.
    """
    train, val = checks.labelled_data(model, guide, train, val, lr=lr, alpha=alpha, gamma=gamma)
    if objective not in KINDS:
        raise ValueError(f"objective={objective!r}: expected one of {KINDS}")
    val = check_training_args(train, val, alpha=alpha, gamma=gamma, num_particles=num_particles,
                              epochs=epochs, batch_size=batch_size, lr=lr)
    particles = num_particles if objective == "iwae" else 1
    params = collect_parameters(model, guide, example_args=(train.x[:2],))  # a function guide's pyro.params too
    if not params:
        raise ValueError("model and guide have no trainable parameters")
    optim = make_optimizer(params, optimizer, lr)
    restarts = getattr(model, "num_restarts", None) or 1
    state = {"step": 0, "epoch": 0}

    def step(idx: torch.Tensor, i: int) -> torch.Tensor:
        where = f"step {state['step'] + 1} (epoch {state['epoch']})"
        loss = finite_loss(lambda: -m2_objective(model, guide, *_parts(train, idx), alpha=alpha, gamma=gamma,
                                                 kind=objective, num_particles=particles), where)
        optim.zero_grad(set_to_none=True)
        loss.sum().backward()
        optim.step()
        state["step"] += 1
        return loss

    return run_epochs(
        step, IndexBatches(train.x.shape[0], batch_size, seed, train.x.device), epochs=epochs, num_restarts=restarts,
        validate=lambda: validation_objective_m2(model, guide, val, alpha=alpha, gamma=gamma, kind=objective,
                                                 num_particles=particles),
        val_every=val_every, on_epoch_start=lambda e: state.update(epoch=e), seed=seed,
        desc=f"train m2 {objective}", progress=progress, callback=callback,
    )


def check_weights(alpha, gamma) -> None:
    """α ≥ 0 and γ > 0, finite numbers (ValueError naming the one that is not)."""
    for name, value, low_ok in (("alpha", alpha, True), ("gamma", gamma, False)):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        ok = ok and (value >= 0 if low_ok else value > 0)
        if not ok:
            raise ValueError(f"{name}={value!r}: expected a finite number {'>= 0' if low_ok else '> 0'}")


# --------------------------------------------------------------------------- the method registry
def _use_train_m2(*_args, **_kwargs):
    raise ValueError("method='m2': the semi-supervised M2 model has its own command, `pyro-vae train-m2 DATASET "
                     "--guide {enum,relaxed} --method {vae,iwae,lin} --alpha A --gamma G ...` "
                     "(pyro_vae.pipeline_m2.train_and_evaluate_m2)")


# `pyro-vae train DATASET --method m2` points to `pyro-vae train-m2` instead of failing as unknown.
register_method("m2", Method(_use_train_m2, {}, "semi-supervised M2 (004 §7): use `pyro-vae train-m2 DATASET`",
                             _use_train_m2))
