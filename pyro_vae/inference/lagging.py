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
import time
from typing import Callable, Sequence

import pyro
import torch
from tqdm.auto import tqdm

from pyro_vae.inference.methods import Method, register_method
from pyro_vae.inference.fixed_model import frozen as _frozen  # no gradients for the given params
from pyro_vae.inference.objectives import VariationalObjective
from pyro_vae.inference.svi import (
    TrainingError, TrainResult, _check_positive_int, _num_restarts, collect_parameters, validation_objective,
)
from pyro_vae.metrics.mutual_info import mutual_info_gaussian_encoder
from pyro_vae.models import unregistered

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
    batch: Callable[[int], torch.Tensor], active: torch.Tensor, *, threshold: float = 0.1, window: int = 5,
    max_steps: int = 100,
) -> torch.Tensor:
    """The aggressive inner loop: encoder-only steps of the ``active`` restarts (bool ``(R,)``).

    ``loss_fn(x)`` is the per-restart loss summed over ``x``, ``batch(j)`` the minibatch of
    step j. The decoder is frozen throughout. A restart stops when the mean per-point loss of
    its last ``window`` steps fell by less than ``threshold`` from the window before, or after
    ``max_steps``. Returns the encoder steps each restart took.
    """
    active = active.clone()
    steps = torch.zeros(active.shape, dtype=torch.long, device=active.device)
    window_sum = torch.zeros(active.shape, dtype=torch.float64, device=active.device)
    previous = torch.full_like(window_sum, math.inf)
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
            window_sum += loss.detach().double() / x.shape[0]
            if (j + 1) % window == 0:
                current = window_sum / window
                active &= (previous - current) >= threshold
                previous, window_sum = current, torch.zeros_like(window_sum)
    return steps


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
    _real("threshold", options["threshold"])
    _real("mi_threshold", options["mi_threshold"])
    _check_positive_int("window", options["window"])
    _check_positive_int("max_inner_steps", options["max_inner_steps"])


def check_segment_options(options: dict) -> None:
    """ValueError naming a bad ``segments`` or ``encoder_fraction``."""
    _check_positive_int("segments", options["segments"])
    _real("encoder_fraction", options["encoder_fraction"])
    if not 0 < options["encoder_fraction"] < 1:
        raise ValueError(f"encoder_fraction={options['encoder_fraction']!r}: expected a number strictly between 0 and 1")


class _Trainer:
    """What both variants share: checks, encoder/decoder split, optimisers, loss and epoch loop."""

    def __init__(self, model, guide, x_train, x_val, objective, num_particles, epochs, batch_size, lr):
        if objective not in ("elbo", "iwae"):
            raise ValueError(f"objective={objective!r}: expected 'elbo' or 'iwae'")
        for name, value in (("epochs", epochs), ("batch_size", batch_size), ("num_particles", num_particles)):
            _check_positive_int(name, value)
        if not (isinstance(lr, (int, float)) and lr > 0):
            raise ValueError(f"lr={lr!r}: expected a positive number")
        if x_train.dim() != 2 or x_train.shape[0] == 0:
            raise ValueError(f"x_train of shape {tuple(x_train.shape)}: expected (N, D) with N > 0")
        self.n = x_train.shape[0]
        if batch_size > self.n:
            raise ValueError(f"batch_size={batch_size}: larger than the {self.n} training points")
        self.model, self.guide, self.x_train, self.objective = model, guide, x_train, objective
        self.x_val = x_train if x_val is None else x_val
        self.epochs, self.batch_size, self.steps_per_epoch = epochs, batch_size, -(-self.n // batch_size)
        self.particles = num_particles if objective == "iwae" else 1
        self.elbo = VariationalObjective(objective, self.particles, 1.0)
        self.restarts = _num_restarts(model)
        self.decoder = collect_parameters(model, example_args=(x_train[:2],))
        seen = {id(p) for p in self.decoder}
        self.encoder = [p for p in collect_parameters(guide, example_args=(x_train[:2],)) if id(p) not in seen]
        if not self.encoder or not self.decoder:
            raise ValueError("lagging inference needs trainable parameters in both the guide and the model")
        self.enc_optim = RestartAdam(self.encoder, getattr(model, "num_restarts", None), lr)
        self.dec_optim = RestartAdam(self.decoder, getattr(model, "num_restarts", None), lr)
        self.everyone = torch.ones(self.restarts, dtype=torch.bool, device=x_train.device)
        self.where, self.step = "", 0

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        """Per-restart negative bound summed over ``x``; a non-finite one raises TrainingError."""
        try:
            per_restart = -self.elbo.per_point(self.model, self.guide, x).sum(-1)
        except ValueError as err:  # Pyro's validation meets a NaN before the loss does
            if "invalid values" not in str(err):
                raise
            raise TrainingError(f"non-finite values at {self.where}: {str(err).splitlines()[0]}") from err
        if not torch.isfinite(per_restart).all():
            bad = int((~torch.isfinite(per_restart)).nonzero()[0, 0])
            raise TrainingError(f"loss is {per_restart[bad].item()} at {self.where} in restart {bad}; nothing was saved")
        return per_restart

    def run(self, desc, on_batch, on_epoch, seed, progress, callback) -> TrainResult:
        """Epochs of shuffled minibatches: ``on_batch(epoch, x, seed)`` → the minibatch's loss
        (R,); ``on_epoch(epoch)`` → extra history columns (lists over restarts)."""
        pyro.set_rng_seed(seed)
        gen, dev, bs, history = torch.Generator().manual_seed(seed), self.x_train.device, self.batch_size, []
        val, start = torch.full((self.restarts,), float("nan")), time.perf_counter()
        with unregistered():
            bar = tqdm(range(1, self.epochs + 1), desc=desc, disable=not progress, leave=False, unit="epoch")
            for epoch in bar:
                order = torch.randperm(self.n, generator=gen).to(dev)
                seeds = torch.randint(2**62, (self.steps_per_epoch,), generator=gen).tolist()
                epoch_loss = torch.zeros(self.restarts, device=dev)
                for i in range(self.steps_per_epoch):
                    epoch_loss += on_batch(epoch, self.x_train[order[i * bs : (i + 1) * bs]], seeds[i])
                extra = on_epoch(epoch)
                val = validation_objective(self.model, self.guide, self.x_val, self.objective, self.particles)
                train_loss = (epoch_loss / self.n).cpu()
                for r in range(self.restarts):
                    row = {"epoch": epoch, "restart": r, "train_loss": float(train_loss[r]), "val_objective": float(val[r])}
                    history.append({**row, **{k: v[r] for k, v in extra.items()}})
                    if callback is not None:
                        callback(self.step, history[-1])
                bar.set_postfix(loss=f"{train_loss.min().item():.4f}", val=f"{val.max().item():.4f}")
        best = int(torch.nan_to_num(val, nan=-float("inf")).argmax())
        return TrainResult(history, val, best, self.step, time.perf_counter() - start)


def train_lagging(
    model: Callable, guide: Callable, x_train: torch.Tensor, x_val: torch.Tensor | None = None, *,
    objective: str = "elbo", num_particles: int = 1, threshold: float = 0.1, window: int = 5,
    max_inner_steps: int = 100, mi_threshold: float = 0.0, epochs: int = 100, batch_size: int = 100,
    lr: float = 1e-3, seed: int = 0, progress: bool = True, callback: Callable[[int, dict], None] | None = None,
) -> TrainResult:
    """Aggressive training of the inference network (He et al. 2019, Algorithm 1; module doc).

    Parameters
    ----------
    guide :
        Needs ``distribution(x)`` (a Gaussian encoder, e.g. MeanFieldGuide) for I_q.
    threshold, window, max_inner_steps :
        The inner loop's stopping rule (T and R of 004 App. D) and its length cap.
    mi_threshold : float
        Leave aggressive mode when I_q(x; z) on ``x_val`` rose by less than this in an epoch.
    others :
        As in :func:`pyro_vae.inference.train` (``objective`` "elbo" or "iwae").

    Returns
    -------
    TrainResult
        Rows add ``aggressive`` (during the epoch), ``inner_steps`` (encoder-only steps in the
        epoch), ``mutual_info`` (I_q at its end while aggressive, else None). ``steps`` counts
        inner and outer steps.
    """
    check_lin_options(dict(threshold=threshold, window=window, max_inner_steps=max_inner_steps, mi_threshold=mi_threshold))
    t = _Trainer(model, guide, x_train, x_val, objective, num_particles, epochs, batch_size, lr)
    if not callable(getattr(guide, "distribution", None)):
        raise ValueError("method 'lin' needs a guide with distribution(x) -> Normal (e.g. MeanFieldGuide) for I_q")
    inner_gen, dev = torch.Generator(), x_train.device
    state = {"aggressive": t.everyone.clone(), "previous_mi": torch.full((t.restarts,), -math.inf, dtype=torch.float64),
             "inner": torch.zeros(t.restarts, dtype=torch.long, device=dev), "was": t.everyone.clone()}

    def on_batch(epoch, xb, seed_i):
        aggressive = state["aggressive"]
        if bool(aggressive.any()):
            inner_gen.manual_seed(seed_i)  # the same fresh minibatches however long the loop runs

            def batch(j):
                return xb if j == 0 else x_train[torch.randperm(t.n, generator=inner_gen)[:batch_size].to(dev)]

            t.where = f"an encoder-only step after step {t.step} (epoch {epoch})"
            taken = encoder_inner_loop(t.loss, t.enc_optim, t.decoder, batch, aggressive,
                                       threshold=threshold, window=window, max_steps=max_inner_steps)
            state["inner"] += taken
            t.step += int(taken.max())
        t.where = f"step {t.step + 1} (epoch {epoch})"
        loss = t.loss(xb)
        t.enc_optim.zero_grad(), t.dec_optim.zero_grad()
        with _frozen(t.encoder) if bool(aggressive.all()) else contextlib.nullcontext():
            loss.sum().backward()
        t.dec_optim.step(t.everyone)
        t.enc_optim.step(~aggressive)  # the aggressive restarts take a decoder-only step
        t.step += 1
        return loss.detach()

    def on_epoch(epoch):
        aggressive, mi = state["aggressive"], [None] * t.restarts
        extra = {"aggressive": state["was"].tolist(), "inner_steps": state["inner"].tolist()}
        if bool(aggressive.any()):
            current = _mutual_info(guide, t.x_val, seed)
            mi = [float(v) if a else None for v, a in zip(current, aggressive.tolist())]
            aggressive &= ((current - state["previous_mi"]) >= mi_threshold).to(dev)
            state["previous_mi"] = current
        state["inner"].zero_()
        state["was"] = aggressive.clone()
        return {**extra, "mutual_info": mi}

    return t.run("train lin", on_batch, on_epoch, seed, progress, callback)


def train_lagging_segments(
    model: Callable, guide: Callable, x_train: torch.Tensor, x_val: torch.Tensor | None = None, *,
    segments: int = 10, encoder_fraction: float = 0.5, objective: str = "elbo", num_particles: int = 1,
    epochs: int = 100, batch_size: int = 100, lr: float = 1e-3, seed: int = 0, progress: bool = True,
    callback: Callable[[int, dict], None] | None = None,
) -> TrainResult:
    """000 App. E's lagging inference: ``segments`` equal segments of the training steps, each
    training the inference network alone (its first ``encoder_fraction``), then both jointly.

    The segments cut the ``epochs × ceil(N / batch_size)`` steps, so they are whole epochs when
    ``epochs`` is a multiple of ``segments``; each has at least one step of either kind.
    History rows add ``encoder_steps`` (encoder-only steps in the epoch); other arguments as
    in :func:`train_lagging`.
    """
    check_segment_options(dict(segments=segments, encoder_fraction=encoder_fraction))
    t = _Trainer(model, guide, x_train, x_val, objective, num_particles, epochs, batch_size, lr)
    total = epochs * t.steps_per_epoch
    if 2 * segments > total:
        raise ValueError(f"segments={segments}: more than half the {total} training steps; each segment needs 2")
    bounds = [round(k * total / segments) for k in range(segments + 1)]
    alone = torch.zeros(total, dtype=torch.bool)
    for a, b in zip(bounds[:-1], bounds[1:]):
        alone[a : a + min(b - a - 1, max(1, round(encoder_fraction * (b - a))))] = True
    counts = [0]

    def on_batch(epoch, xb, seed_i):
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

    return t.run("train lin_segments", on_batch, on_epoch, seed, progress, callback)


def _fit_lin(model, guide, x_train, x_val, config, progress: bool = True) -> TrainResult:
    o = config.options
    return train_lagging(
        model, guide, x_train, x_val, threshold=o["threshold"], window=o["window"], max_inner_steps=o["max_inner_steps"],
        mi_threshold=o["mi_threshold"], epochs=config.epochs, batch_size=config.batch_size, lr=config.lr,
        seed=config.seed, progress=progress,
    )


def _fit_segments(model, guide, x_train, x_val, config, progress: bool = True) -> TrainResult:
    o = config.options
    return train_lagging_segments(
        model, guide, x_train, x_val, segments=o["segments"], encoder_fraction=o["encoder_fraction"],
        epochs=config.epochs, batch_size=config.batch_size, lr=config.lr, seed=config.seed, progress=progress,
    )


register_method("lin", Method(
    _fit_lin, {"threshold": 0.1, "window": 5, "max_inner_steps": 100, "mi_threshold": 0.0},
    "Lagging Inference Networks (He et al. 2019): aggressive encoder steps; T=threshold, R=window (004 App. D)",
    check_lin_options,
))
register_method("lin_segments", Method(
    _fit_segments, {"segments": 10, "encoder_fraction": 0.5},
    "Lagging inference as in 000 App. E: R=segments, in each the encoder alone, then both jointly",
    check_segment_options,
))
