"""Test log-likelihood: importance sampling (Eq. 48 of 000), quadrature, and the truth.

``log p_θ(x) ≈ log (1/S) Σ_s p_θ(x | z_s) p(z_s) / q̃(z_s | x)``, ``z_s ~ q̃``, where the
proposal q̃ is the guide's ``q_φ(z | x)`` with its variance inflated ×2 "to ensure our
proposal has sufficient coverage" (000 Appendix E, Evaluation; S = 5000 there). Samples are
drawn in chunks so memory stays bounded whatever S is.
"""

from __future__ import annotations

import math
import warnings
from typing import Callable, NamedTuple

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import torch

from pyro_vae.posterior.quadrature import log_marginal_quadrature
from pyro_vae.rng import isolated_rng

EVAL_ROWS = 8192  # samples × points evaluated at once: large enough to vectorise, small enough for the cache


class LogLikEstimate(NamedTuple):
    mean: float  # mean over data points of the estimated log p(x_n)
    se: float  # standard error of that mean over data points
    ess: float  # mean effective sample size of the importance weights, per data point
    mc_se: float  # Monte Carlo standard error of ``mean`` (delta method on the weights)
    per_point: torch.Tensor  # (N,)


def proposal_from_guide(guide: Callable, x: torch.Tensor, inflate: float = 2.0) -> dist.Distribution:
    """The guide's ``q(z | x)`` for each row of ``x`` (batch ``(N,)``, event ``(K,)``), variance × ``inflate``.

    A guide with a ``distribution(x)`` method (e.g. :class:`guides.mean_field.MeanFieldGuide`)
    is asked directly; otherwise the guide is traced and its ``"z"`` site used. Normal proposals
    are inflated; others are used as they are.
    """
    if hasattr(guide, "distribution"):
        q = guide.distribution(x)
    else:
        q = poutine.trace(guide).get_trace(x).nodes["z"]["fn"]
    base = q.base_dist if isinstance(q, dist.Independent) else q
    if isinstance(base, torch.distributions.Normal):
        loc, scale = base.loc, base.scale * math.sqrt(inflate)
        if loc.dim() > 2:  # a restart-batched guide: only unbatched ones give a per-point proposal
            raise ValueError(f"guide gives a proposal of shape {tuple(loc.shape)}: select one restart first")
        return dist.Normal(loc, scale).to_event(1)
    return q if isinstance(q, dist.Independent) or q.event_dim else q.to_event(1)


def log_joint(model: Callable, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """``log p(x, z)`` from a Pyro program conditioned on ``z`` of shape ``(S, N, K)``; returns ``(S, N)``."""
    trace = poutine.trace(poutine.condition(model, data={"z": z})).get_trace(x)
    total = 0.0
    for name in ("z", "x"):
        site = trace.nodes[name]
        total = total + site["fn"].log_prob(site["value"])
    return total


def importance_log_likelihood(
    model: Callable,
    guide: Callable,
    x: torch.Tensor,
    *,
    num_samples: int = 5000,
    chunk_size: int | None = None,
    inflate: float = 2.0,
    seed: int = 0,
) -> LogLikEstimate:
    """Importance-sampled ``log p_θ(x)`` per data point (Eq. 48 of 000).

    Parameters
    ----------
    model, guide : callable
        An unbatched model (no ``"restarts"`` plate) and its guide.
    x : Tensor
        ``(N, D)`` test points.
    num_samples : int
        S importance samples per point (000 uses 5000).
    chunk_size : int, optional
        Samples drawn at a time; default ``max(1, 8192 // N)`` (rows of about 8 192
        samples × points, small enough to stay in cache).
    inflate : float
        Factor on the proposal's variance (2 in 000).
    seed : int
        Seeds the proposal draws.
    """
    chunk_size = max(1, EVAL_ROWS // max(1, x.shape[0])) if chunk_size is None else chunk_size
    for name, value in (("num_samples", num_samples), ("chunk_size", chunk_size)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}={value!r}: expected a positive integer")
    if not inflate > 0:
        raise ValueError(f"inflate={inflate!r}: expected a positive number")
    if getattr(model, "num_restarts", None):
        raise ValueError("model is restart-batched: select one restart first (pyro_vae.nets.select_restart)")
    with torch.no_grad(), isolated_rng(x.device, seed):
        q = proposal_from_guide(guide, x, inflate)
        chunks = []
        for start in range(0, num_samples, chunk_size):
            z = q.sample((min(chunk_size, num_samples - start),))
            chunks.append((log_joint(model, x, z) - q.log_prob(z)).double())
        log_w = torch.cat(chunks)  # (S, N)
        per_point = torch.logsumexp(log_w, 0) - math.log(num_samples)
        w = torch.softmax(log_w, 0)
        ess = 1.0 / (w**2).sum(0)
        # Var[log mean(w)] ≈ Var(w) / (S · mean(w)²) = (S·Σ w̄² − 1) / S with w̄ the normalised weights
        mc_var = ((num_samples * (w**2).sum(0) - 1.0) / num_samples).clamp_min(0)
    n = per_point.shape[0]
    se = float(per_point.std() / math.sqrt(n)) if n > 1 else float("nan")
    mc_se = float(mc_var.sum().sqrt() / n)
    return LogLikEstimate(float(per_point.mean()), se, float(ess.mean()), mc_se, per_point)


def exact_log_likelihood(
    decoder: Callable, noise_var: torch.Tensor | float, x: torch.Tensor, latent_dim: int, prior: str = "normal"
) -> torch.Tensor | None:
    """``log p(x)`` per point by grid quadrature when ``latent_dim ≤ 2`` and the grid converges, else None."""
    if latent_dim > 2:
        return None
    res = log_marginal_quadrature(decoder, noise_var, x, latent_dim, prior=prior)
    return res.log_marginal if res.converged else None


def true_log_likelihood(dataset, x: torch.Tensor) -> torch.Tensor:
    """``log p(x)`` per point under a data set's ground-truth process.

    Closed form where the process is linear-Gaussian (``dataset.marginal()``), otherwise the
    per-point adaptive grid of :func:`pyro_vae.posterior.grid.grid_posterior` (it zooms into
    the narrow posteriors of step-like f, such as Spiral-Dots, that a fixed grid misses).
    """
    marginal = dataset.marginal()
    if marginal is not None:
        return marginal.log_prob(x.double().cpu())
    from pyro_vae.posterior.grid import grid_posterior

    post = grid_posterior(dataset, x, keep_density=False)
    if not bool(post.converged.all()):
        bad = int((~post.converged).sum())
        warnings.warn(
            f"grid for {dataset.name}: {bad} of {len(post.converged)} points did not converge "
            f"(largest change {float(post.max_change.max()):.2g} nats)",
            RuntimeWarning,
        )
    return post.log_marginal
