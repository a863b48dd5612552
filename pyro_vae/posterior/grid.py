"""The exact posterior ``p(z | x)`` on a grid fitted to each x, for 1-D and 2-D latent spaces.

Two passes per observation ``x``:

1. **Coarse**: the log joint ``log p(x | z) + log p(z)`` on one shared grid over the prior
   (``[-bound, bound]^K`` for N(0, I), cell midpoints of U(0, 1)^K) locates the cells that hold
   the mass: those whose normalised mass exceeds ``mass_tol / G`` (so the cells left out hold
   at most ``mass_tol`` of the coarse mass). Their bounding box, padded by one coarse cell on
   every side and clipped to the prior's support, is the posterior's box for that x. A box
   that reaches ``±bound`` (a posterior far out in the prior's tail) is searched again on a
   grid twice as wide, up to ``max_bound``.
2. **Fine**: ``M`` points per axis over each x's box, integrated by the trapezoid rule. The
   estimate of ``log p(x)`` is compared with the one from every other point (the grid of
   spacing 2h); while they differ by more than ``rtol_nats`` for some x, ``M`` grows to
   ``2M − 1`` (the previous grid is a subset), up to ``max_points``.

The result holds, per x, the grid axes, the normalised log density ``log p(z | x)`` at the
grid points, ``log p(x)``, and the posterior mean and standard deviation. The integrand is
smooth and negligible at the box's ends (or the box meets the support's edge, where the
trapezoid rule is second order), so the refinement converges quickly. A mode narrower than
the coarse spacing still lies inside the box (the padding covers one coarse cell), but a mode
the coarse grid misses entirely (narrower than its spacing *and* away from every coarse
point) is missed: raise ``coarse_points`` for very small noise.

This complements :func:`pyro_vae.posterior.quadrature.log_marginal_quadrature`, which refines a
single grid over the prior for ``log p(x)`` only.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from pyro_vae.posterior.quadrature import latent_grid
from pyro_vae.posterior.target import posterior_target

__all__ = ["GridPosterior", "grid_posterior", "grid_points", "trapezoid_log_cells", "sample_grid_posterior"]

_CHUNK_ELEMENTS = 1 << 22  # grid points × data points held at once
_F_CHUNK = 1 << 18  # decoder evaluations at once


class GridPosterior(NamedTuple):
    """Per-x grid posterior; see :func:`grid_posterior`.

    Attributes
    ----------
    axes : Tensor (N, K, M)
        Grid coordinates along each latent axis for each x (the grid is their product,
        first axis slowest).
    log_density : Tensor (N, M^K) or None
        Normalised ``log p(z | x)`` at the grid points (None when ``keep_density=False``).
    log_marginal : Tensor (N,)
        ``log p(x)``.
    mean, sd : Tensor (N, K)
        Posterior mean and standard deviation per latent dimension.
    converged : Tensor (N,) of bool
        The last refinement changed ``log p(x)`` by at most ``rtol_nats``.
    max_change : Tensor (N,)
        |change| of ``log p(x)`` between the last two refinements (nats).
    num_points : int
        M, grid points per axis.
    """

    axes: torch.Tensor
    log_density: torch.Tensor | None
    log_marginal: torch.Tensor
    mean: torch.Tensor
    sd: torch.Tensor
    converged: torch.Tensor
    max_change: torch.Tensor
    num_points: int

    def points(self, rows=slice(None)) -> torch.Tensor:
        """Grid points ``(n, M^K, K)`` of the x's selected by ``rows``."""
        return grid_points(self.axes[rows])

    def log_weights(self, rows=slice(None)) -> torch.Tensor:
        """Normalised log posterior mass of each grid cell (trapezoid weights), ``(n, M^K)``."""
        if self.log_density is None:
            raise ValueError("this GridPosterior was made with keep_density=False")
        return self.log_density[rows] + trapezoid_log_cells(self.axes[rows])


def grid_points(axes: torch.Tensor) -> torch.Tensor:
    """Cartesian product of per-x axes ``(n, K, M)`` as points ``(n, M^K, K)``."""
    n, k, m = axes.shape
    if k == 1:
        return axes.transpose(1, 2)
    a = axes[:, 0, :, None].expand(n, m, m)
    b = axes[:, 1, None, :].expand(n, m, m)
    return torch.stack([a.reshape(n, -1), b.reshape(n, -1)], -1)


def trapezoid_log_cells(axes: torch.Tensor) -> torch.Tensor:
    """log of the trapezoid rule's weight of each grid point, ``(n, M^K)``, for axes ``(n, K, M)``."""
    n, k, m = axes.shape
    step = (axes[..., -1] - axes[..., 0]) / (m - 1)  # (n, K)
    half = torch.zeros(m, dtype=axes.dtype, device=axes.device)
    half[0] = half[-1] = -math.log(2.0)
    per_axis = step.log()[..., None] + half  # (n, K, M)
    if k == 1:
        return per_axis[:, 0]
    return (per_axis[:, 0, :, None] + per_axis[:, 1, None, :]).reshape(n, -1)


def _mask_extent(keep: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """First and last index along each axis of a product grid's kept points: ``keep`` (n, M^K) -> (n, K) each."""
    n, g = keep.shape
    m = round(g ** (1 / k))
    cube = keep.reshape(n, *([m] * k))
    firsts, lasts = [], []
    for axis in range(k):
        others = [d for d in range(1, k + 1) if d != axis + 1]
        along = cube.any(dim=tuple(others)) if others else cube  # (n, M)
        first = along.int().argmax(-1)
        last = m - 1 - along.flip(-1).int().argmax(-1)
        firsts.append(first)
        lasts.append(last)
    return torch.stack(firsts, -1), torch.stack(lasts, -1)


def _score(fn, x: torch.Tensor) -> torch.Tensor:
    """``log p(x_i | z_i)`` row by row, float64; a Normal's density is computed in float64 from its loc and scale."""
    from pyro_vae.traces import diagonal_normal

    normal = diagonal_normal(fn)
    if normal is not None:
        loc, scale = normal[0].to(torch.float64), normal[1].to(torch.float64)
        u = (x.to(loc) - loc) / scale
        return (-0.5 * u**2 - scale.log() - 0.5 * math.log(2 * math.pi)).sum(-1)
    return fn.log_prob(x.to(_fn_dtype(fn))).to(torch.float64)


def _log_joint_grid(target, x: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """``log p(x_n, z_ng)`` for per-x points ``(n, G, K)``; returns ``(n, G)``."""
    n, g, k = points.shape
    flat = points.reshape(-1, k)
    rows = x[:, None, :].expand(n, g, x.shape[-1]).reshape(-1, x.shape[-1])
    parts = []
    for start in range(0, n * g, _F_CHUNK):
        sl = slice(start, start + _F_CHUNK)
        fn, log_prior = target.observation(flat[sl])
        parts.append(_score(fn, rows[sl].to(log_prior.device)).to(x.device) + log_prior.to(x.device))
    lj = torch.cat(parts).reshape(n, g)
    return lj.nan_to_num(nan=-math.inf, posinf=-math.inf)


def _coarse_boxes(target, x, coarse_points, mass_tol, bound, max_bound) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-x box ``(lo, hi)``, each ``(N, K)``, holding all but ``mass_tol`` of the coarse mass.

    Under the normal prior a box that reaches the grid's edge ``±bound`` (a posterior out in
    the prior's tail, e.g. a poor model's) is searched again with the bound doubled, up to
    ``max_bound``.
    """
    lo, hi = _coarse_pass(target, x, coarse_points, mass_tol, bound)
    while target.prior == "normal" and 2 * bound <= max_bound:
        edge = ((lo <= -bound) | (hi >= bound)).any(-1)
        if not bool(edge.any()):
            break
        bound = 2 * bound
        lo[edge], hi[edge] = _coarse_pass(target, x[edge], coarse_points, mass_tol, bound)
    return lo, hi


def _coarse_terms(target, grid: torch.Tensor):
    """The observation model at the coarse grid points: Normal ``(loc, var)`` (G, D) float64, or the
    distributions per chunk; and ``log p(z_g)`` (G,)."""
    from pyro_vae.traces import diagonal_normal

    fns, priors, locs, variances = [], [], [], []
    for chunk in torch.split(grid, _F_CHUNK):
        fn, lp = target.observation(chunk)
        fns.append(fn)
        priors.append(lp.to(grid.device))
        normal = diagonal_normal(fn)
        if normal is not None:
            locs.append(normal[0].to(grid))
            variances.append(normal[1].to(grid) ** 2)
    log_prior = torch.cat(priors)
    if len(locs) == len(fns):
        return (torch.cat(locs), torch.cat(variances)), None, log_prior
    return None, fns, log_prior


def _coarse_pass(target, x, coarse_points, mass_tol, bound) -> tuple[torch.Tensor, torch.Tensor]:
    k = target.latent_dim
    grid, _ = latent_grid(k, coarse_points, target.prior, bound, device=x.device, dtype=torch.float64)
    axis = grid[:coarse_points, -1] if k == 2 else grid[:, 0]
    step = float(axis[1] - axis[0])
    normal, fns, log_prior = _coarse_terms(target, grid)
    log_w = log_prior + k * math.log(step)
    support_lo, support_hi = (-bound, bound) if target.prior == "normal" else (0.0, 1.0)
    threshold = math.log(mass_tol) - math.log(grid.shape[0])
    if normal is not None:
        loc, var = normal
        const = -0.5 * (var.log().sum(-1) + var.shape[-1] * math.log(2 * math.pi))  # (G,)
        loc_sq = (loc**2 / var).sum(-1)[None]
        inv_var, loc_over_var = (1.0 / var).T.contiguous(), (loc / var).T.contiguous()
    rows = max(1, _CHUNK_ELEMENTS // grid.shape[0])
    los, his = [], []
    for chunk in torch.split(x, rows):
        if normal is not None:
            # Σ_d (x_d − loc_gd)² / v_gd expanded into matrix products (coarse boxes need no more accuracy)
            sq = torch.addmm(loc_sq, chunk, loc_over_var, alpha=-2).add_((chunk**2) @ inv_var)
            lj = sq.clamp_min_(0).mul_(-0.5).add_(log_w + const)  # (n, G)
        else:
            lj = torch.cat([fn.log_prob(chunk[:, None, :].to(_fn_dtype(fn))).to(torch.float64) for fn in fns], -1)
            lj = lj + log_w
        lj = lj.nan_to_num(nan=-math.inf, posinf=-math.inf)  # a decoder's poles or overflow
        # mass_g / total ≤ exp(lj_g − max lj): keeping lj_g − max > threshold keeps a superset of the
        # cells with mass > mass_tol / G (and at least the maximum)
        first, last = _mask_extent(lj - lj.amax(-1, keepdim=True) > threshold, k)
        los.append((axis[first] - step).clamp(support_lo, support_hi))
        his.append((axis[last] + step).clamp(support_lo, support_hi))
    return torch.cat(los), torch.cat(his)


def _fn_dtype(fn) -> torch.dtype:
    for value in vars(fn).values():
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            return value.dtype
    base = getattr(fn, "base_dist", None)
    return _fn_dtype(base) if base is not None else torch.get_default_dtype()


def _check_args(target, x: torch.Tensor) -> torch.Tensor:
    if target.latent_dim not in (1, 2):
        raise ValueError(f"latent_dim={target.latent_dim}: the grid posterior needs a 1-D or 2-D latent space")
    if target.prior not in ("normal", "uniform"):
        raise ValueError(f"the latent site's support is neither the real line nor the unit interval: the grid "
                         f"covers those two only (use NUTS)")
    if not isinstance(x, torch.Tensor) or x.dim() != 2 or x.shape[1] != target.obs_dim:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"x of shape {shape}: expected (N, {target.obs_dim})")
    return x.detach().to(torch.float64)


def grid_posterior(
    source,
    x: torch.Tensor,
    *,
    num_points: int | None = None,
    max_points: int | None = None,
    coarse_points: int | None = None,
    mass_tol: float = 1e-9,
    rtol_nats: float = 1e-4,
    bound: float = 8.0,
    max_bound: float = 64.0,
    keep_density: bool = True,
    max_zooms: int = 4,
) -> GridPosterior:
    """Normalised posterior ``p(z | x)`` on a grid fitted to each x (K ≤ 2), with ``log p(x)``.

    ``p(z | x) = p(x | z) p(z) / p(x)`` with ``p(x) = ∫ p(x | z) p(z) dz`` by the trapezoid rule
    on the box holding the posterior's mass (see the module docstring). This is the exact
    ground truth that the papers' posterior plots show (004 Figure 10c) and that the
    posterior matching objective (000 Eq. 2, 004 Eq. 3) is measured against.

    Parameters
    ----------
    source : Dataset, VAEModel, Pyro model or target
        The ground truth of a data set, an unbatched (trained) model, or any Pyro model
        ``model(x)`` with one latent site and the site it observes; see
        :func:`pyro_vae.posterior.target.posterior_target`.
    x : Tensor (N, D)
    num_points, max_points : int
        First and largest fine-grid size per axis (odd; defaults 513/8193 for K = 1, 65/129
        for K = 2). Memory is about ``N · M^K`` float64 values per stored array.
    coarse_points : int
        Points per axis of the shared coarse grid (defaults 2001 for K = 1, 161 for K = 2).
    mass_tol : float
        Coarse mass allowed outside each box.
    rtol_nats : float
        Convergence: max |change| of ``log p(x)`` between two refinements.
    bound, max_bound : float
        Half-width of the coarse grid under the N(0, I) prior, doubled (up to ``max_bound``)
        for the x whose box reaches its edge.
    keep_density : bool
        Keep ``log_density`` (N, M^K); ``False`` keeps only the summaries, and then each
        refinement re-evaluates only the x's that have not yet converged (``axes`` then hold
        the last grid size on each x's box).
    max_zooms : int
        Passes that shrink a box to the mass seen on its own fine grid (for posteriors much
        narrower than the coarse spacing), each while some box shrinks by half or more.

    Returns
    -------
    GridPosterior

    References
    ----------
    004 Figure 10c (posteriors under the true f); 000 Eq. 2 and 004 Eq. 3 (the PMO).
    """
    target = posterior_target(source, obs_dim=x.shape[-1] if isinstance(x, torch.Tensor) and x.dim() == 2 else None)
    x64 = _check_args(target, x)
    k = target.latent_dim
    num_points = num_points or (513 if k == 1 else 65)
    max_points = max_points or (8193 if k == 1 else 129)
    coarse_points = coarse_points or (2001 if k == 1 else 161)
    for name, value in (("num_points", num_points), ("max_points", max_points), ("coarse_points", coarse_points)):
        if not isinstance(value, int) or value < 3:
            raise ValueError(f"{name}={value!r}: expected an integer >= 3")
    if num_points % 2 == 0:
        raise ValueError(f"num_points={num_points}: expected an odd number (the grid is refined as 2M - 1)")
    if not 0 < mass_tol < 1:
        raise ValueError(f"mass_tol={mass_tol!r}: expected a number in (0, 1)")
    if not rtol_nats > 0:
        raise ValueError(f"rtol_nats={rtol_nats!r}: expected a positive number")

    lo, hi = _coarse_boxes(target, x64, coarse_points, mass_tol, bound, max_bound)
    result = None
    for _ in range(max_zooms):  # shrink each box to the fine grid's own mass
        result, (new_lo, new_hi) = _fine_pass(target, x64, lo, hi, num_points, keep_density, mass_tol, rtol_nats)
        shrunk = (new_hi - new_lo) < 0.5 * (hi - lo)
        if not bool(shrunk.any()):
            break  # the boxes are final: this pass is also the first of the refinement
        lo, hi = torch.where(shrunk, new_lo, lo), torch.where(shrunk, new_hi, hi)
        result = None
    points_per_axis = num_points
    while True:
        if result is None:
            result, _ = _fine_pass(target, x64, lo, hi, points_per_axis, keep_density, mass_tol, rtol_nats)
        if bool(result.converged.all()) or 2 * points_per_axis - 1 > max_points:
            return result
        points_per_axis = 2 * points_per_axis - 1
        if keep_density:  # one grid size for every x: refine them all
            result = None
            continue
        # Only the x's that have not converged are refined; the others keep their values.
        todo = (~result.converged).nonzero()[:, 0]
        finer, _ = _fine_pass(target, x64[todo], lo[todo], hi[todo], points_per_axis, False, mass_tol, rtol_nats)
        result = _merge_rows(result, finer, todo, lo, hi, points_per_axis)


def _merge_rows(old: GridPosterior, new: GridPosterior, rows: torch.Tensor, lo, hi, m: int) -> GridPosterior:
    """``old`` with ``rows`` replaced by ``new``'s summaries; axes on ``m`` points of each box."""
    def put(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        out = a.clone()
        out[rows] = b
        return out

    t = torch.linspace(0, 1, m, dtype=torch.float64, device=lo.device)
    axes = lo[..., None] + (hi - lo)[..., None] * t
    return GridPosterior(axes, None, put(old.log_marginal, new.log_marginal), put(old.mean, new.mean),
                         put(old.sd, new.sd), put(old.converged, new.converged), put(old.max_change, new.max_change), m)


def _fine_pass(
    target, x, lo, hi, m, keep_density, mass_tol, rtol_nats
) -> tuple[GridPosterior, tuple[torch.Tensor, torch.Tensor]]:
    """The grid posterior on ``M`` points per axis of each box, and the boxes of its own mass."""
    n, k = lo.shape
    t = torch.linspace(0, 1, m, dtype=torch.float64, device=x.device)
    axes = lo[..., None] + (hi - lo)[..., None] * t  # (N, K, M)
    g = m**k
    rows = max(1, _CHUNK_ELEMENTS // (g * max(1, x.shape[1])))
    sub = torch.arange(0, m, 2, device=x.device)
    if k == 2:
        sub = (sub[:, None] * m + sub[None, :]).reshape(-1)
    log_z, change, means, sds, dens, los, his = [], [], [], [], [], [], []
    threshold = math.log(mass_tol) - math.log(g)
    for start in range(0, n, rows):
        ax = axes[start : start + rows]
        pts = grid_points(ax)
        lj = _log_joint_grid(target, x[start : start + rows], pts)  # (n, G)
        cells = trapezoid_log_cells(ax)
        lz = torch.logsumexp(lj + cells, -1)
        lz_half = torch.logsumexp(lj[:, sub] + trapezoid_log_cells(ax[..., ::2]), -1)
        w = torch.exp(lj + cells - lz[:, None])  # (n, G), sums to 1
        first, last = _mask_extent(lj + cells - lz[:, None] > threshold, k)
        step = (ax[..., -1] - ax[..., 0]) / (m - 1)
        los.append(torch.maximum(ax.gather(-1, first[..., None])[..., 0] - step, ax[..., 0]))
        his.append(torch.minimum(ax.gather(-1, last[..., None])[..., 0] + step, ax[..., -1]))
        mean = (w[..., None] * pts).sum(1)
        var = (w[..., None] * (pts - mean[:, None]) ** 2).sum(1)
        log_z.append(lz)
        change.append((lz - lz_half).abs().nan_to_num(nan=math.inf))
        means.append(mean)
        sds.append(var.clamp_min(0).sqrt())
        if keep_density:
            dens.append(lj - lz[:, None])
    max_change = torch.cat(change)
    post = GridPosterior(
        axes, torch.cat(dens) if keep_density else None, torch.cat(log_z), torch.cat(means), torch.cat(sds),
        max_change <= rtol_nats, max_change, m,
    )
    return post, (torch.cat(los), torch.cat(his))


def sample_grid_posterior(post: GridPosterior, index: int, num_samples: int, seed: int = 0) -> torch.Tensor:
    """Draws ``(num_samples, K)`` from the grid posterior of ``x[index]``.

    A grid point is drawn with its trapezoid mass, then jittered uniformly within ±h/2 along
    each axis (h the spacing), clipped to the grid's box.
    """
    if not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"num_samples={num_samples!r}: expected a positive integer")
    gen = torch.Generator().manual_seed(seed)
    w = post.log_weights(slice(index, index + 1))[0].exp().cpu()
    pts = post.points(slice(index, index + 1))[0].cpu()
    idx = torch.multinomial(w / w.sum(), num_samples, replacement=True, generator=gen)
    ax = post.axes[index].cpu()
    step = (ax[:, -1] - ax[:, 0]) / (ax.shape[-1] - 1)
    jitter = (torch.rand(num_samples, ax.shape[0], generator=gen, dtype=torch.float64) - 0.5) * step
    return torch.minimum(torch.maximum(pts[idx] + jitter, ax[:, 0]), ax[:, -1])
