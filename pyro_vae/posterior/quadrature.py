"""Exact (grid) integration over a 1-D or 2-D latent space.

``log p(x) = log ∫ p(x | z) p(z) dz`` on a regular grid, refined by doubling the number of
points per axis until two successive estimates agree (the grid adapts its resolution to the
narrowest posterior it meets). The integrands here are smooth and decay at the grid's ends,
where the rectangle rule converges faster than any power of the spacing.

The log-likelihood on the grid is computed once per grid point (``f`` does not depend on
``x``) and then evaluated for all ``x`` in chunks, so memory stays bounded.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import torch

PRIORS = ("normal", "uniform")


class QuadratureResult(NamedTuple):
    log_marginal: torch.Tensor  # (N,) log p(x_n)
    converged: bool  # the last two refinements agreed within tolerance
    num_points: int  # grid points per axis of the last refinement
    max_change: float  # max |difference| between the last two refinements (nats)


def latent_grid(
    latent_dim: int, num_points: int, prior: str = "normal", bound: float = 8.0, device=None, dtype=None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Grid points ``(G, K)`` and log(prior density × cell volume) ``(G,)`` covering the prior."""
    if latent_dim not in (1, 2):
        raise ValueError(f"latent_dim={latent_dim}: quadrature needs a 1-D or 2-D latent space")
    if prior not in PRIORS:
        raise ValueError(f"prior={prior!r}: expected one of {PRIORS}")
    dtype = dtype or torch.get_default_dtype()
    if prior == "normal":
        axis = torch.linspace(-bound, bound, num_points, device=device, dtype=dtype)
        log_density_1d = -0.5 * axis**2 - 0.5 * math.log(2 * math.pi)
    else:  # midpoints of U(0, 1)
        axis = (torch.arange(num_points, device=device, dtype=dtype) + 0.5) / num_points
        log_density_1d = torch.zeros_like(axis)
    step = float(axis[1] - axis[0]) if num_points > 1 else 1.0
    if latent_dim == 1:
        return axis[:, None], log_density_1d + math.log(step)
    a, b = torch.meshgrid(axis, axis, indexing="ij")
    la, lb = torch.meshgrid(log_density_1d, log_density_1d, indexing="ij")
    return torch.stack([a.reshape(-1), b.reshape(-1)], -1), (la + lb).reshape(-1) + 2 * math.log(step)


def log_sum_over_grid(
    x: torch.Tensor, loc: torch.Tensor, var: torch.Tensor, log_w: torch.Tensor, chunk_elements: int = 2**24
) -> torch.Tensor:
    """``log Σ_g w_g N(x_n; loc_g, diag var)`` per row of ``x``, never holding more than
    ``chunk_elements`` numbers at once (the full ``(N, G)`` matrix can be gigabytes in 2-D)."""
    var = var.reshape(-1).to(loc)
    const = -0.5 * (var.log().sum() + loc.shape[-1] * math.log(2 * math.pi))
    g = loc.shape[0]
    cols = max(1, min(g, chunk_elements // max(1, loc.shape[1])))
    rows = max(1, chunk_elements // (cols * loc.shape[1]))
    out = []
    for chunk in torch.split(x.to(loc), rows):
        acc = torch.full((chunk.shape[0],), -math.inf, dtype=loc.dtype, device=loc.device)
        for start in range(0, g, cols):
            sl = slice(start, start + cols)
            ll = const - 0.5 * (((chunk[:, None, :] - loc[None, sl]) ** 2) / var).sum(-1)
            acc = torch.logaddexp(acc, torch.logsumexp(ll + log_w[sl], dim=-1))
        out.append(acc)
    return torch.cat(out)


def log_marginal_quadrature(
    f: Callable[[torch.Tensor], torch.Tensor],
    noise_var: torch.Tensor | float,
    x: torch.Tensor,
    latent_dim: int,
    *,
    prior: str = "normal",
    num_points: int | None = None,
    max_points: int | None = None,
    rtol_nats: float = 1e-3,
    bound: float = 8.0,
) -> QuadratureResult:
    """``log ∫ N(x; f(z), diag σ²) p(z) dz`` for each row of ``x``, by refined grid quadrature.

    Parameters
    ----------
    f : callable
        ``(G, K) -> (G, D)`` decoder mean (a trained decoder or a data set's true ``f``).
    noise_var : Tensor or float
        σ², scalar or per dimension.
    x : Tensor
        ``(N, D)`` observations.
    latent_dim : int
        K, 1 or 2.
    prior : {"normal", "uniform"}
        Standard normal on ``[-bound, bound]^K`` or U(0, 1)^K.
    num_points, max_points : int
        First and largest grid size per axis (defaults 1001/64001 for K=1, 201/801 for K=2).
    rtol_nats : float
        Convergence: max |change| of log p(x) between two refinements.

    Returns
    -------
    QuadratureResult
    """
    if x.dim() != 2:
        raise ValueError(f"x of shape {tuple(x.shape)}: expected (N, D)")
    num_points = num_points or (1001 if latent_dim == 1 else 201)
    max_points = max_points or (64001 if latent_dim == 1 else 801)
    dtype = torch.float64
    x64 = x.to(dtype)
    var = torch.as_tensor(noise_var).detach().to(dtype=dtype, device=x.device).reshape(-1).expand(x.shape[-1])
    previous, points, change = None, num_points, float("inf")
    while True:
        grid, log_w = latent_grid(latent_dim, points, prior, bound, device=x.device, dtype=dtype)
        with torch.no_grad():
            loc = torch.cat([f(g.to(x.dtype)).to(dtype) for g in torch.split(grid, 65536)])
        current = log_sum_over_grid(x64, loc, var, log_w)
        if previous is not None:
            change = float((current - previous).abs().max())
            if change <= rtol_nats:
                return QuadratureResult(current, True, points, change)
        next_points = 2 * points - 1
        if next_points > max_points:
            return QuadratureResult(current, False, points, change)
        previous, points = current, next_points
