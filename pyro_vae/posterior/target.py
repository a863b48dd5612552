"""The unnormalised posterior ``p(x | z) p(z)`` of a data set's truth or of a learned model.

A :class:`PosteriorTarget` is what the ground-truth posterior methods (grid quadrature in
:mod:`pyro_vae.posterior.grid`, NUTS in :mod:`pyro_vae.posterior.nuts`) need: the decoder
mean ``f``, the per-dimension noise variance of ``x | z ~ N(f(z), diag σ²)`` and the prior
(``"normal"``: N(0, I); ``"uniform"``: U(0, 1)^K). :func:`posterior_target` builds one from a
:class:`pyro_vae.datasets.Dataset` (its true ``f``, ``obs_noise_var()`` and prior) or an
unbatched :class:`pyro_vae.models.VAEModel` (its decoder, ``noise_variance()``, N(0, I)).
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import torch

PRIORS = ("normal", "uniform")
_LOG_2PI = math.log(2 * math.pi)


class PosteriorTarget(NamedTuple):
    """``z ~ prior``, ``x | z ~ N(f(z), diag(noise_var))``.

    Attributes
    ----------
    f : callable
        ``(..., K) -> (..., D)`` decoder mean.
    noise_var : Tensor (D,)
        Per-dimension variance of ``x | z``, float64.
    latent_dim : int
    prior : {"normal", "uniform"}
    dtype : torch.dtype
        The dtype ``f`` is evaluated in (a module decoder's parameter dtype; float64 for
        the data sets' closed-form functions).
    name : str
        What the target describes (for provenance records).
    """

    f: Callable[[torch.Tensor], torch.Tensor]
    noise_var: torch.Tensor
    latent_dim: int
    prior: str = "normal"
    dtype: torch.dtype = torch.float64
    name: str = ""

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


def _module_dtype(module: torch.nn.Module) -> torch.dtype:
    for p in module.parameters():
        return p.dtype
    for b in module.buffers():
        if b.is_floating_point():
            return b.dtype
    return torch.get_default_dtype()


def posterior_target(source) -> PosteriorTarget:
    """The posterior target of a data set's ground truth or of an unbatched model.

    Parameters
    ----------
    source : Dataset, VAEModel or PosteriorTarget
        A data set: ``f``, ``obs_noise_var()`` and ``prior``. A model: ``decoder``,
        ``noise_variance()`` and the N(0, I) prior of :class:`pyro_vae.models.VAEModel`.

    Raises
    ------
    ValueError
        For a restart-batched model (select a restart first) or another kind of object.
    """
    if isinstance(source, PosteriorTarget):
        return source
    if hasattr(source, "obs_noise_var") and hasattr(source, "prior"):
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
