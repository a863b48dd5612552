"""How far an approximate posterior is from the truth: grid KLs and sample distances.

- :func:`grid_kl`: ``KL(q ‖ p)`` and ``KL(p ‖ q)`` per x between a guide ``q(z | x)`` and the
  exact posterior of a :class:`~pyro_vae.posterior.grid.GridPosterior` (K ≤ 2) of any model.
  ``KL(p ‖ q)`` integrates on the posterior's own grid (which holds its mass) with q's density;
  for a diagonal-Gaussian q, ``KL(q ‖ p)`` integrates on a grid over q's mass
  (``loc ± width · scale``), where ``log p(z | x) = log p(x, z) − log p(x)`` is evaluated
  exactly; for any other q it is a Monte Carlo estimate from q's draws, with its standard error
  (``method`` says which). The mean over x of ``KL(q ‖ p)`` is the posterior matching
  objective (000 Eq. 2, 004 Eq. 3).
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
    prior's support), ``kl_pq`` is ``KL(p ‖ q)``; each (N,). ``kl_qp_se`` is the Monte Carlo
    standard error of ``kl_qp`` (zeros when it was integrated on a grid) and ``method`` says how
    ``kl_qp`` was computed: ``"grid"`` (a diagonal-Normal q, integrated over q's own grid) or
    ``"monte_carlo"`` (any other q, from its draws and density). ``kl_pq`` is always
    integrated on the posterior's grid with q's density.
    """

    kl_qp: torch.Tensor
    kl_pq: torch.Tensor
    kl_qp_se: torch.Tensor | None = None
    method: str = "grid"


def guide_normal(q, x: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(loc, scale)`` (N, K), float64, of a diagonal-Gaussian guide or distribution.

    ``q`` is a Pyro guide (traced on ``x``), a :class:`torch.distributions.Normal` of batch
    shape (N, K), or its ``Independent`` version. Any other family raises ValueError.
    """
    from pyro_vae.traces import diagonal_normal, guide_distribution

    if not isinstance(q, torch.distributions.Distribution) and x is None:
        raise ValueError("x=None: a guide needs the observations to give q(z | x)")
    fn = guide_distribution(q, x)
    normal = diagonal_normal(fn)
    if normal is None:
        raise ValueError(f"q of type {type(fn).__name__}: expected a diagonal Normal (use kl_monte_carlo)")
    loc, scale = normal[0].detach().double(), normal[1].detach().double()
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
    num_samples: int = 4000,
    seed: int = 0,
) -> GridKL:
    """``KL(q ‖ p)`` and ``KL(p ‖ q)`` per x between a guide and the grid posterior of a model.

    Parameters
    ----------
    source : Dataset, VAEModel, Pyro model or target
        The model whose posterior ``post`` is (the same one given to
        :func:`~pyro_vae.posterior.grid.grid_posterior`).
    q : guide or distribution
        ``q(z | x)`` for the rows of ``x``: a Pyro guide or a distribution of batch (N,) and
        event (K,). A diagonal Normal is integrated on grids; any other family gives
        ``KL(q ‖ p)`` by Monte Carlo (``num_samples`` draws, ``seed``) and ``KL(p ‖ q)`` on the
        posterior's grid with q's density.
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
    from pyro_vae.traces import diagonal_normal, guide_distribution

    target = posterior_target(source, obs_dim=x.shape[-1])
    if not isinstance(q, torch.distributions.Distribution) or diagonal_normal(q) is None:
        fn = guide_distribution(q, x)
        if diagonal_normal(fn) is None:
            return _grid_kl_any(target, fn, post, x, num_samples=num_samples, seed=seed)
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
    kl_qp = torch.cat(kl_qp)
    return GridKL(kl_qp, torch.cat(kl_pq), torch.zeros_like(kl_qp), "grid")


def _grid_kl_any(target, q, post: GridPosterior, x: torch.Tensor, *, num_samples: int, seed: int) -> GridKL:
    """KL(q ‖ p) by Monte Carlo and KL(p ‖ q) on p's grid, for any q of batch (N,), event (K,)."""
    n = x.shape[0]
    if post.log_density is None:
        raise ValueError("post was made with keep_density=False: KL needs the density")
    if post.axes.shape[0] != n or q.batch_shape != (n,):
        raise ValueError(f"q has batch {tuple(q.batch_shape)}, post {post.axes.shape[0]} rows and x {n}: expected the same x")
    pts = post.points().transpose(0, 1)  # (G, N, K)
    log_q = []
    with torch.no_grad():
        for chunk in torch.split(pts, max(1, _CHUNK_POINTS // max(1, n))):
            log_q.append(q.log_prob(chunk.to(_dtype_of(q))).double().cpu())
    log_q = torch.cat(log_q).T.to(post.log_density.device)  # (N, G)
    w = post.log_weights().exp()
    integrand = torch.where(w > 0, w * (post.log_density - log_q), torch.zeros_like(w))
    kl_pq = integrand.sum(-1)
    kl_qp, se = kl_monte_carlo(target, q, x, post.log_marginal, num_samples=num_samples, seed=seed)
    return GridKL(kl_qp, kl_pq, se, "monte_carlo")


def _dtype_of(q) -> torch.dtype:
    for value in (getattr(q, "loc", None), getattr(q, "mean", None)):
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            return value.dtype
    base = getattr(q, "base_dist", None)
    return _dtype_of(base) if base is not None else torch.get_default_dtype()


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

    ``KL = E_q[log q(z) − log p(x, z)] + log p(x)``: exact in expectation for any guide that
    can be sampled and scored — a Pyro guide (traced on ``x``), a distribution of batch (N,)
    and event (K,), or a diagonal Normal of batch (N, K). ``log p(x, z)`` is the model's, through
    its Pyro trace. Draws are seeded on a forked stream.
    """
    from pyro_vae.traces import guide_distribution
    from pyro_vae.rng import isolated_rng

    target = posterior_target(source, obs_dim=x.shape[-1])
    fn = guide_distribution(q, x)
    with isolated_rng(x.device, seed), torch.no_grad():
        z = fn.sample((num_samples,))  # (S, N, K)
        diff = fn.log_prob(z).double() - target.log_joint(x.detach().double(), z)
    kl = diff.mean(0) + log_marginal.double().to(diff.device)
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
    """A guide's ``q(z | x)`` for one x against reference draws (e.g. NUTS, ``result.flat()``).

    ``q`` is a Pyro guide (with ``x`` of shape (1, D)) or a distribution of batch (1,) and event
    (K,) (or a Normal of batch (1, K) or (K,)). A diagonal Normal's moments are exact; any
    other q's come from ``num_samples`` of its draws, whose Monte Carlo error is added to the
    standard errors. The reference's errors come from ``mcse_mean`` and ``mcse_sd`` (e.g.
    ``result.diagnostics``) or, if omitted, from treating the draws as independent. Distances
    use ``num_samples`` draws from q.
    """
    from pyro_vae.traces import diagonal_normal, guide_distribution
    from pyro_vae.rng import isolated_rng

    if isinstance(q, torch.distributions.Distribution):
        fn = q if q.event_dim else q.to_event(1)
        if fn.batch_shape == torch.Size():
            fn = fn.expand(torch.Size([1]))
    else:
        fn = guide_distribution(q, x)
    if fn.batch_shape != torch.Size([1]):
        raise ValueError(f"q gives {tuple(fn.batch_shape)} posteriors: expected one x")
    k = fn.event_shape[0]
    ref = torch.as_tensor(samples).double().reshape(-1, k)
    n = ref.shape[0]
    ref_mean, ref_var = ref.mean(0), ref.var(0)
    mean_se = torch.as_tensor(mcse_mean, dtype=torch.float64) if mcse_mean is not None else ref_var.sqrt() / math.sqrt(n)
    sd_se = torch.as_tensor(mcse_sd, dtype=torch.float64) if mcse_sd is not None else ref_var.sqrt() / math.sqrt(2 * (n - 1))
    var_se = 2 * ref_var.sqrt() * sd_se
    normal = diagonal_normal(fn)
    with isolated_rng("cpu", seed), torch.no_grad():
        draws = fn.sample((num_samples,)).reshape(num_samples, k).double().cpu()
    if normal is not None:
        q_mean, q_var = normal[0].detach().double().reshape(k).cpu(), normal[1].detach().double().reshape(k).cpu() ** 2
    else:
        q_mean, q_var = draws.mean(0), draws.var(0)
        centred = draws - q_mean
        m4 = (centred**4).mean(0)
        mean_se = (mean_se**2 + q_var / num_samples).sqrt()
        var_se = (var_se**2 + (m4 - q_var**2).clamp_min(0) / num_samples).sqrt()
    w1 = wasserstein_1d(draws.numpy(), ref.numpy()) if k == 1 else None
    return SampleComparison(q_mean - ref_mean, q_var - ref_var, mean_se, var_se, w1, energy_distance(draws.numpy(), ref.numpy()))
