"""Lagging Inference Networks (He et al. 2019): the encoder is trained ahead of the decoder.

``train_lagging`` (``--method lin``; facts from the reference code jxhe/vae-lagging-encoder,
``text.py``/``image.py``). While a restart is *aggressive*, each minibatch starts with an inner
loop of encoder-only Adam steps (the first on the minibatch, then on fresh random minibatches,
at most ``max_inner_steps``) that stops once the mean per-point loss of the last ``window``
steps fell by less than ``threshold`` from the window before; then one decoder-only step. At
each epoch's end I_q(x; z) is estimated on the validation set; once it rose by less than
``mi_threshold`` in an epoch, the restart leaves aggressive mode for good (a plain VAE then).

T and R of 004 App. D's grid (T ∈ {0.05, 0.1}, R ∈ {5, 10}) are "the threshold for determining
whether the inference network objective has converged" and "the number of training iterations
for which the loss is averaged before comparing with the threshold": both are the inner loop's,
so ``threshold = T`` (nats per point) and ``window = R``. The reference uses threshold 0 with
windows of 10 (images) or 15 (text), and leaves aggressive mode once I_q falls
(``mi_threshold = 0``, ``text.py``).

``train_lagging_segments`` (``--method lin_segments``) is 000 App. E's variant: the training
steps are cut into ``segments`` equal segments; the first ``encoder_fraction`` of each trains
the encoder alone, the rest trains both jointly.

Restarts are a batch dimension sharing the minibatch stream, each with its own aggressive flag
and inner-loop state. :class:`RestartAdam` steps only the restarts a mask selects, with
per-restart moments and step counts: a masked restart stays bit-for-bit unchanged and later
resumes as its own run would. Batched restarts equal single runs while their schedules agree;
once inner loops differ in length the batch also draws noise for masked restarts, so they then
agree in distribution only.

References
----------
He, Spokoyny, Neubig & Berg-Kirkpatrick (2019), *Lagging Inference Networks and Posterior
Collapse in Variational Autoencoders*, Algorithm 1; 004 App. D; 000 App. E.
"""

from __future__ import annotations

import contextlib
import math
from typing import Callable, Sequence

import torch

from guides.restarts import check_restart_guide
from pyro_vae import checks
from pyro_vae.inference.methods import Method, group_kwargs, register_method
from pyro_vae.inference.fixed_model import frozen as _frozen  # no gradients for the given params
from pyro_vae.inference.objectives import VariationalObjective
from pyro_vae.inference.svi import (
    TrainResult, _check_positive_int, _minibatches, _num_restarts, collect_parameters, validation_objective,
)
from pyro_vae.inference.trainer import finite_loss, run_epochs
from pyro_vae.metrics.mutual_info import mutual_info_gaussian_encoder

__all__ = ["RestartAdam", "encoder_inner_loop", "train_lagging", "train_lagging_segments"]


class RestartAdam:
    """Adam (Kingma & Ba 2015, torch's defaults) over parameters with a leading restart dim R.

    ``step(mask)`` moves restart r's slice of each parameter, its moments and its step count
    only where ``mask[r]``. ``num_restarts=None``: unbatched parameters, one restart.
    """

    def __init__(self, params: Sequence[torch.Tensor], num_restarts: int | None, lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        self.params, self.lr, self.betas, self.eps = list(params), lr, betas, eps
        self.batched = num_restarts is not None
        for p in self.params:
            if self.batched and (p.dim() == 0 or p.shape[0] != num_restarts):
                raise ValueError(f"a parameter of shape {tuple(p.shape)} has no leading restart dimension of size "
                                 f"{num_restarts}, so its restarts cannot step separately; train restarts one at a time")
        self.exp_avg = [torch.zeros_like(p) for p in self.params]
        self.exp_avg_sq = [torch.zeros_like(p) for p in self.params]
        device = self.params[0].device if self.params else None
        self.steps = torch.zeros(num_restarts or 1, dtype=torch.float64, device=device)

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    def _view(self, values: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        return values.reshape((-1,) + (1,) * (p.dim() - 1)) if self.batched else values.reshape(())

    @torch.no_grad()
    def step(self, mask: torch.Tensor) -> None:
        """One Adam step of the restarts where ``mask`` (bool, ``(R,)``) is true."""
        if not bool(mask.any()):
            return
        beta1, beta2 = self.betas
        self.steps += mask.to(self.steps.dtype)
        t = self.steps.clamp(min=1.0)  # restarts still at step 0 are masked: their values are discarded
        step_size, bias2_sqrt = self.lr / (1 - beta1**t), (1 - beta2**t).sqrt()
        everyone = bool(mask.all())
        for p, m, v in zip(self.params, self.exp_avg, self.exp_avg_sq):
            if p.grad is None:
                continue
            g = p.grad
            m_new, v_new = m.lerp(g, 1 - beta1), v.mul(beta2).addcmul_(g, g, value=1 - beta2)
            denom = v_new.sqrt().div_(self._view(bias2_sqrt, p).to(p.dtype)).add_(self.eps)
            p_new = p - self._view(step_size, p).to(p.dtype) * m_new / denom
            keep = None if everyone else self._view(mask, p)
            for old, new in ((m, m_new), (v, v_new), (p, p_new)):
                old.copy_(new if keep is None else torch.where(keep, new, old))


def encoder_inner_loop(
    loss_fn: Callable[[torch.Tensor], torch.Tensor], encoder_optim: RestartAdam, decoder_params: Sequence[torch.Tensor],
    batch: Callable[[int], torch.Tensor], active: torch.Tensor, *, threshold: float | torch.Tensor = 0.1,
    window: int | torch.Tensor = 5, max_steps: int = 100,
) -> torch.Tensor:
    """The aggressive inner loop: encoder-only steps of the ``active`` restarts (bool ``(R,)``).

    ``loss_fn(x)`` is the per-restart loss summed over ``x``, ``batch(j)`` the minibatch of
    step j. The decoder is frozen throughout. A restart stops when the mean per-point loss of
    its last ``window`` steps fell by less than ``threshold`` from the window before, or after
    ``max_steps``. ``threshold`` and ``window`` may be ``(R,)`` tensors (runs with different
    T and R trained as one group). Returns the encoder steps each restart took.
    """
    active = active.clone()
    steps = torch.zeros(active.shape, dtype=torch.long, device=active.device)
    window_sum = torch.zeros(active.shape, dtype=torch.float64, device=active.device)
    previous = torch.full_like(window_sum, math.inf)
    per_restart = torch.as_tensor(window, device=active.device).expand(active.shape)
    threshold = torch.as_tensor(threshold, dtype=torch.float64, device=active.device)
    with _frozen(decoder_params):
        for j in range(max_steps):
            if not bool(active.any()):
                break
            x = batch(j)
            loss = loss_fn(x)
            encoder_optim.zero_grad()
            loss.sum().backward()
            encoder_optim.step(active)
            steps += active
            window_sum += loss.detach().double() / _points(x)
            due = (j + 1) % per_restart == 0
            if bool(due.any()):
                current = window_sum / per_restart
                active &= ~due | ((previous - current) >= threshold)
                previous = torch.where(due, current, previous)
                window_sum = torch.where(due, torch.zeros_like(window_sum), window_sum)
    return steps


def _points(x: torch.Tensor) -> int:
    """Data points in a minibatch: ``(B,)`` row indices, ``(B, D)`` rows, or ``(R, B, D)`` for a group
    of runs (whose first dimension counts restarts, not points)."""
    return x.shape[0] if x.dim() == 1 else x.shape[-2]


def _mutual_info(guide, x: torch.Tensor, seed: int) -> torch.Tensor:
    """I_q(x; z) of each restart's encoder on ``x``, nats, ``(R,)``.

    One code per point as in the reference's ``calc_mi_q``, against the aggregate posterior of
    all of ``x`` (O(N²)); the same codes' noise every epoch (``seed``), so the change between
    epochs reflects the encoder rather than Monte Carlo noise.
    """
    with torch.no_grad():
        q = guide.distribution(x)
        loc, scale = q.loc.reshape(-1, *q.loc.shape[-2:]), q.scale.reshape(-1, *q.scale.shape[-2:])
        return torch.stack([mutual_info_gaussian_encoder(loc[r], scale[r], num_samples=1, seed=seed, per_dim=False).cpu()
                            for r in range(loc.shape[0])])


def _real(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise ValueError(f"{name}={value!r}: expected a real number")


def check_lin_options(options: dict) -> None:
    """ValueError naming a bad ``threshold``, ``mi_threshold``, ``window`` or ``max_inner_steps``."""
    checks.nonneg_number("threshold", options["threshold"])
    _real("mi_threshold", options["mi_threshold"])
    _check_positive_int("window", options["window"])
    _check_positive_int("max_inner_steps", options["max_inner_steps"])


def check_segment_options(options: dict) -> None:
    """ValueError naming a bad ``segments`` or ``encoder_fraction``."""
    _check_positive_int("segments", options["segments"])
    _real("encoder_fraction", options["encoder_fraction"])
    if not 0 < options["encoder_fraction"] < 1:
        raise ValueError(f"encoder_fraction={options['encoder_fraction']!r}: expected a number strictly between 0 and 1")


class LaggingSchedule:
    """LIN's per-restart state and steps (He et al. 2019, Algorithm 1), for any model.

    Serves the unsupervised VAE (:func:`train_lagging`) and the M2 model
    (:func:`pyro_vae.inference.m2_lagging.train_m2_lagging`) alike: ``loss(batch)`` is the
    method's per-restart loss summed over a minibatch (TrainingError if not finite), ``batch``
    whatever it takes (data rows or row indices).
    """

    def __init__(self, loss: Callable, encoder: Sequence[torch.Tensor], decoder: Sequence[torch.Tensor],
                 num_restarts: int | None, lr: float, device, *, threshold: float, window: int, max_inner_steps: int,
                 mi_threshold: float, inner: str = "encoder"):
        self.loss, self.encoder, self.decoder = loss, list(encoder), list(decoder)
        if not self.encoder or not self.decoder:
            raise ValueError("lagging inference needs trainable parameters in both the guide and the model")
        self.enc_optim, self.dec_optim = RestartAdam(self.encoder, num_restarts, lr), RestartAdam(self.decoder, num_restarts, lr)
        restarts = num_restarts or 1
        self.everyone = torch.ones(restarts, dtype=torch.bool, device=device)
        self.aggressive, self.was = self.everyone.clone(), self.everyone.clone()
        self.previous_mi = torch.full((restarts,), -math.inf, dtype=torch.float64)
        self.inner = torch.zeros(restarts, dtype=torch.long, device=device)
        self.threshold, self.window, self.max_inner_steps, self.mi_threshold = threshold, window, max_inner_steps, mi_threshold
        self.kind, self.steps, self.where = inner, 0, ""

    def step(self, batch, fresh: Callable[[int], object], epoch: int) -> torch.Tensor:
        """One outer step on ``batch``, preceded by the aggressive restarts' inner loop on
        ``fresh(j)`` (``fresh(0)`` is ``batch``); returns the outer step's loss (R,)."""
        aggressive = self.aggressive
        if bool(aggressive.any()):
            self.where = f"{'an' if self.kind[0] in 'aeiou' else 'a'} {self.kind}-only step after step {self.steps} (epoch {epoch})"
            taken = encoder_inner_loop(self.loss, self.enc_optim, self.decoder, fresh, aggressive,
                                       threshold=self.threshold, window=self.window, max_steps=self.max_inner_steps)
            self.inner += taken
            self.steps += int(taken.max())
        self.where = f"step {self.steps + 1} (epoch {epoch})"
        loss = self.loss(batch)
        self.enc_optim.zero_grad(), self.dec_optim.zero_grad()
        with _frozen(self.encoder) if bool(aggressive.all()) else contextlib.nullcontext():
            loss.sum().backward()
        self.dec_optim.step(self.everyone)
        self.enc_optim.step(~aggressive)  # the aggressive restarts take a decoder-only step
        self.steps += 1
        return loss.detach()

    def end_epoch(self, mutual_info: Callable[[], torch.Tensor]) -> dict[str, list]:
        """Leave aggressive mode where I_q rose by less than ``mi_threshold``; history columns."""
        aggressive, mi = self.aggressive, [None] * self.everyone.shape[0]
        extra = {"aggressive": self.was.tolist(), "inner_steps": self.inner.tolist()}
        if bool(aggressive.any()):
            current = mutual_info()
            mi = [float(v) if a else None for v, a in zip(current, aggressive.tolist())]
            aggressive &= ((current - self.previous_mi) >= self.mi_threshold).to(aggressive.device)
            self.previous_mi = current
        self.inner.zero_()
        self.was = aggressive.clone()
        return {**extra, "mutual_info": mi}


class _Trainer:
    """What both variants share: checks, encoder/decoder split, optimisers, loss and epoch loop."""

    def __init__(self, model, guide, x_train, x_val, objective, num_particles, epochs, batch_size, lr, seed=0,
                 group_restarts=None, val_every=1):
        x_train, x_val = checks.training_data(model, guide, x_train, x_val, lr=lr, epochs=epochs, batch_size=batch_size)
        if objective not in ("elbo", "iwae"):
            raise ValueError(f"objective={objective!r}: expected 'elbo' or 'iwae'")
        for name, value in (("epochs", epochs), ("batch_size", batch_size), ("num_particles", num_particles),
                            ("val_every", val_every)):
            _check_positive_int(name, value)
        if not (isinstance(lr, (int, float)) and lr > 0):
            raise ValueError(f"lr={lr!r}: expected a positive number")
        self.batches, self.x_val = _minibatches(model, x_train, x_val, batch_size, seed, group_restarts)
        self.n = self.batches.n
        self.model, self.guide, self.objective = model, guide, objective
        self.epochs, self.batch_size, self.steps_per_epoch = epochs, batch_size, self.batches.steps_per_epoch
        self.val_every = val_every
        self.particles = num_particles if objective == "iwae" else 1
        self.elbo = VariationalObjective(objective, self.particles, 1.0)
        self.restarts = _num_restarts(model)
        example = self.batches.batch_example()
        check_restart_guide(model, guide, example)
        self.decoder = collect_parameters(model, example_args=(example,))
        seen = {id(p) for p in self.decoder}
        self.encoder = [p for p in collect_parameters(guide, example_args=(example,)) if id(p) not in seen]
        if not self.encoder or not self.decoder:
            raise ValueError("lagging inference needs trainable parameters in both the guide and the model")
        self.enc_optim = RestartAdam(self.encoder, getattr(model, "num_restarts", None), lr)
        self.dec_optim = RestartAdam(self.decoder, getattr(model, "num_restarts", None), lr)
        self.everyone = torch.ones(self.restarts, dtype=torch.bool, device=self.batches.device)
        self.where, self.step, self.loss_where = "", 0, None

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        """Per-restart negative bound summed over ``x``; a non-finite one raises TrainingError."""
        where = self.loss_where() if self.loss_where is not None else self.where
        return finite_loss(lambda: -self.elbo.per_point(self.model, self.guide, x).sum(-1), where)

    def run(self, desc, on_batch, on_epoch, seed, progress, callback, on_epoch_start=None) -> TrainResult:
        """The shared engine's epoch loop: ``on_batch(epoch, x)`` → the minibatch's loss (R,);
        ``on_epoch(epoch)`` → extra history columns (lists over restarts)."""
        epoch_now = [0]

        def start(epoch):
            epoch_now[0] = epoch
            if on_epoch_start is not None:
                on_epoch_start(epoch)

        return run_epochs(
            lambda xb, i: on_batch(epoch_now[0], xb, i), self.batches, epochs=self.epochs, num_restarts=self.restarts,
            validate=lambda: validation_objective(self.model, self.guide, self.x_val, self.objective, self.particles),
            val_every=self.val_every, on_epoch_start=start, on_epoch_end=on_epoch, seed=seed, desc=desc,
            progress=progress, callback=callback, step_counter=lambda: self.step,
        )


def train_lagging(
    model: Callable, guide: Callable, x_train: torch.Tensor, x_val: torch.Tensor | None = None, *,
    objective: str = "elbo", num_particles: int = 1, threshold: float = 0.1, window: int = 5,
    max_inner_steps: int = 100, mi_threshold: float = 0.0, epochs: int = 100, batch_size: int = 100,
    lr: float = 1e-3, seed: int | Sequence[int] = 0, progress: bool = True,
    callback: Callable[[int, dict], None] | None = None, val_every: int = 1, group_restarts: Sequence[int] | None = None,
) -> TrainResult:
    """Aggressive training of the inference network (He et al. 2019, Algorithm 1; module doc).

    Parameters
    ----------
    guide :
        Needs ``distribution(x)`` (a Gaussian encoder, e.g. MeanFieldGuide) for I_q.
    threshold, window, max_inner_steps :
        The inner loop's stopping rule (T and R of 004 App. D) and its length cap. In a group
        (``group_restarts``), ``threshold`` and ``window`` may be one value per run.
    mi_threshold : float
        Leave aggressive mode when I_q(x; z) on ``x_val`` rose by less than this in an epoch.
    others :
        As in :func:`pyro_vae.inference.train` (``objective`` "elbo" or "iwae"; ``x_train``,
        ``seed`` and ``group_restarts`` for a group of runs).

    Returns
    -------
    TrainResult
        Rows add ``aggressive`` (during the epoch), ``inner_steps`` (encoder-only steps in the
        epoch), ``mutual_info`` (I_q at its end while aggressive, else None). ``steps`` counts
        inner and outer steps.
    """
    threshold, window = _per_restart_schedule(threshold, window, max_inner_steps, mi_threshold, group_restarts)
    t = _Trainer(model, guide, x_train, x_val, objective, num_particles, epochs, batch_size, lr, seed,
                 group_restarts, val_every)
    threshold, window = threshold.to(t.batches.device), window.to(t.batches.device)
    if not callable(getattr(guide, "distribution", None)):
        raise ValueError("method 'lin' needs a guide with distribution(x) -> Normal (e.g. MeanFieldGuide) for I_q")
    batches, dev = t.batches, t.batches.device
    inner_gens = [torch.Generator() for _ in batches.generators]
    x_val_all = getattr(t.x_val, "stacked", t.x_val)
    lin = LaggingSchedule(t.loss, t.encoder, t.decoder, getattr(model, "num_restarts", None), lr, dev,
                          threshold=threshold, window=window, max_inner_steps=max_inner_steps, mi_threshold=mi_threshold)
    lin.where = t.where
    t.loss_where = lambda: lin.where
    seeds: list[list[int]] = []

    def draw_seeds(epoch):  # per run, after its minibatch order, as a single run draws them
        seeds[:] = [torch.randint(2**62, (t.steps_per_epoch,), generator=g).tolist() for g in batches.generators]

    def fresh_batch(j, xb):
        if j == 0:
            return xb
        parts = []
        for x, r, g in zip(batches.xs, batches.restarts, inner_gens):
            part = x[torch.randperm(t.n, generator=g)[:batch_size].to(dev)]
            parts.append(part if not batches.grouped else part.unsqueeze(0).expand(r, -1, -1))
        return torch.cat(parts, 0)

    def on_batch(epoch, xb, i):
        for g, run_seeds in zip(inner_gens, seeds):
            g.manual_seed(run_seeds[i])  # the same fresh minibatches however long the loop runs
        loss = lin.step(xb, lambda j: fresh_batch(j, xb), epoch)
        t.step = lin.steps
        return loss

    def on_epoch(epoch):
        return lin.end_epoch(lambda: _mutual_info(guide, x_val_all, _first_seed(seed)))

    return t.run("train lin", on_batch, on_epoch, _first_seed(seed), progress, callback, on_epoch_start=draw_seeds)


def train_lagging_segments(
    model: Callable, guide: Callable, x_train: torch.Tensor, x_val: torch.Tensor | None = None, *,
    segments: int = 10, encoder_fraction: float = 0.5, objective: str = "elbo", num_particles: int = 1,
    epochs: int = 100, batch_size: int = 100, lr: float = 1e-3, seed: int = 0, progress: bool = True,
    callback: Callable[[int, dict], None] | None = None, val_every: int = 1,
) -> TrainResult:
    """000 App. E's lagging inference: ``segments`` equal segments of the training steps, each
    training the inference network alone (its first ``encoder_fraction``), then both jointly.

    The segments cut the ``epochs × ceil(N / batch_size)`` steps, so they are whole epochs when
    ``epochs`` is a multiple of ``segments``; each has at least one step of either kind.
    History rows add ``encoder_steps`` (encoder-only steps in the epoch); other arguments as
    in :func:`train_lagging`.
    """
    check_segment_options(dict(segments=segments, encoder_fraction=encoder_fraction))
    t = _Trainer(model, guide, x_train, x_val, objective, num_particles, epochs, batch_size, lr, seed, None, val_every)
    total = epochs * t.steps_per_epoch
    if 2 * segments > total:
        raise ValueError(f"segments={segments}: more than half the {total} training steps; each segment needs 2")
    bounds = [round(k * total / segments) for k in range(segments + 1)]
    alone = torch.zeros(total, dtype=torch.bool)
    for a, b in zip(bounds[:-1], bounds[1:]):
        alone[a : a + min(b - a - 1, max(1, round(encoder_fraction * (b - a))))] = True
    counts = [0]

    def on_batch(epoch, xb, i):
        t.where = f"step {t.step + 1} (epoch {epoch})"
        encoder_only = bool(alone[t.step])
        with _frozen(t.decoder) if encoder_only else contextlib.nullcontext():
            loss = t.loss(xb)
            t.enc_optim.zero_grad(), t.dec_optim.zero_grad()
            loss.sum().backward()
        t.enc_optim.step(t.everyone)
        if not encoder_only:
            t.dec_optim.step(t.everyone)
        counts[0] += encoder_only
        t.step += 1
        return loss.detach()

    def on_epoch(epoch):
        extra, counts[0] = {"encoder_steps": [counts[0]] * t.restarts}, 0
        return extra

    def draw_seeds(epoch):  # unused, but drawn as LIN draws them, so both variants see the same minibatch orders
        torch.randint(2**62, (t.steps_per_epoch,), generator=t.batches.generator)

    return t.run("train lin_segments", on_batch, on_epoch, seed, progress, callback, on_epoch_start=draw_seeds)


def _per_restart_schedule(threshold, window, max_inner_steps, mi_threshold,
                          group_restarts) -> tuple[torch.Tensor, torch.Tensor]:
    """The checked LIN options; T and R as tensors: scalars, or ``(R,)`` from one value per run of a group."""
    per_run = isinstance(threshold, (list, tuple)) or isinstance(window, (list, tuple))
    if per_run and group_restarts is None:
        raise ValueError("threshold and window: one value per run needs group_restarts (a group of runs)")
    runs = len(group_restarts) if per_run else 1
    ts = list(threshold) if isinstance(threshold, (list, tuple)) else [threshold] * runs
    ws = list(window) if isinstance(window, (list, tuple)) else [window] * runs
    if len(ts) != runs or len(ws) != runs:
        raise ValueError(f"threshold ({len(ts)} values) and window ({len(ws)}): expected one per run ({runs})")
    for t_r, w_r in zip(ts, ws):
        check_lin_options(dict(threshold=t_r, window=w_r, max_inner_steps=max_inner_steps, mi_threshold=mi_threshold))
    if not per_run:
        return torch.tensor(float(ts[0]), dtype=torch.float64), torch.tensor(ws[0])
    counts = torch.tensor(list(group_restarts))
    return (torch.tensor([float(v) for v in ts], dtype=torch.float64).repeat_interleave(counts),
            torch.tensor(ws).repeat_interleave(counts))


def _first_seed(seed) -> int:
    return int(seed[0]) if isinstance(seed, (list, tuple)) else int(seed)


def _fit_lin(model, guide, x_train, x_val, config, progress: bool = True, group=None) -> TrainResult:
    o = config.options
    threshold, window = o["threshold"], o["window"]
    if group is not None and group.options is not None:  # T and R may differ between the group's runs
        threshold, window = [r["threshold"] for r in group.options], [r["window"] for r in group.options]
    return train_lagging(
        model, guide, x_train, x_val, threshold=threshold, window=window, max_inner_steps=o["max_inner_steps"],
        mi_threshold=o["mi_threshold"], epochs=config.epochs, batch_size=config.batch_size, lr=config.lr,
        progress=progress, val_every=getattr(config, "val_every", 1), **group_kwargs(config, group),
    )


def _fit_segments(model, guide, x_train, x_val, config, progress: bool = True) -> TrainResult:
    o = config.options
    return train_lagging_segments(
        model, guide, x_train, x_val, segments=o["segments"], encoder_fraction=o["encoder_fraction"],
        epochs=config.epochs, batch_size=config.batch_size, lr=config.lr, seed=config.seed, progress=progress,
        val_every=getattr(config, "val_every", 1),
    )


register_method("lin", Method(
    _fit_lin, {"threshold": 0.1, "window": 5, "max_inner_steps": 100, "mi_threshold": 0.0},
    "Lagging Inference Networks (He et al. 2019): aggressive encoder steps; T=threshold, R=window (004 App. D)",
    check_lin_options, groupable=True, grouped_options=("threshold", "window"),
))
register_method("lin_segments", Method(
    _fit_segments, {"segments": 10, "encoder_fraction": 0.5},
    "Lagging inference as in 000 App. E: R=segments, in each the encoder alone, then both jointly",
    check_segment_options,
))
