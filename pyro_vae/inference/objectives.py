"""Per-data-point variational bounds computed on Pyro traces: ELBO, IWAE and β-ELBO.

All three are built from the log importance weights of ``num_particles`` vectorised
draws from the guide,

    log w_s(x) = log p_θ(x, z_s) − log q_φ(z_s | x),   z_s ~ q_φ(z | x),

* ELBO (Eq. 2 of 004 / Eq. 2 of 000): mean over s of log w_s.
* IWAE (Burda et al. 2016, Eq. 14 of 004): logsumexp over s of log w_s − log S.
* β-ELBO (Higgins et al. 2017): the ELBO with every latent site scaled by β in both model
  and guide, ``E_q[log p(x|z)] − β·KL(q(z|x) ‖ p(z))``.

The log weights come from Pyro traces over every sample site (:mod:`pyro_vae.traces`: scale
and mask honoured, model and guide sites matched, enumerated and — for training — non-
reparameterised guide sites refused).

The bounds are returned per data point (and per restart), so that the same code gives the
training loss, the per-restart validation objective and the selection of the best restart.
Every sample site must sit in the plate ``"data"``; otherwise the bound is not per data
point and the IWAE logsumexp would mix data points (checked). Minibatches go through a plate
of the batch's size — never a subsampling scale, which would land inside the logsumexp.

:class:`VariationalObjective` wraps a bound as a :class:`pyro.infer.ELBO`, so it also works
with :class:`pyro.infer.SVI`. With ``num_particles=S`` and ``kind="iwae"`` it is tested equal
to ``RenyiELBO(alpha=0, num_particles=S, vectorize_particles=True)`` on a full batch.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from pyro.infer import ELBO

from pyro_vae.traces import PARTICLE_PLATE, ScaleSites, log_weights as _trace_log_weights

KINDS = ("elbo", "iwae")
__all__ = ["KINDS", "PARTICLE_PLATE", "ScaleSites", "VariationalObjective", "bound", "bound_from_log_weights", "log_weights"]


def log_weights(model: Callable, guide: Callable, *args, **kwargs) -> torch.Tensor:
    """:func:`pyro_vae.traces.log_weights` for training: reparameterised guide sites required."""
    kwargs.setdefault("reparameterized", True)
    return _trace_log_weights(model, guide, *args, **kwargs)


def bound_from_log_weights(log_w: torch.Tensor, kind: str) -> torch.Tensor:
    """Reduce ``(S, ...)`` log weights to the per-data-point ELBO or IWAE bound."""
    if kind == "elbo":
        return log_w.mean(0)
    if kind == "iwae":
        return torch.logsumexp(log_w, 0) - math.log(log_w.shape[0])
    raise ValueError(f"kind={kind!r}: expected one of {KINDS}")


def bound(
    model: Callable,
    guide: Callable,
    x: torch.Tensor,
    *,
    kind: str = "elbo",
    num_particles: int = 1,
    beta: float | torch.Tensor = 1.0,
    max_plate_nesting: int = 2,
) -> torch.Tensor:
    """Per-data-point lower bound of ``log p_θ(x)``, shape ``([R,] N)``; see the module doc.

    ``beta`` may be an ``(R, 1)`` tensor: one β per restart (a group of β-VAE runs)."""
    if kind not in KINDS:
        raise ValueError(f"kind={kind!r}: expected one of {KINDS}")
    if not bool(torch.as_tensor(beta).gt(0).all()):
        raise ValueError(f"beta={beta!r}: expected a positive number")
    log_w = log_weights(model, guide, x, num_particles=num_particles,
                        latent_scale=beta if torch.is_tensor(beta) else float(beta), max_plate_nesting=max_plate_nesting)
    return bound_from_log_weights(log_w, kind)


class VariationalObjective(ELBO):
    """ELBO, IWAE or β-ELBO as a :class:`pyro.infer.ELBO`, usable with :class:`pyro.infer.SVI`.

    The loss is ``−Σ_{restarts, data} bound``; restarts share no parameter, so each restart
    receives exactly the gradient of its own single-run loss.
    """

    def __init__(self, kind: str = "elbo", num_particles: int = 1, beta: float = 1.0, max_plate_nesting: int = 2):
        if kind not in KINDS:
            raise ValueError(f"kind={kind!r}: expected one of {KINDS}")
        super().__init__(num_particles=num_particles, max_plate_nesting=max_plate_nesting, vectorize_particles=True)
        self.kind, self.beta = kind, beta
        self.model_plate_nesting = max_plate_nesting  # ELBO's own counter includes the particle plate

    def _get_trace(self, model, guide, args, kwargs):  # required by ELBO; traces are built in log_weights
        raise NotImplementedError

    def per_point(self, model: Callable, guide: Callable, x: torch.Tensor) -> torch.Tensor:
        return bound(
            model, guide, x, kind=self.kind, num_particles=self.num_particles, beta=self.beta,
            max_plate_nesting=self.model_plate_nesting,
        )

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        return -self.per_point(model, guide, *args, **kwargs).sum()

    def loss(self, model, guide, *args, **kwargs) -> float:
        with torch.no_grad():
            return self.differentiable_loss(model, guide, *args, **kwargs).item()

    def loss_and_grads(self, model, guide, *args, **kwargs) -> float:
        loss = self.differentiable_loss(model, guide, *args, **kwargs)
        loss.backward()
        return loss.item()
