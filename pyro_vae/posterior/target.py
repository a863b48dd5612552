"""The unnormalised posterior ``p(x | z) p(z)`` of any Pyro model, for the grid and for NUTS.

:class:`ModelTarget` reads a Pyro model — a data set's ground truth, a learned
:class:`~pyro_vae.models.VAEModel` or a user's own model — through Pyro traces: the model is
called as ``model(x)`` with observations ``x`` of shape (N, D), its observed site (the one it
observes when given ``x``, e.g. ``"x"``) is conditioned on the observation (``poutine.condition``) and its one latent site
(found by tracing, or named) on the value ``z`` of shape (N, K) being scored; the log joint is
the sum of every site's log-density (scale and mask honoured). The grid
(:mod:`pyro_vae.posterior.grid`) evaluates the latent site's prior and the observed site's
distribution once per grid point and scores every x against them; NUTS
(:mod:`pyro_vae.posterior.nuts`) differentiates the log joint in the unconstrained coordinate
``u = biject_to(support)⁻¹(z)``.

:class:`PosteriorTarget` is the closed-form special case ``z ~ N(0, I) or U(0, 1)^K``,
``x | z ~ N(f(z), diag σ²)`` given by ``f`` and σ² directly (the density images of
:mod:`pyro_vae.plots.density` use its ``f``; :func:`likelihood_target` builds it from a data set
or a model). Both answer the same questions (``log_joint``, ``log_prior``, ``observation``,
``transform``, ``initial_points``), so the grid, NUTS and the KLs take either.
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import torch
from pyro.poutine.util import site_is_subsample
from torch.distributions import biject_to, constraints

PRIORS = ("normal", "uniform")
_LOG_2PI = math.log(2 * math.pi)


def _quantiles_to_points(p: torch.Tensor, prior: str) -> torch.Tensor:
    if prior == "uniform":
        return p
    return math.sqrt(2.0) * torch.special.erfinv(2 * p - 1)


class PosteriorTarget(NamedTuple):
    """``z ~ prior``, ``x | z ~ N(f(z), diag(noise_var))``, given directly.

    Attributes
    ----------
    f : callable
        ``(..., K) -> (..., D)`` decoder mean.
    noise_var : Tensor (D,)
        Per-dimension variance of ``x | z``, float64.
    latent_dim : int
    prior : {"normal", "uniform"}
    dtype : torch.dtype
        The dtype ``f`` is evaluated in.
    name : str
        What the target describes (for provenance records).
    """

    f: Callable[[torch.Tensor], torch.Tensor]
    noise_var: torch.Tensor
    latent_dim: int
    prior: str = "normal"
    dtype: torch.dtype = torch.float64
    name: str = ""

    @property
    def obs_dim(self) -> int:
        return self.noise_var.numel()

    def log_prior(self, z: torch.Tensor) -> torch.Tensor:
        """``log p(z)`` summed over the K dimensions, shape ``z.shape[:-1]``."""
        if self.prior == "uniform":
            inside = ((z >= 0) & (z <= 1)).all(-1)
            return torch.where(inside, z.new_zeros(()), z.new_full((), -math.inf))
        return -0.5 * (z**2).sum(-1) - 0.5 * self.latent_dim * _LOG_2PI

    def log_likelihood(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """``log N(x; f(z), diag σ²)``, broadcasting ``x`` (..., D) against ``f(z)`` (..., D); float64."""
        loc = self.f(z.to(self.dtype)).to(torch.float64)
        var = self.noise_var.to(loc.device)
        return -0.5 * (((x.to(loc) - loc) ** 2) / var + var.log() + _LOG_2PI).sum(-1)

    def log_joint(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """``log p(x | z) + log p(z)``; float64."""
        return self.log_likelihood(x, z) + self.log_prior(z.to(torch.float64))

    def observation(self, points: torch.Tensor) -> tuple[Any, torch.Tensor]:
        """``p(x | z_g)`` (batch (G,), event (D,)) and ``log p(z_g)`` (G,) float64 at points (G, K)."""
        with torch.no_grad():
            loc = self.f(points.to(self.dtype)).to(torch.float64)
        scale = self.noise_var.to(loc).sqrt().expand_as(loc)
        return dist.Normal(loc, scale, validate_args=False).to_event(1), self.log_prior(points.to(torch.float64))

    @property
    def transform(self):
        support = constraints.real_vector if self.prior == "normal" else constraints.independent(constraints.unit_interval, 1)
        return biject_to(support)

    def initial_points(self, p: torch.Tensor) -> torch.Tensor:
        """Points of the prior at quantiles ``p`` (C, K) in (0, 1)."""
        return _quantiles_to_points(p.to(torch.float64), self.prior)


def _latent_support_kind(support) -> str:
    base = support
    while isinstance(base, constraints.independent):
        base = base.base_constraint
    if base is constraints.real or isinstance(base, type(constraints.real)):
        return "normal"
    if isinstance(base, constraints.interval) and float(base.lower_bound) == 0.0 and float(base.upper_bound) == 1.0:
        return "uniform"
    return "other"


class ModelTarget:
    """The posterior of a Pyro model's latent site given its observed site (see the module docstring).

    Parameters
    ----------
    model : callable
        A Pyro model called as ``model(x)`` with ``x`` of shape (N, D), whose latent and
        observed sites sit in a plate of size N (e.g. ``"data"``).
    obs_dim : int
        D.
    observed : str, optional
        The observed site's name; by default the one site the model observes when given ``x``.
    latent : str, optional
        The latent site's name; by default the model's only latent site.
    dtype : torch.dtype, optional
        The dtype the model runs in (default: its parameters', else float64).
    name : str
        What the target describes (for provenance records).

    Raises
    ------
    ValueError
        A restart-batched model, a missing observed site, several or no latent sites, or a
        latent site that is not a vector (event shape (K,)).
    """

    def __init__(self, model: Callable, obs_dim: int, *, observed: str | None = None, latent: str | None = None,
                 dtype: torch.dtype | None = None, name: str = ""):
        if getattr(model, "num_restarts", None):
            raise ValueError("model is restart-batched: select one restart first (pyro_vae.nets.select_restart)")
        if isinstance(obs_dim, bool) or not isinstance(obs_dim, int) or obs_dim < 1:
            raise ValueError(f"obs_dim={obs_dim!r}: expected a positive integer")
        self.model, self.obs_dim = model, obs_dim
        self.dtype = dtype or (_module_dtype(model) if isinstance(model, torch.nn.Module) else torch.float64)
        self.name = name or f"model:{getattr(model, '__qualname__', type(model).__name__)}"
        self.device = _module_device(model) if isinstance(model, torch.nn.Module) else None  # else: the data's
        self.observed = observed
        trace = self._trace(torch.zeros(1, obs_dim, dtype=self.dtype, device=self.device), None, draw=True,
                            condition_x=observed is not None)
        sites = {n: s for n, s in trace.nodes.items() if s["type"] == "sample" and not site_is_subsample(s)}
        if observed is None:  # the one site the model observes when given x
            seen = [n for n, s in sites.items() if s["is_observed"]]
            if len(seen) != 1:
                raise ValueError(f"the model observes sites {seen} when called with x: name the observed one with observed=")
            observed = self.observed = seen[0]
        if observed not in sites:
            raise ValueError(f"observed={observed!r}: the model has no sample site of that name (sites: {sorted(sites)})")
        latents = [n for n, s in sites.items() if n != observed and not s["is_observed"]]
        if latent is None:
            if len(latents) != 1:
                raise ValueError(f"the model has latent sites {latents}: the posterior tools need exactly one "
                                 "(name it with latent=)")
            latent = latents[0]
        elif latent not in latents:
            raise ValueError(f"latent={latent!r}: the model's latent sites are {latents}")
        fn = sites[latent]["fn"]
        if len(fn.event_shape) != 1:
            raise ValueError(f"latent site {latent!r} has event shape {tuple(fn.event_shape)}: expected a vector "
                             "(K,) (write the prior with .to_event(1))")
        self.latent, self.latent_dim = latent, int(fn.event_shape[0])
        self.prior = _latent_support_kind(fn.support)
        self._prior_fn = fn
        self.transform = biject_to(fn.support)

    def _trace(self, x: torch.Tensor, z: torch.Tensor | None, *, draw: bool = False, condition_x: bool = True):
        from pyro_vae.models import unregistered

        if z is not None and self.prior == "uniform":  # torch's Uniform excludes 1: score the grid's edge just inside
            z = torch.where(z == 1, torch.nextafter(z.new_ones(()), z.new_zeros(())), z)
        data = {} if z is None else {self.latent: z}
        if condition_x:
            data[self.observed] = x
        with unregistered(), pyro.validation_enabled(False):
            program = poutine.condition(self.model, data=data)
            if draw:
                with torch.random.fork_rng(devices=[]), torch.no_grad():
                    return poutine.trace(program).get_trace(x)
            return poutine.trace(program).get_trace(x)

    def _flat(self, x: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Size]:
        batch = _broadcast(x.shape[:-1], z.shape[:-1])
        device = self.device or z.device
        xb = x.to(device=device, dtype=self.dtype).expand(*batch, self.obs_dim).reshape(-1, self.obs_dim)
        zb = z.to(device=device, dtype=self.dtype).expand(*batch, self.latent_dim).reshape(-1, self.latent_dim)
        return xb, zb, batch

    def log_joint(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """``log p(x, z)`` through the conditioned model, broadcasting x (..., D) and z (..., K); float64."""
        from pyro_vae.traces import trace_log_probs

        xb, zb, batch = self._flat(x, z)
        trace = self._trace(xb, zb)
        with pyro.validation_enabled(False):
            total = trace_log_probs(trace)
        return total.to(torch.float64).reshape(batch)

    def log_prior(self, z: torch.Tensor) -> torch.Tensor:
        """``log p(z)`` of the latent site, shape ``z.shape[:-1]``; float64."""
        return self.observation(z.reshape(-1, self.latent_dim))[1].reshape(z.shape[:-1])

    def log_likelihood(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """``log p(x | z)``: the log joint minus the prior; float64."""
        return self.log_joint(x, z) - self.log_prior(z.expand(*_broadcast(x.shape[:-1], z.shape[:-1]), self.latent_dim))

    def observation(self, points: torch.Tensor) -> tuple[Any, torch.Tensor]:
        """``p(x | z_g)`` (batch (G,), event (D,)) and ``log p(z_g)`` (G,) float64 at points (G, K)."""
        g = points.shape[0]
        device = self.device or points.device
        dummy = torch.zeros(g, self.obs_dim, dtype=self.dtype, device=device)
        with torch.no_grad():
            trace = self._trace(dummy, points.to(device=device, dtype=self.dtype))
            with pyro.validation_enabled(False):
                trace.compute_log_prob(lambda name, site: name == self.latent)  # scale and mask applied
            lp, obs = trace.nodes[self.latent]["log_prob"], trace.nodes[self.observed]
        fn = obs["fn"]
        if fn.event_dim == 0:
            fn = fn.to_event(1)
        return fn, lp.to(torch.float64).reshape(g)

    def initial_points(self, p: torch.Tensor) -> torch.Tensor:
        """Points of the prior at quantiles ``p`` (C, K) in (0, 1) (its marginal quantile functions)."""
        base = self._prior_fn
        while isinstance(base, torch.distributions.Independent):
            base = base.base_dist
        try:
            return base.icdf(p.to(device=self.device, dtype=self.dtype)).to(torch.float64).cpu().reshape(p.shape)
        except NotImplementedError:
            raise ValueError(f"the prior of site {self.latent!r} ({type(base).__name__}) has no quantile function: "
                             "give initial_points") from None


def _broadcast(a: tuple, b: tuple) -> torch.Size:
    """NumPy broadcasting of two shapes (plain Python: ``torch.broadcast_shapes`` costs milliseconds)."""
    n = max(len(a), len(b))
    a, b = (1,) * (n - len(a)) + tuple(a), (1,) * (n - len(b)) + tuple(b)
    out = []
    for i, j in zip(a, b):
        if i != j and 1 not in (i, j):
            raise ValueError(f"shapes {a} and {b} do not broadcast")
        out.append(max(i, j) if 1 in (i, j) else i)
    return torch.Size(out)


def _module_dtype(module: torch.nn.Module) -> torch.dtype:
    for p in module.parameters():
        return p.dtype
    for b in module.buffers():
        if b.is_floating_point():
            return b.dtype
    return torch.get_default_dtype()


def _module_device(module) -> torch.device:
    if isinstance(module, torch.nn.Module):
        for p in module.parameters():
            return p.device
        for b in module.buffers():
            return b.device
    return torch.device("cpu")


def _is_dataset(source) -> bool:
    return hasattr(source, "obs_noise_var") and hasattr(source, "prior") and hasattr(source, "model")


def posterior_target(source, *, obs_dim: int | None = None, observed: str | None = None, latent: str | None = None):
    """The posterior target of a data set's ground truth, a learned model or any Pyro model.

    Parameters
    ----------
    source : Dataset, VAEModel, Pyro model callable, ModelTarget or PosteriorTarget
        A data set: its ground-truth program ``dataset.model`` (float64, float32 with a
        surrogate network). A model (an unbatched ``VAEModel`` or any callable ``model(x)``):
        itself. A target: returned as it is.
    obs_dim : int, optional
        D, for a callable without an ``obs_dim`` attribute.
    observed, latent : str
        The observed and latent sites (see :class:`ModelTarget`).

    Raises
    ------
    ValueError
        For a restart-batched model (select a restart first) or anything that is not a model.
    """
    if isinstance(source, (PosteriorTarget, ModelTarget)):
        return source
    if _is_dataset(source):
        if source.prior not in PRIORS:
            raise ValueError(f"prior={source.prior!r}: expected one of {PRIORS}")
        dtype = torch.float32 if getattr(source, "surrogate", False) else torch.float64
        return ModelTarget(source.model, source.obs_dim, observed=observed, latent=latent, dtype=dtype,
                           name=f"dataset:{source.name}")
    if callable(source):
        if getattr(source, "num_restarts", None):
            raise ValueError("model is restart-batched: select one restart first (pyro_vae.nets.select_restart)")
        d = obs_dim if obs_dim is not None else getattr(source, "obs_dim", None)
        if d is None:
            raise ValueError("obs_dim=None: give the observations' dimension D for this model")
        name = "model" if hasattr(source, "decoder") else ""
        return ModelTarget(source, int(d), observed=observed, latent=latent, name=name)
    raise ValueError(f"source of type {type(source).__name__}: expected a Dataset, a Pyro model or a PosteriorTarget")


def likelihood_target(source) -> PosteriorTarget:
    """The closed-form :class:`PosteriorTarget` (``f``, σ², prior) of a data set or an unbatched VAEModel."""
    if isinstance(source, PosteriorTarget):
        return source
    if _is_dataset(source):
        if source.prior not in PRIORS:
            raise ValueError(f"prior={source.prior!r}: expected one of {PRIORS}")
        dtype = torch.float32 if getattr(source, "surrogate", False) else torch.float64
        noise = source.obs_noise_var(dtype=torch.float64).detach().reshape(-1)
        return PosteriorTarget(source.f, noise, source.latent_dim, source.prior, dtype, f"dataset:{source.name}")
    if hasattr(source, "decoder") and hasattr(source, "noise_variance"):
        if getattr(source, "num_restarts", None):
            raise ValueError("model is restart-batched: select one restart first (pyro_vae.nets.select_restart)")
        with torch.no_grad():
            noise = source.noise_variance().detach().double().reshape(-1)
        if noise.numel() != source.obs_dim:
            raise ValueError(f"model noise variance has {noise.numel()} entries: expected obs_dim={source.obs_dim}")
        return PosteriorTarget(source.decoder, noise, source.latent_dim, "normal", _module_dtype(source), "model")
    raise ValueError(f"source of type {type(source).__name__}: expected a Dataset, a VAEModel or a PosteriorTarget")
