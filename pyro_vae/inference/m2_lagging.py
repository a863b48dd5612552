"""Lagging Inference Networks (He et al. 2019) for the semi-supervised M2 model (004 Tables 3–4, LIN).

:func:`train_m2_lagging` is :func:`pyro_vae.inference.lagging.train_lagging` with the M2
objective J (Eq. 5 of 004, :func:`pyro_vae.inference.m2.m2_objective`) as the loss. The
*inference network* is the whole guide — ``q_φ(y | x)`` and ``q_φ(z | x, y)`` — and the
*decoder* the model's parameters. While a restart is aggressive, each minibatch starts with a
guide-only inner loop (:func:`~pyro_vae.inference.lagging.encoder_inner_loop`: the first step on
the minibatch, then fresh random minibatches of labelled and unlabelled points together) that
stops once the window-mean −J per point fell by less than ``threshold`` (at most
``max_inner_steps``); then one decoder-only step on the minibatch. ``threshold = T`` and
``window = R`` of 004 App. D's grid, as in the unsupervised variant.

Leaving aggressive mode: at each epoch's end I_q(x; z) is estimated on the validation ``x``;
a restart whose I_q rose by less than ``mi_threshold`` in an epoch is a plain M2 run from then
on. I_q needs one Gaussian encoder per point, so the codes come from ``q_φ(z | x, ŷ)`` at the
classifier's *predicted* label ``ŷ`` (the argmax one-hot of ``q_φ(y | x)`` for a discrete label,
its mean for a continuous one) for every validation point, labelled or not — the encoder as it
is used on unlabelled data, at its most probable branch, rather than the non-Gaussian mixture
over enumerated labels. With ``z_given_y=False`` this is exactly I_q of the z-encoder ``q_φ(z | x)``.

Restarts are a batch dimension with their own aggressive flags; :class:`RestartAdam` keeps a
masked restart bit-for-bit unchanged.
"""

from __future__ import annotations

from typing import Callable

import torch

from pyro_vae import checks
from pyro_vae.inference.lagging import LaggingSchedule, check_lin_options
from pyro_vae.inference.m2 import KINDS, _parts, check_training_args, m2_objective, validation_objective_m2
from pyro_vae.inference.svi import TrainResult, collect_parameters
from pyro_vae.inference.trainer import IndexBatches, finite_loss, run_epochs
from pyro_vae.metrics.mutual_info import mutual_info_gaussian_encoder

__all__ = ["predicted_labels", "m2_mutual_info", "train_m2_lagging"]


def predicted_labels(guide, x: torch.Tensor) -> torch.Tensor:
    """``ŷ`` per point, ``([R,] N, label_dim)``: argmax one-hot of ``q(y|x)``, or its mean."""
    q = guide.label_distribution(x)
    if getattr(guide, "label_kind", "discrete") == "continuous":
        return q.mean
    logits = guide.classifier(x)
    return torch.nn.functional.one_hot(logits.argmax(-1), logits.shape[-1]).to(x)


def m2_mutual_info(guide, x: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """I_q(x; z) of ``q_φ(z | x, ŷ)`` per restart, nats, ``(R,)`` (one code per point, fixed seed)."""
    with torch.no_grad():
        q = guide.latent_distribution(x, predicted_labels(guide, x))
        loc, scale = q.loc.reshape(-1, *q.loc.shape[-2:]), q.scale.reshape(-1, *q.scale.shape[-2:])
        return torch.stack([mutual_info_gaussian_encoder(loc[r], scale[r], num_samples=1, seed=seed, per_dim=False).cpu()
                            for r in range(loc.shape[0])])


def train_m2_lagging(
    model: Callable, guide: Callable, train, val=None, *, objective: str = "elbo", alpha: float = 0.0,
    gamma: float = 1.0, num_particles: int = 1, threshold: float = 0.1, window: int = 5, max_inner_steps: int = 100,
    mi_threshold: float = 0.0, epochs: int = 100, batch_size: int = 100, lr: float = 1e-3, seed: int = 0,
    progress: bool = True, callback: Callable[[int, dict], None] | None = None, val_every: int = 1,
) -> TrainResult:
    """Fit an M2 model and guide by maximising J with aggressive guide training (module doc).

    Parameters
    ----------
    model, guide, train, val, objective, alpha, gamma, num_particles, epochs, batch_size, lr, seed
        As in :func:`pyro_vae.inference.m2.train_m2`.
    threshold, window, max_inner_steps
        The inner loop's stopping rule (T and R of 004 App. D, nats per point) and length cap.
    mi_threshold : float
        Leave aggressive mode when I_q(x; z) on ``val.x`` rose by less than this in an epoch.

    Returns
    -------
    TrainResult
        Rows as in ``train_m2`` plus ``aggressive`` (during the epoch), ``inner_steps`` (guide-only
        steps in the epoch) and ``mutual_info`` (I_q at its end while aggressive, else None).
        ``steps`` counts inner and outer steps.

    Raises
    ------
    ValueError
        Bad arguments (naming them), before any work.
    TrainingError
        A non-finite loss; the message names the step and restart.
    """
    train, val = checks.labelled_data(model, guide, train, val, lr=lr, alpha=alpha, gamma=gamma)
    check_lin_options(dict(threshold=threshold, window=window, max_inner_steps=max_inner_steps,
                           mi_threshold=mi_threshold))
    if objective not in KINDS:
        raise ValueError(f"objective={objective!r}: expected one of {KINDS}")
    val = check_training_args(train, val, alpha=alpha, gamma=gamma, num_particles=num_particles,
                              epochs=epochs, batch_size=batch_size, lr=lr)
    n = train.x.shape[0]
    particles = num_particles if objective == "iwae" else 1
    decoder = collect_parameters(model, example_args=(train.x[:2],))
    seen = {id(p) for p in decoder}
    encoder = [p for p in collect_parameters(guide, example_args=(train.x[:2],)) if id(p) not in seen]
    batched, dev = getattr(model, "num_restarts", None), train.x.device

    def loss_fn(idx: torch.Tensor) -> torch.Tensor:
        """−J per restart summed over the minibatch ``idx`` of ``train``; TrainingError if not finite."""
        return finite_loss(lambda: -m2_objective(model, guide, *_parts(train, idx), alpha=alpha, gamma=gamma,
                                                 kind=objective, num_particles=particles), lin.where)

    lin = LaggingSchedule(loss_fn, encoder, decoder, batched, lr, dev, threshold=threshold, window=window,
                          max_inner_steps=max_inner_steps, mi_threshold=mi_threshold, inner="guide")
    batches, inner_gen, seeds, epoch_now = IndexBatches(n, batch_size, seed, dev), torch.Generator(), [], [0]

    def start_epoch(epoch):
        epoch_now[0] = epoch
        seeds[:] = torch.randint(2**62, (batches.steps_per_epoch,), generator=batches.generator).tolist()

    def step(idx, i):
        inner_gen.manual_seed(seeds[i])  # the same fresh minibatches however long the loop runs
        return lin.step(idx, lambda j: idx if j == 0 else torch.randperm(n, generator=inner_gen)[:batch_size].to(dev),
                        epoch_now[0])

    return run_epochs(
        step, batches, epochs=epochs, num_restarts=batched or 1, seed=seed,
        validate=lambda: validation_objective_m2(model, guide, val, alpha=alpha, gamma=gamma, kind=objective,
                                                 num_particles=particles),
        val_every=val_every, on_epoch_start=start_epoch, on_epoch_end=lambda e: lin.end_epoch(lambda: m2_mutual_info(guide, val.x, seed)),
        desc=f"train m2 lin {objective}", progress=progress, callback=callback, step_counter=lambda: lin.steps,
    )
