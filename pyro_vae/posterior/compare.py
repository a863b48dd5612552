"""How far an approximate posterior is from the truth: grid KLs and sample distances.

- :func:`grid_kl`: ``KL(q ‖ p)`` and ``KL(p ‖ q)`` per x between a diagonal-Gaussian guide
  ``q(z | x)`` and the exact posterior of a :class:`~pyro_vae.posterior.grid.GridPosterior`
  (K ≤ 2). ``KL(p ‖ q)`` integrates on the posterior's own grid (which holds its mass);
  ``KL(q ‖ p)`` integrates on a grid over q's mass (``loc ± width · scale``), where
  ``log p(z | x) = log p(x | z) + log p(z) − log p(x)`` is evaluated exactly. The mean over
  x of ``KL(q ‖ p)`` is the posterior matching objective (000 Eq. 2, 004 Eq. 3).
- :func:`kl_monte_carlo`: ``KL(q ‖ p)`` per x from draws of any guide, given ``log p(x)``.
- :func:`nuts_vs_grid`, :func:`guide_vs_samples`: mean and variance errors with their
  standard errors, the 1-Wasserstein distance (K = 1, via SciPy) and the energy distance
  (Székely & Rizzo 2013), between draws and a reference.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import pyro.distributions as dist
import torch

from pyro_vae.posterior.grid import GridPosterior, grid_points, sample_grid_posterior, trapezoid_log_cells
from pyro_vae.posterior.target import posterior_target

__all__ = [
    "GridKL",
    "SampleComparison",
    "energy_distance",
    "grid_kl",
    "guide_normal",
    "guide_vs_samples",
    "kl_monte_carlo",
    "nuts_vs_grid",
    "wasserstein_1d",
]

_LOG_2PI = math.log(2 * math.pi)
_CHUNK_POINTS = 1 << 18  # grid points (over all x of a chunk) evaluated at once


class GridKL(NamedTuple):
    """Per-x divergences between a guide and the grid posterior (nats).

    ``kl_qp`` is ``KL(q ‖ p)`` (the ELBO's gap, infinite where q puts mass outside the
    prior's support), ``kl_pq`` is ``KL(p ‖ q)``; each (N,).
    """

    kl_qp: torch.Tensor
    kl_pq: torch.Tensor


def guide_normal(q, x: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(loc, scale)`` (N, K), float64, of a diagonal-Gaussian guide or distribution.

    ``q`` is a guide with a ``distribution(x)`` method (e.g.
    :class:`guides.mean_field.MeanFieldGuide`), a :class:`torch.distributions.Normal` of batch
    shape (N, K), or its ``Independent`` version.
    """
    if hasattr(q, "distribution"):
        if x is None:
            raise ValueError("x=None: a guide needs the observations to give q(z | x)")
        with torch.no_grad():
            q = q.distribution(x)
    base = q.base_dist if isinstance(q, torch.distributions.Independent) else q
    if not isinstance(base, torch.distributions.Normal):
        raise ValueError(f"q of type {type(base).__name__}: expected a diagonal Normal (use kl_monte_carlo)")
    loc, scale = base.loc.detach().double(), base.scale.detach().double()
    if loc.dim() != 2:
        raise ValueError(f"q of batch shape {tuple(loc.shape)}: expected (N, K); select one restart first")
    return loc, scale


def _normal_log_density(z: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``log N(z; loc, diag scale²)`` for points (n, G, K) and parameters (n, K) -> (n, G)."""
    u = (z - loc[:, None]) / scale[:, None]
    return (-0.5 * u**2 - scale.log()[:, None] - 0.5 * _LOG_2PI).sum(-1)


def grid_kl(
    source,
    q,
    post: GridPosterior,
    x: torch.Tensor,
    *,
    num_points: int | None = None,
    width: float = 10.0,
    chunk_size: int = 64,
) -> GridKL:
    """``KL(q ‖ p)`` and ``KL(p ‖ q)`` per x between a diagonal-Gaussian guide and the truth.

    Parameters
    ----------
    source : Dataset, VAEModel or PosteriorTarget
        The model whose posterior ``post`` is (the same one given to
        :func:`~pyro_vae.posterior.grid.grid_posterior`).
    q : guide or Normal
        ``q(z | x)`` for the rows of ``x`` (see :func:`guide_normal`).
    post : GridPosterior
        ``grid_posterior(source, x)`` with ``keep_density=True``.
    x : Tensor (N, D)
    num_points : int
        Points per axis of the grid over q (defaults 2049 for K = 1, 161 for K = 2).
    width : float
        q's grid spans ``loc ± width · scale``.

    Returns
    -------
    GridKL

    References
    ----------
    000 Eq. 2 and 004 Eq. 3: the posterior matching objective is ``E_p(x)[KL(q ‖ p_θ(z|x))]``.
    """
    target = posterior_target(source)
    loc, scale = guide_normal(q, x)
    n, k = loc.shape
    if post.log_density is None:
        raise ValueError("post was made with keep_density=False: KL needs the density")
    if post.axes.shape[0] != n or x.shape[0] != n:
        raise ValueError(f"q has {n} rows, post {post.axes.shape[0]} and x {x.shape[0]}: expected the same x")
    m = num_points or (2049 if k == 1 else 161)
    x64 = x.detach().double().to(loc.device)
    kl_pq, kl_qp = [], []
    t = torch.linspace(-width, width, m, dtype=torch.float64, device=loc.device)
    step = max(1, min(chunk_size, _CHUNK_POINTS // m**k))
    for start in range(0, n, step):
        rows = slice(start, start + step)
        lq_loc, lq_scale = loc[rows], scale[rows]
        # KL(p || q) on p's grid
        pts = post.points(rows)
        lw = post.log_weights(rows)
        log_q = _normal_log_density(pts, lq_loc, lq_scale)
        w = lw.exp()
        kl_pq.append((w * (post.log_density[rows] - log_q)).sum(-1))
        # KL(q || p) on q's grid
        axes = lq_loc[..., None] + lq_scale[..., None] * t  # (n, K, M)
        qpts = grid_points(axes)
        log_q = _normal_log_density(qpts, lq_loc, lq_scale)
        cells = trapezoid_log_cells(axes)
        wq = torch.softmax(log_q + cells, -1)
        with torch.no_grad():
            lj = target.log_joint(x64[rows, None, :], qpts)
        log_p = lj - post.log_marginal[rows, None]
        integrand = torch.where(wq > 0, wq * (log_q - log_p), torch.zeros_like(wq))
        kl_qp.append(integrand.sum(-1))
    return GridKL(torch.cat(kl_qp), torch.cat(kl_pq))


def kl_monte_carlo(
    source,
    q,
    x: torch.Tensor,
    log_marginal: torch.Tensor,
    *,
    num_samples: int = 1000,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``KL(q ‖ p(z | x))`` per x by Monte Carlo from q, and its standard error, each (N,).

    ``KL = E_q[log q(z) − log p(x, z)] + log p(x)``: exact in expectation for any guide
    that can be sampled and scored (``q`` a guide with ``distribution(x)`` or a distribution
    of batch (N,) and event (K,), or a diagonal Normal of batch (N, K)).
    """
    target = posterior_target(source)
    if hasattr(q, "distribution"):
        with torch.no_grad():
            q = q.distribution(x)
    if isinstance(q, torch.distributions.Normal):
        q = dist.Normal(q.loc, q.scale).to_event(1)
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        with torch.no_grad():
            z = q.sample((num_samples,))  # (S, N, K)
            diff = q.log_prob(z).double() - target.log_joint(x.detach().double(), z)
    finally:
        torch.random.set_rng_state(gen_state)
    kl = diff.mean(0) + log_marginal.double()
    se = diff.std(0) / math.sqrt(num_samples)
    return kl, se


# --------------------------------------------------------------------------- sample distances


def _mean_pairwise(a: torch.Tensor, b: torch.Tensor, wa: torch.Tensor, wb: torch.Tensor, chunk: int = 2048) -> torch.Tensor:
    total = a.new_zeros(())
    for i in range(0, a.shape[0], chunk):
        d = torch.cdist(a[i : i + chunk], b)
        total = total + (wa[i : i + chunk, None] * d * wb[None, :]).sum()
    return total


def energy_distance(a, b, b_weights=None) -> float:
    """Energy distance ``sqrt(2 E|X − Y| − E|X − X'| − E|Y − Y'|)`` between samples ``a`` and ``b``.

    ``a`` (n, K), ``b`` (m, K) (or 1-D arrays), Euclidean norm; ``b_weights`` optional
    probabilities of the rows of ``b``. Equals :func:`scipy.stats.energy_distance` in 1-D.

    References
    ----------
    Székely & Rizzo (2013), "Energy statistics: a class of statistics based on distances".
    """
    a = torch.as_tensor(np.asarray(a, dtype=float)).double()
    b = torch.as_tensor(np.asarray(b, dtype=float)).double()
    a, b = a.reshape(a.shape[0], -1), b.reshape(b.shape[0], -1)
    wa = torch.full((a.shape[0],), 1.0 / a.shape[0], dtype=torch.float64)
    wb = torch.full((b.shape[0],), 1.0 / b.shape[0], dtype=torch.float64) if b_weights is None else (
        torch.as_tensor(np.asarray(b_weights, dtype=float)).double() / float(np.sum(b_weights))
    )
    value = 2 * _mean_pairwise(a, b, wa, wb) - _mean_pairwise(a, a, wa, wa) - _mean_pairwise(b, b, wb, wb)
    return math.sqrt(max(float(value), 0.0))


def wasserstein_1d(a, b, b_weights=None) -> float:
    """1-Wasserstein distance between 1-D samples ``a`` and ``b`` (optionally weighted), via SciPy."""
    from scipy.stats import wasserstein_distance

    a = np.asarray(a, dtype=float).reshape(-1)
    b = np.asarray(b, dtype=float).reshape(-1)
    w = None if b_weights is None else np.asarray(b_weights, dtype=float).reshape(-1)
    return float(wasserstein_distance(a, b, v_weights=w))


class SampleComparison(NamedTuple):
    """Draws compared with a reference posterior, for one x.

    ``mean_error`` and ``var_error`` (K,) are draws minus reference; ``mean_se`` and ``var_se``
    (K,) their standard errors (from the Monte Carlo error of the draws: ArviZ MCSE for NUTS,
    ``sd / sqrt(n)`` for independent draws). ``wasserstein`` is the 1-Wasserstein distance
    (K = 1, else None) and ``energy`` the energy distance.
    """

    mean_error: torch.Tensor
    var_error: torch.Tensor
    mean_se: torch.Tensor
    var_se: torch.Tensor
    wasserstein: float | None
    energy: float


def nuts_vs_grid(result, post: GridPosterior, index: int, *, num_reference: int = 4000, seed: int = 0) -> SampleComparison:
    """NUTS draws for ``x[index]`` against the grid posterior of the same x.

    Errors are NUTS minus grid, standardised by the NUTS Monte Carlo standard errors
    (``mcse_mean``, and ``2 · sd · mcse_sd`` for the variance). The 1-Wasserstein distance
    (K = 1) uses the grid's weights directly; the energy distance uses them in 1-D and
    ``num_reference`` draws from the grid in 2-D.
    """
    draws = result.flat().double()
    k = draws.shape[-1]
    mean = draws.mean(0)
    var = draws.var(0)
    ref_mean, ref_sd = post.mean[index].double(), post.sd[index].double()
    mcse_mean = torch.tensor(result.diagnostics["mcse_mean"], dtype=torch.float64)
    mcse_sd = torch.tensor(result.diagnostics["mcse_sd"], dtype=torch.float64)
    var_se = 2 * var.sqrt() * mcse_sd
    if k == 1:
        pts = post.points(slice(index, index + 1))[0, :, 0]
        w = post.log_weights(slice(index, index + 1))[0].exp()
        w1 = wasserstein_1d(draws[:, 0].numpy(), pts.numpy(), w.numpy())
        energy = energy_distance(draws.numpy(), pts.numpy(), w.numpy())
    else:
        w1 = None
        energy = energy_distance(draws.numpy(), sample_grid_posterior(post, index, num_reference, seed).numpy())
    return SampleComparison(mean - ref_mean, var - ref_sd**2, mcse_mean, var_se, w1, energy)


def guide_vs_samples(
    q,
    samples: torch.Tensor,
    *,
    x: torch.Tensor | None = None,
    mcse_mean=None,
    mcse_sd=None,
    num_samples: int = 4000,
    seed: int = 0,
) -> SampleComparison:
    """A diagonal-Gaussian ``q(z | x)`` for one x against reference draws (e.g. NUTS, ``result.flat()``).

    ``q`` is a guide (with ``x`` of shape (1, D)) or a Normal of batch (1, K) or (K,). Errors
    are q's exact moments minus the draws'; their standard errors come from ``mcse_mean`` and
    ``mcse_sd`` (e.g. ``result.diagnostics``) or, if omitted, from treating the draws as
    independent. Distances use ``num_samples`` draws from q.
    """
    if hasattr(q, "distribution"):
        loc, scale = guide_normal(q, x)
    else:
        base = q.base_dist if isinstance(q, torch.distributions.Independent) else q
        if not isinstance(base, torch.distributions.Normal):
            raise ValueError(f"q of type {type(base).__name__}: expected a diagonal Normal")
        loc, scale = base.loc.detach().double().reshape(1, -1), base.scale.detach().double().reshape(1, -1)
    if loc.shape[0] != 1:
        raise ValueError(f"q gives {loc.shape[0]} posteriors: expected one x")
    loc, scale = loc[0], scale[0]
    ref = torch.as_tensor(samples).double().reshape(-1, loc.shape[0])
    n = ref.shape[0]
    ref_mean, ref_var = ref.mean(0), ref.var(0)
    mean_se = torch.as_tensor(mcse_mean, dtype=torch.float64) if mcse_mean is not None else ref_var.sqrt() / math.sqrt(n)
    sd_se = torch.as_tensor(mcse_sd, dtype=torch.float64) if mcse_sd is not None else ref_var.sqrt() / math.sqrt(2 * (n - 1))
    gen = torch.Generator().manual_seed(seed)
    draws = loc + scale * torch.randn(num_samples, loc.shape[0], generator=gen, dtype=torch.float64)
    w1 = wasserstein_1d(draws.numpy(), ref.numpy()) if loc.shape[0] == 1 else None
    return SampleComparison(
        loc - ref_mean, scale**2 - ref_var, mean_se, 2 * ref_var.sqrt() * sd_se, w1,
        energy_distance(draws.numpy(), ref.numpy()),
    )
