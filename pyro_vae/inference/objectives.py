"""Per-data-point variational bounds computed on Pyro traces: ELBO, IWAE and β-ELBO.

All three are built from the log importance weights of ``num_particles`` vectorised
draws from the guide,

    log w_s(x) = log p_θ(x, z_s) − log q_φ(z_s | x),   z_s ~ q_φ(z | x),

* ELBO (Eq. 2 of 004 / Eq. 2 of 000): mean over s of log w_s.
* IWAE (Burda et al. 2016, Eq. 14 of 004): logsumexp over s of log w_s − log S.
* β-ELBO (Higgins et al. 2017): the ELBO with the latent site ``"z"`` scaled by β in both
  model and guide, ``E_q[log p(x|z)] − β·KL(q(z|x) ‖ p(z))``.

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

import pyro
import pyro.poutine as poutine
import torch
from pyro.infer import ELBO
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import site_is_subsample

KINDS = ("elbo", "iwae")
PARTICLE_PLATE = "particles"


class ScaleSites(Messenger):
    """Multiply the log-density of the named sites by a factor (β of the β-VAE)."""

    def __init__(self, scales: dict[str, float]):
        super().__init__()
        self.scales = scales

    def _process_message(self, msg):
        factor = self.scales.get(msg["name"])
        if factor is not None and msg["type"] == "sample":
            msg["scale"] = factor * msg["scale"]


def _site_log_prob(site: dict) -> torch.Tensor:
    fn, value = site["fn"], site["value"]
    lp = fn.log_prob(value)
    if site["scale"] is not None and not (isinstance(site["scale"], float) and site["scale"] == 1.0):
        lp = lp * site["scale"]
    if site["mask"] is not None:
        lp = lp * site["mask"]
    return lp


def _check_site(site: dict, role: str) -> None:
    if not any(frame.name == "data" for frame in site["cond_indep_stack"]):
        raise ValueError(
            f"{role} site {site['name']!r} is outside the plate 'data': the bound is per data point "
            "only when every sample site sits in that plate"
        )
    if role == "guide" and not site["fn"].has_rsample:
        raise ValueError(
            f"guide site {site['name']!r} is not reparameterisable ({type(site['fn']).__name__}); "
            "use a relaxed distribution or Pyro's Trace_ELBO/TraceEnum_ELBO"
        )


def log_weights(
    model: Callable,
    guide: Callable,
    *args,
    num_particles: int = 1,
    site_scales: dict[str, float] | None = None,
    max_plate_nesting: int = 2,
    **kwargs,
) -> torch.Tensor:
    """Log importance weights ``log p(x, z_s) − log q(z_s | x)``, shape ``(S, [R,] N)``.

    Parameters
    ----------
    model, guide : callable
        Pyro programs taking the same arguments.
    num_particles : int
        S, drawn in one vectorised pass in a plate left of the model's plates.
    site_scales : dict, optional
        Per-site log-density factors (e.g. ``{"z": beta}``).
    max_plate_nesting : int
        Plates the model uses (2 with restarts); the particle plate goes left of them.
    """
    if not isinstance(num_particles, int) or num_particles < 1:
        raise ValueError(f"num_particles={num_particles!r}: expected a positive integer")
    scaler = ScaleSites(site_scales or {})
    with pyro.plate(PARTICLE_PLATE, num_particles, dim=-(max_plate_nesting + 1)), scaler:
        guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(*args, **kwargs)
    total = 0.0
    for role, trace, sign in (("model", model_trace, 1.0), ("guide", guide_trace, -1.0)):
        for site in trace.nodes.values():
            if site["type"] != "sample" or site_is_subsample(site):
                continue
            _check_site(site, role)
            total = total + sign * _site_log_prob(site)
    if not torch.is_tensor(total):
        raise ValueError("the model has no sample sites")
    if total.dim() > max_plate_nesting + 1:
        raise ValueError(f"log weights of shape {tuple(total.shape)}: more plates than max_plate_nesting={max_plate_nesting}")
    while total.dim() < max_plate_nesting + 1:  # e.g. an unbatched guide: (S, N) -> (S, 1, N)
        total = total.unsqueeze(1)
    return total


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
    beta: float = 1.0,
    max_plate_nesting: int = 2,
) -> torch.Tensor:
    """Per-data-point lower bound of ``log p_θ(x)``, shape ``([R,] N)``; see the module doc."""
    if kind not in KINDS:
        raise ValueError(f"kind={kind!r}: expected one of {KINDS}")
    if not beta > 0:
        raise ValueError(f"beta={beta!r}: expected a positive number")
    scales = None if beta == 1.0 else {"z": float(beta)}
    log_w = log_weights(
        model, guide, x, num_particles=num_particles, site_scales=scales, max_plate_nesting=max_plate_nesting
    )
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
