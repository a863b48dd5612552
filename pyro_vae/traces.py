"""Log weights and log joints of Pyro programs, from Pyro traces: shared by training and metrics.

For a model ``p(x, z)`` and a guide ``q(z | x)`` run on the same arguments,

    log w_s = Σ_{model sites} log p(site) − Σ_{guide sites} log q(site),   z_s ~ q,

over *every* sample site (``trace.compute_log_prob``: each site's ``scale`` — e.g. ``poutine.scale``
or a subsampling plate — and ``mask`` honoured), with the model replayed against the guide's
draws. The sites must match: every latent (unobserved) site of the model is sampled by the
guide, and every guide site exists in the model. Enumerated sites (``infer={"enumerate": ...}``)
are refused: they need ``TraceEnum_ELBO``'s sum over values, not a draw. Training needs
reparameterised guide sites (``reparameterized=True``); importance sampling does not.

This module is used by the objectives (:mod:`pyro_vae.inference.objectives`), the log-likelihood
and ELBO decomposition metrics and the posterior tools. It names no site: β of the β-VAE scales
every latent site (``latent_scale``), whatever its name.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable

import pyro
import pyro.poutine as poutine
import torch
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import site_is_subsample

__all__ = [
    "PARTICLE_PLATE",
    "ScaleLatents",
    "ScaleSites",
    "diagonal_normal",
    "factorised_marginals",
    "guide_distribution",
    "guide_site_distributions",
    "latent_sites",
    "log_joint",
    "log_weights",
    "trace_log_probs",
]

PARTICLE_PLATE = "particles"
DATA_PLATE = "data"


class ScaleSites(Messenger):
    """Multiply the log-density of the named sample sites by a factor."""

    def __init__(self, scales: dict[str, float]):
        super().__init__()
        self.scales = scales

    def _process_message(self, msg):
        factor = self.scales.get(msg["name"])
        if factor is not None and msg["type"] == "sample":
            msg["scale"] = factor * msg["scale"]


class ScaleLatents(Messenger):
    """Multiply the log-density of every latent (unobserved) sample site by ``factor`` (β of the β-VAE)."""

    def __init__(self, factor: float | torch.Tensor):
        super().__init__()
        self.factor = factor

    def _process_message(self, msg):
        if msg["type"] == "sample" and not msg["is_observed"] and not site_is_subsample(msg):
            msg["scale"] = self.factor * msg["scale"]


def _sample_sites(trace) -> list[dict]:
    return [s for s in trace.nodes.values() if s["type"] == "sample" and not site_is_subsample(s)]


def _check_enumerated(site: dict, role: str) -> None:
    if site["infer"].get("enumerate") or site["infer"].get("_enumerate_dim") is not None:
        raise ValueError(
            f"{role} site {site['name']!r} is enumerated (infer={site['infer']!r}): log weights need one draw per "
            "site; use pyro.infer.TraceEnum_ELBO, or sample the site (e.g. a relaxed distribution)"
        )


def _check_per_point(site: dict, role: str) -> None:
    if not any(frame.name == DATA_PLATE for frame in site["cond_indep_stack"]):
        raise ValueError(
            f"{role} site {site['name']!r} is outside the plate {DATA_PLATE!r}: the bound is per data point "
            "only when every sample site sits in that plate"
        )


def _check_match(model_trace, guide_trace) -> None:
    guide_names = {s["name"] for s in _sample_sites(guide_trace)}
    model_sites = {s["name"]: s for s in _sample_sites(model_trace)}
    for name, site in model_sites.items():
        if not site["is_observed"] and name not in guide_names:
            raise ValueError(
                f"model site {name!r} is latent but the guide does not sample it: the log weight would score "
                f"a prior draw as if the guide had made it. Sample {name!r} in the guide (or observe it in the model)"
            )
    for name in guide_names:
        if name not in model_sites:
            raise ValueError(f"guide site {name!r} has no counterpart in the model: every guide site must be a "
                             "latent site of the model")
        if model_sites[name]["is_observed"]:
            raise ValueError(f"guide site {name!r} is observed in the model: a guide samples only latent sites")


def trace_log_probs(trace) -> torch.Tensor | float:
    """Σ of ``site["log_prob"]`` over a trace's sample sites (scale and mask applied, plates kept)."""
    trace.compute_log_prob(lambda name, site: not site_is_subsample(site))
    total: torch.Tensor | float = 0.0
    for site in _sample_sites(trace):
        total = total + site["log_prob"]
    return total


def log_weights(
    model: Callable,
    guide: Callable,
    *args,
    num_particles: int = 1,
    latent_scale: float | torch.Tensor = 1.0,
    site_scales: dict[str, float] | None = None,
    max_plate_nesting: int = 2,
    per_point: bool = True,
    reparameterized: bool = False,
    guide_handler: Callable[[Callable], Callable] | None = None,
    **kwargs,
) -> torch.Tensor:
    """Log importance weights ``log p(x, z_s) − log q(z_s | x)``, shape ``(S, [R,] N)``.

    Parameters
    ----------
    model, guide : callable
        Pyro programs taking the same arguments.
    num_particles : int
        S, drawn in one vectorised pass in a plate (``"particles"``) left of the model's plates.
    latent_scale : float or Tensor
        Factor on the log-density of every latent site, in the model and the guide (β); an
        ``(R, 1)`` tensor gives each restart its own (runs with different β in one group).
    site_scales : dict, optional
        Further per-site factors, by name.
    max_plate_nesting : int
        Plates the model uses (2 with restarts); the particle plate goes left of them.
    per_point : bool
        Require every site to sit in the plate ``"data"`` (a bound per data point).
    reparameterized : bool
        Require ``rsample`` at every guide site (pathwise gradients, for training).
    guide_handler : callable, optional
        Applied to the guide before tracing (e.g. a proposal that inflates its variance).

    Raises
    ------
    ValueError
        Unmatched, enumerated, non-reparameterised (when required) or out-of-plate sites.
    """
    if isinstance(num_particles, bool) or not isinstance(num_particles, int) or num_particles < 1:
        raise ValueError(f"num_particles={num_particles!r}: expected a positive integer")
    program = guide if guide_handler is None else guide_handler(guide)
    with contextlib.ExitStack() as stack:
        stack.enter_context(pyro.plate(PARTICLE_PLATE, num_particles, dim=-(max_plate_nesting + 1)))
        if torch.is_tensor(latent_scale) or latent_scale != 1.0:
            stack.enter_context(ScaleLatents(latent_scale if torch.is_tensor(latent_scale) else float(latent_scale)))
        if site_scales:
            stack.enter_context(ScaleSites(site_scales))
        guide_trace = poutine.trace(program).get_trace(*args, **kwargs)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(*args, **kwargs)
    for role, trace in (("guide", guide_trace), ("model", model_trace)):
        for site in _sample_sites(trace):
            _check_enumerated(site, role)
            if per_point:
                _check_per_point(site, role)
            if role == "guide" and reparameterized and not site["fn"].has_rsample:
                raise ValueError(
                    f"guide site {site['name']!r} is not reparameterisable ({type(site['fn']).__name__}): pathwise "
                    "gradients need rsample; use a relaxed distribution or Pyro's Trace_ELBO/TraceEnum_ELBO"
                )
    _check_match(model_trace, guide_trace)
    total = trace_log_probs(model_trace)
    if not torch.is_tensor(total):
        raise ValueError("the model has no sample sites")
    total = total - trace_log_probs(guide_trace)
    if total.dim() > max_plate_nesting + 1:
        raise ValueError(f"log weights of shape {tuple(total.shape)}: more plates than max_plate_nesting={max_plate_nesting}")
    while total.dim() < max_plate_nesting + 1:  # e.g. an unbatched guide: (S, N) -> (S, 1, N)
        total = total.unsqueeze(1)
    return total


def latent_sites(program: Callable, *args, **kwargs) -> dict[str, dict]:
    """The latent (unobserved, non-subsample) sample sites of one run of ``program``, by name, in order.

    The run uses its own random stream (the global generators are left as they were).
    """
    with torch.random.fork_rng(devices=[]), torch.no_grad(), poutine.block():
        trace = poutine.trace(program).get_trace(*args, **kwargs)
    return {s["name"]: s for s in _sample_sites(trace) if not s["is_observed"]}


def log_joint(model: Callable, *args, latents: dict[str, torch.Tensor], **kwargs) -> torch.Tensor:
    """``log p(x, z)`` of a Pyro model with its latent sites set to ``latents``, summed over sites.

    Every latent site must be given (a site left free would be drawn from its prior). The
    result has the batch shape of the sites' log-densities (plates kept; scale and mask
    applied), e.g. ``(S, N)`` for ``z`` of shape ``(S, N, K)`` and a plate over N.
    """
    trace = poutine.trace(poutine.condition(model, data=latents)).get_trace(*args, **kwargs)
    free = [s["name"] for s in _sample_sites(trace) if not s["is_observed"] and s["name"] not in latents]
    # poutine.condition marks the given sites observed; any other unobserved site was sampled
    if free:
        raise ValueError(f"latent site(s) {free} not given: log_joint needs a value for every latent site "
                         f"(given {sorted(latents)})")
    total = trace_log_probs(trace)
    if not torch.is_tensor(total):
        raise ValueError("the model has no sample sites")
    return total


def guide_site_distributions(guide: Callable, *args, **kwargs) -> dict[str, Any]:
    """``{site: distribution}`` of one run of ``guide`` (e.g. ``q(z | x)`` of batch (N,), event (K,)).

    The run uses its own random stream. For a guide whose later sites depend on earlier draws
    the later distributions are conditional on that run's draws.
    """
    return {name: site["fn"] for name, site in latent_sites(guide, *args, **kwargs).items()}


def guide_distribution(guide: Callable, x: torch.Tensor, *, site: str | None = None, **kwargs) -> Any:
    """``q(z | x)`` of a guide for the rows of ``x``: a distribution of batch ``(N,)`` and event ``(K,)``.

    ``guide`` is a Pyro guide (traced once, on its own random stream) or already a
    distribution (a batch ``(N, K)`` one is reinterpreted as event ``(K,)``). A guide with
    several latent sites needs ``site``.
    """
    if isinstance(guide, torch.distributions.Distribution):
        fn = guide
    else:
        with torch.no_grad():
            fns = guide_site_distributions(guide, x, **kwargs)
        if not fns:
            raise ValueError("the guide samples no latent site")
        if site is None:
            if len(fns) > 1:
                raise ValueError(f"the guide samples several latent sites {sorted(fns)}: name one with site=")
            site = next(iter(fns))
        if site not in fns:
            raise ValueError(f"site={site!r}: the guide samples {sorted(fns)}")
        fn = fns[site]
    if fn.event_dim == 0:
        fn = fn.to_event(1)
    if len(fn.event_shape) != 1:
        raise ValueError(f"q of event shape {tuple(fn.event_shape)}: expected a vector latent (K,)")
    return fn


def diagonal_normal(q: Any) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``(loc, scale)`` of batch + event shape when ``q`` is a diagonal Normal, else None."""
    fn = q
    while isinstance(fn, torch.distributions.Independent):
        fn = fn.base_dist
    if not isinstance(fn, torch.distributions.Normal):
        return None
    shape = q.batch_shape + q.event_shape
    return fn.loc.expand(shape), fn.scale.expand(shape)


def factorised_marginals(q: Any) -> Any | None:
    """The per-dimension distribution (batch ``(N, K)``) of a factorised ``q`` (an ``Independent`` of a
    univariate family), else None (e.g. a flow, whose coordinates are dependent)."""
    if isinstance(q, torch.distributions.Independent) and q.reinterpreted_batch_ndims == 1:
        base = q.base_dist
        if base.event_shape == torch.Size() and base.batch_shape == q.batch_shape + q.event_shape:
            return base
    return None
