"""Test log-likelihood: importance sampling (Eq. 48 of 000), quadrature, and the truth.

``log p_θ(x) ≈ log (1/S) Σ_s p_θ(x, z_s) / q̃(z_s | x)``, ``z_s ~ q̃``, where the proposal q̃ is
the guide itself — any Pyro guide, whatever its family and site names: the weights come from
Pyro traces of the guide and the replayed model over every sample site
(:func:`pyro_vae.traces.log_weights`). Each Normal site of the guide has its variance inflated
×2 "to ensure our proposal has sufficient coverage" (000 Appendix E, Evaluation; S = 5000
there); other families (Student-t, flows) are used as they are, and the estimate says which
(``proposal``). Samples are drawn in chunks so memory stays bounded whatever S is.
"""

from __future__ import annotations

import math
import warnings
from typing import Callable, NamedTuple

import pyro.distributions as dist
import torch
from pyro.poutine.messenger import Messenger

from pyro_vae.posterior.quadrature import log_marginal_quadrature
from pyro_vae.rng import isolated_rng
from pyro_vae.traces import latent_sites, log_joint, log_weights

EVAL_ROWS = 8192  # samples × points evaluated at once: large enough to vectorise, small enough for the cache


class LogLikEstimate(NamedTuple):
    mean: float  # mean over data points of the estimated log p(x_n)
    se: float  # standard error of that mean over data points
    ess: float  # mean effective sample size of the importance weights, per data point
    mc_se: float  # Monte Carlo standard error of ``mean`` (delta method on the weights)
    per_point: torch.Tensor  # (N,)
    proposal: str = "guide"  # what the proposal was (e.g. Normal sites inflated)


class InflateNormal(Messenger):
    """Multiply the variance of every Normal (or ``Independent`` Normal) sample site by ``factor``.

    Records the names of the sites it inflated in ``inflated``.
    """

    def __init__(self, factor: float):
        super().__init__()
        self.factor, self.inflated = float(factor), []

    def _process_message(self, msg) -> None:
        if msg["type"] != "sample" or msg["is_observed"]:
            return
        fn, reinterpreted = msg["fn"], 0
        while isinstance(fn, torch.distributions.Independent):
            reinterpreted += fn.reinterpreted_batch_ndims
            fn = fn.base_dist
        if type(fn) not in (dist.Normal, torch.distributions.Normal):
            return
        inflated = dist.Normal(fn.loc, fn.scale * math.sqrt(self.factor))
        msg["fn"] = inflated.to_event(reinterpreted) if reinterpreted else inflated
        if msg["name"] not in self.inflated:
            self.inflated.append(msg["name"])


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
    """Importance-sampled ``log p_θ(x)`` per data point (Eq. 48 of 000), the guide as proposal.

    Parameters
    ----------
    model, guide : callable
        An unbatched model (no ``"restarts"`` plate) and its guide: Pyro programs called as
        ``model(x)``, ``guide(x)`` whose sites sit in the plate ``"data"``.
    x : Tensor
        ``(N, D)`` test points.
    num_samples : int
        S importance samples per point (000 uses 5000).
    chunk_size : int, optional
        Samples drawn at a time; default ``max(1, 8192 // N)`` (rows of about 8 192
        samples × points, small enough to stay in cache).
    inflate : float
        Factor on the variance of the guide's Normal sites (2 in 000); other families as they are.
    seed : int
        Seeds the proposal draws (on a forked stream: the global generators are left as they were).
    """
    chunk_size = max(1, EVAL_ROWS // max(1, x.shape[0])) if chunk_size is None else chunk_size
    for name, value in (("num_samples", num_samples), ("chunk_size", chunk_size)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}={value!r}: expected a positive integer")
    if not inflate > 0:
        raise ValueError(f"inflate={inflate!r}: expected a positive number")
    if getattr(model, "num_restarts", None) or getattr(guide, "num_restarts", None):
        raise ValueError("model or guide is restart-batched: select one restart first (pyro_vae.nets.select_restart)")
    inflater = InflateNormal(inflate)
    proposal = inflater(guide) if inflate != 1.0 else guide
    with isolated_rng(x.device, seed), torch.no_grad():
        sites = latent_sites(proposal, x)
        chunks = []
        if len(sites) == 1:  # one latent site: q(z | x) once, then draws and scores of it (as fast as a formula)
            (name, site), = sites.items()
            q = site["fn"]
            for start in range(0, num_samples, chunk_size):
                z = q.sample((min(chunk_size, num_samples - start),))
                lj = log_joint(model, x, latents={name: z})
                chunks.append((lj - q.log_prob(z)).reshape(z.shape[0], x.shape[0]).double())
        else:  # dependent sites: trace the guide and the replayed model for every chunk
            for start in range(0, num_samples, chunk_size):
                s = min(chunk_size, num_samples - start)
                lw = log_weights(model, guide, x, num_particles=s, guide_handler=lambda g: inflater(g) if inflate != 1.0 else g)
                chunks.append(lw.reshape(s, -1, x.shape[0])[:, 0].double())
        log_w = torch.cat(chunks)  # (S, N)
        per_point = torch.logsumexp(log_w, 0) - math.log(num_samples)
        w = torch.softmax(log_w, 0)
        ess = 1.0 / (w**2).sum(0)
        # Var[log mean(w)] ≈ Var(w) / (S · mean(w)²) = (S·Σ w̄² − 1) / S with w̄ the normalised weights
        mc_var = ((num_samples * (w**2).sum(0) - 1.0) / num_samples).clamp_min(0)
    n = per_point.shape[0]
    se = float(per_point.std() / math.sqrt(n)) if n > 1 else float("nan")
    mc_se = float(mc_var.sum().sqrt() / n)
    proposal = (f"guide, Normal site(s) {inflater.inflated} with variance x{inflate:g}" if inflater.inflated and inflate != 1.0
                else "guide as it is (no Normal site to inflate)")
    return LogLikEstimate(float(per_point.mean()), se, float(ess.mean()), mc_se, per_point, proposal)


def grid_log_likelihood(
    decoder: Callable, noise_var: torch.Tensor | float, x: torch.Tensor, latent_dim: int, prior: str = "normal",
    dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(log p(x), converged)`` per point by grid quadrature (``latent_dim ≤ 2``).

    First one grid shared by every x (:func:`~pyro_vae.posterior.quadrature.log_marginal_quadrature`);
    where it does not converge — posteriors narrower than its finest spacing, e.g. 000's Gaussian
    set with σ² = 1e-6 — a grid fitted to each x (:func:`~pyro_vae.posterior.grid.grid_posterior`,
    as for the truth's log-likelihood), whose per-point convergence is returned. ``dtype``: the
    dtype ``decoder`` is evaluated in (default: its parameters').
    """
    if latent_dim > 2:
        raise ValueError(f"latent_dim={latent_dim}: grid quadrature needs K <= 2")
    res = log_marginal_quadrature(decoder, noise_var, x, latent_dim, prior=prior)
    if res.converged:
        return res.log_marginal, torch.ones(x.shape[0], dtype=torch.bool)
    from pyro_vae.posterior.grid import grid_posterior
    from pyro_vae.posterior.target import PosteriorTarget

    var = torch.as_tensor(noise_var, dtype=torch.float64).detach().cpu().reshape(-1).expand(x.shape[-1])
    if dtype is None:
        dtype = next((p.dtype for p in getattr(decoder, "parameters", lambda: [])()), x.dtype)
    post = grid_posterior(PosteriorTarget(decoder, var.clone(), latent_dim, prior, dtype), x, keep_density=False)
    return post.log_marginal, post.converged.cpu()


def exact_log_likelihood(
    decoder: Callable, noise_var: torch.Tensor | float, x: torch.Tensor, latent_dim: int, prior: str = "normal"
) -> torch.Tensor | None:
    """``log p(x)`` per point by grid quadrature when ``latent_dim ≤ 2`` (:func:`grid_log_likelihood`),
    else None; None too when the grid does not converge for every x."""
    if latent_dim > 2:
        return None
    log_p, converged = grid_log_likelihood(decoder, noise_var, x, latent_dim, prior)
    return log_p if bool(converged.all()) else None


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
