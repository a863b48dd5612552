"""``log p_θ(x)`` of a model seen by a :class:`~pyro_vae.diagnose.probe.ModelProbe`.

Two estimators, used by every check that needs the model's own log-likelihood:

- grid quadrature when K ≤ 2 and the prior is N(0, I): one grid shared by every x, refined
  until log p(x) moves less than 1e-3 nats (:func:`pyro_vae.posterior.quadrature.log_marginal_quadrature`),
  or, where that does not converge, a grid fitted to each x
  (:func:`pyro_vae.posterior.grid.grid_posterior`);
- defensive importance sampling (Hesterberg 1995) otherwise: the proposal is the mixture
  ``r(z | x) = (1 − α) q(z | x) + α p(z)`` with a fixed share of draws from each part, so the
  weights ``p(x, z) / r(z | x) ≤ p(x | z) / α`` stay bounded even where q misses a mode of the
  posterior (q alone as proposal — the IWAE bound — cannot see a missed mode; 000 App. E's
  ×2-inflated q has the same blind spot).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from pyro_vae.diagnose.probe import ModelProbe

__all__ = ["LogMarginal", "log_marginal", "defensive_log_weights"]


class LogMarginal(NamedTuple):
    """Per-point ``log p_θ(x)`` (N,) float64, how it was computed and its Monte Carlo SE per point."""

    per_point: torch.Tensor
    method: str  # "quadrature", "importance", or "quadrature (M points by importance)"
    mc_se: torch.Tensor  # (N,), zeros for quadrature


def defensive_log_weights(
    probe: ModelProbe, x: torch.Tensor, num_samples: int, prior_share: float = 0.2, noise_scale: float = 1.0
) -> torch.Tensor:
    """Log weights ``log p(x, z) − log r(z | x)`` of the defensive mixture, (S, N) float64.

    ``noise_scale`` multiplies σ² in ``p(x | z)`` (the σ² profile of :mod:`.noise`); draws
    are shared across scales when the caller fixes the seed.
    """
    n_prior = max(1, int(round(prior_share * num_samples)))
    n_q = num_samples - n_prior
    z_q, _ = probe.guide_draws(x, n_q)
    z = torch.cat([z_q, probe.prior_draws(x, n_prior).to(z_q)], 0)
    q = probe.guide_distribution(x)
    log_q = q.log_prob(z).double()
    log_p = probe.log_prior(x, z).double()
    log_r = torch.logaddexp(log_q + math.log(n_q / num_samples), log_p + math.log(n_prior / num_samples))
    return _log_lik(probe, x, z, noise_scale) + log_p - log_r


def defensive_profile(
    probe: ModelProbe, x: torch.Tensor, noise_scales: torch.Tensor, num_samples: int, prior_share: float = 0.2,
    chunk: int = 250,
) -> torch.Tensor:
    """``log p_θ(x_n)`` with σ² × c for every c in ``noise_scales``: (C, N) float64.

    One set of defensive draws (q and prior, as :func:`defensive_log_weights`), decoded once;
    only the Gaussian likelihood is re-evaluated per c, so the profile over c is smooth
    (common random numbers).
    """
    rows = []
    with torch.no_grad():
        for part in torch.split(x, chunk):
            n_prior = max(1, int(round(prior_share * num_samples)))
            n_q = num_samples - n_prior
            z_q, _ = probe.guide_draws(part, n_q)
            z = torch.cat([z_q, probe.prior_draws(part, n_prior).to(z_q)], 0)
            log_q = probe.guide_distribution(part).log_prob(z).double()
            log_p = probe.log_prior(part, z).double()
            log_r = torch.logaddexp(log_q + math.log(n_q / num_samples), log_p + math.log(n_prior / num_samples))
            sq = ((part.double() - probe.f(z).double()) ** 2 / probe.noise_var.to(part.device)).sum(-1)  # (S, n)
            log_det = probe.noise_var.log().sum()
            d = part.shape[1]
            out = []
            for c in noise_scales.tolist():
                ll = -0.5 * (sq / c + log_det + d * math.log(c) + d * math.log(2 * math.pi))
                lw = ll + log_p - log_r
                out.append(torch.logsumexp(lw, 0) - math.log(num_samples))
            rows.append(torch.stack(out))
    return torch.cat(rows, 1).cpu()


def _log_lik(probe: ModelProbe, x: torch.Tensor, z: torch.Tensor, noise_scale: float) -> torch.Tensor:
    loc = probe.f(z).double()
    var = probe.noise_var.to(loc) * noise_scale
    return (-0.5 * ((x.double() - loc) ** 2 / var + var.log() + math.log(2 * math.pi))).sum(-1)


def log_marginal(
    probe: ModelProbe,
    x: torch.Tensor,
    *,
    num_samples: int = 1000,
    noise_scale: float = 1.0,
    method: str = "auto",
    chunk: int = 250,
) -> LogMarginal:
    """``log p_θ(x_n)`` per point: quadrature when K ≤ 2 (``method="auto"``), else defensive IS.

    With ``"auto"``, points whose grid did not converge (the adaptive grid's tolerance) are
    estimated by importance sampling instead; the method string says how many.

    Parameters
    ----------
    probe : ModelProbe
    x : Tensor (N, D)
    num_samples : int
        Importance samples per point (IS only).
    noise_scale : float
        Evaluate the model with σ² multiplied by this factor.
    method : {"auto", "quadrature", "importance"}
    chunk : int
        Points per importance-sampling pass.
    """
    if probe.noise_var is None:
        raise ValueError("the model's σ² varies with z: log p(x) here needs a homoscedastic Gaussian likelihood")
    if method not in ("auto", "quadrature", "importance"):
        raise ValueError(f"method={method!r}: expected 'auto', 'quadrature' or 'importance'")
    target = probe.target()
    use_grid = method == "quadrature" or (method == "auto" and target is not None and probe.latent_dim <= 2)
    lp = torch.full((x.shape[0],), float("nan"), dtype=torch.float64)
    err = torch.zeros(x.shape[0], dtype=torch.float64)
    todo = torch.ones(x.shape[0], dtype=torch.bool)
    if use_grid:
        if target is None or probe.latent_dim > 2:
            raise ValueError("quadrature needs K <= 2 and a N(0, I) prior")
        from pyro_vae.metrics.loglik import grid_log_likelihood

        with torch.no_grad():
            grid_lp, converged = grid_log_likelihood(probe.f, target.noise_var * noise_scale, x, probe.latent_dim,
                                                     dtype=probe.dtype)
        done = converged if method == "auto" else torch.ones_like(todo)
        lp[done] = grid_lp.double().cpu()[done]
        todo = ~done
    if bool(todo.any()):  # importance sampling where the grid did not converge (or was not asked)
        rows_todo = x[todo.to(x.device)]
        parts, errs = [], []
        with torch.no_grad():
            for rows in torch.split(rows_todo, chunk):
                lw = defensive_log_weights(probe, rows, num_samples, noise_scale=noise_scale)
                parts.append(torch.logsumexp(lw, 0) - math.log(lw.shape[0]))
                w = torch.softmax(lw, 0)
                errs.append(((lw.shape[0] * (w**2).sum(0) - 1.0).clamp_min(0) / lw.shape[0]).sqrt())
        lp[todo] = torch.cat(parts).cpu()
        err[todo] = torch.cat(errs).cpu()
    n_is = int(todo.sum())
    label = "importance" if n_is == x.shape[0] else ("quadrature" if n_is == 0 else f"quadrature ({n_is} points by importance)")
    return LogMarginal(lp, label, err)
