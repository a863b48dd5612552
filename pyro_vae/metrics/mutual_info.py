"""Mutual information between the data and the latent codes (004 Table 1, 000 Figure 1B).

Three estimators, all in nats:

- :func:`mutual_info_encoder` for any encoder q(z | x) (a guide or a distribution): the
  Gaussian formula below when q is a diagonal Normal, otherwise Monte Carlo with q's own
  density; it says which it used;

- :func:`mutual_info_gaussian_encoder` uses the densities of a Gaussian encoder,
  :math:`I_q(x; z_i) = E_{p(x) q(z_i|x)}[\\log q(z_i|x) - \\log q(z_i)]` with the aggregate
  posterior :math:`q(z_i) = \\frac{1}{N} \\sum_m q(z_i | x_m)` over the data set;
- :func:`mutual_info_ksg` is the k-nearest-neighbour estimator of Kraskov, Stoegbauer &
  Grassberger (2004), algorithm 1, on samples ``(x, z)`` from any model.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch
from scipy.spatial import cKDTree
from scipy.special import digamma

from ._checks import ArrayLike, as_numpy_2d, as_tensor_2d, check_int

__all__ = ["EncoderMutualInfo", "mutual_info_encoder", "mutual_info_gaussian_encoder", "mutual_info_ksg",
           "mutual_info_per_dim"]

_LOG_2PI = math.log(2.0 * math.pi)
_CHUNK_ELEMENTS = 1 << 22


def mutual_info_gaussian_encoder(
    loc: ArrayLike,
    scale: ArrayLike,
    num_samples: int = 10,
    seed: int = 0,
    per_dim: bool = True,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """Mutual information between ``x`` and the codes of a mean-field Gaussian encoder.

    Monte Carlo over ``num_samples`` codes ``z ~ q(z | x_n)`` per data point; the
    aggregate density is the exact mixture over the ``N`` encoder outputs (a logsumexp),
    so the estimate cannot exceed ``log N``.

    Parameters
    ----------
    loc, scale : array (N, K)
        Encoder means and standard deviations over the data set.
    num_samples : int
        Codes drawn per data point.
    seed : int
        Seed of the codes.
    per_dim : bool
        If true, ``I(x; z_i)`` for each latent dimension; otherwise the joint
        ``I(x; z)`` of the product posterior.
    chunk_size : int, optional
        Rows of the ``(rows, N, K)`` mixture evaluation held in memory at once; by
        default about 4 million entries. Cost ``O(num_samples N^2 K)`` time.

    Returns
    -------
    Tensor
        ``(K,)`` if ``per_dim`` else scalar, float64, on ``loc``'s device, in nats.

    References
    ----------
    004 Table 1 ("avg_i I(x; z_i)"); Hoffman & Johnson (2016) for the aggregate posterior.
    """
    loc_t = as_tensor_2d("loc", loc, dtype=torch.float64)
    scale_t = as_tensor_2d("scale", scale, dtype=torch.float64).to(loc_t.device)
    if loc_t.shape != scale_t.shape:
        raise ValueError(f"loc and scale must have the same shape; got {tuple(loc_t.shape)} and {tuple(scale_t.shape)}")
    if not bool((scale_t > 0).all()):
        raise ValueError("scale must be positive everywhere; got a non-positive entry")
    num_samples = check_int("num_samples", num_samples, minimum=1)
    n, k = loc_t.shape
    if chunk_size is None:
        chunk_size = max(1, _CHUNK_ELEMENTS // (n * k))
    chunk_size = check_int("chunk_size", chunk_size, minimum=1)
    inv_scale = 1.0 / scale_t
    offset = -torch.log(scale_t) - 0.5 * _LOG_2PI  # (N, K)
    gen = torch.Generator(device=loc_t.device).manual_seed(seed)
    total = torch.zeros(k if per_dim else (), dtype=torch.float64, device=loc_t.device)
    for _ in range(num_samples):
        eps = torch.randn(loc_t.shape, generator=gen, dtype=torch.float64, device=loc_t.device)
        z = loc_t + scale_t * eps
        cond_all = offset - 0.5 * eps**2  # log q(z_n | x_n), (N, K)
        for start in range(0, n, chunk_size):
            stop = start + chunk_size
            diff = (z[start:stop, None, :] - loc_t) * inv_scale  # (c, N, K)
            mix = torch.addcmul(offset, diff, diff, value=-0.5)  # log q(z_c | x_m)
            cond = cond_all[start:stop]
            if not per_dim:
                cond, mix = cond.sum(-1), mix.sum(-1)
            marg = torch.logsumexp(mix, dim=1) - math.log(n)
            total = total + (cond - marg).sum(0)
    return total / (n * num_samples)


def _standardized(a: np.ndarray) -> np.ndarray:
    sd = a.std(axis=0)
    return a / np.where(sd > 0, sd, 1.0)


def mutual_info_ksg(x: ArrayLike, z: ArrayLike, k: int = 3, standardize: bool = True) -> float:
    """Kraskov-Stoegbauer-Grassberger estimate of ``I(X; Z)`` (algorithm 1, max-norm).

    With :math:`\\epsilon_i` the max-norm distance from ``(x_i, z_i)`` to its ``k``-th
    neighbour in the joint space and :math:`n_x(i), n_z(i)` the numbers of other points
    strictly within :math:`\\epsilon_i` in each marginal space,
    :math:`\\hat I = \\psi(k) + \\psi(N) - \\langle \\psi(n_x + 1) + \\psi(n_z + 1) \\rangle`.

    The estimate is biased downward when the joint space has many dimensions (e.g. a
    high-dimensional ``x``) or when the dependence is strong relative to ``log N``; the
    bias vanishes for independent variables. Tied points (discrete data) should be
    broken with a little noise first.

    Parameters
    ----------
    x : array (N, D)
        Samples of the data (1-D means ``D = 1``).
    z : array (N, K)
        Paired samples of the codes; all of ``z``'s columns are taken jointly.
    k : int
        Neighbours, ``1 <= k < N`` (Kraskov et al. suggest 2-4).
    standardize : bool
        Scale each column to unit variance first (changes only the finite-sample bias).

    Returns
    -------
    float
        The estimate in nats (can be slightly negative).

    References
    ----------
    Kraskov, Stoegbauer & Grassberger (2004), Phys. Rev. E 69, 066138, Eq. (8); used in
    004 Table 1 and Appendix D.
    """
    x_a = as_numpy_2d("x", x)
    z_a = as_numpy_2d("z", z)
    if x_a.shape[0] != z_a.shape[0]:
        raise ValueError(f"x and z must have the same number of rows; got {x_a.shape[0]} and {z_a.shape[0]}")
    n = x_a.shape[0]
    k = check_int("k", k, minimum=1, maximum=n - 1)
    if standardize:
        x_a, z_a = _standardized(x_a), _standardized(z_a)
    joint = np.hstack([x_a, z_a])
    dist, _ = cKDTree(joint).query(joint, k=k + 1, p=np.inf)
    radius = np.nextafter(dist[:, k], 0.0)  # "strictly less than epsilon_i"
    n_x = cKDTree(x_a).query_ball_point(x_a, r=radius, p=np.inf, return_length=True) - 1
    n_z = cKDTree(z_a).query_ball_point(z_a, r=radius, p=np.inf, return_length=True) - 1
    return float(digamma(k) + digamma(n) - np.mean(digamma(n_x + 1) + digamma(n_z + 1)))


def mutual_info_per_dim(x: ArrayLike, z: ArrayLike, k: int = 3, standardize: bool = True) -> np.ndarray:
    """KSG estimate of ``I(x; z_i)`` for each latent dimension ``i``.

    Parameters
    ----------
    x : array (N, D)
        Samples of the data.
    z : array (N, K)
        Paired codes.
    k, standardize
        As in :func:`mutual_info_ksg`.

    Returns
    -------
    numpy.ndarray (K,)
        Nats; 004 Table 1 reports their average.

    References
    ----------
    Kraskov et al. (2004), algorithm 1; 004 Table 1.
    """
    z_a = as_numpy_2d("z", z)
    return np.array([mutual_info_ksg(x, z_a[:, i], k=k, standardize=standardize) for i in range(z_a.shape[1])])


class EncoderMutualInfo(NamedTuple):
    """Mutual information between x and the codes of an encoder q(z | x), with how it was computed.

    ``per_dim`` is ``I(x; z_i)`` per latent dimension (None when q's coordinates are dependent,
    e.g. a flow: their marginals have no density in closed form), ``joint`` is ``I(x; z)``,
    ``avg`` is ``mean_i I(x; z_i)`` (004 Table 1) or, without per-dimension values, None.
    ``method`` says which densities were used: ``"gaussian"`` (the diagonal-Normal formula) or
    ``"monte_carlo"`` (q's own ``log_prob``); ``mc_se`` is the Monte Carlo standard error of
    ``per_dim`` (K,) or of ``joint``.
    """

    per_dim: torch.Tensor | None
    joint: torch.Tensor
    avg: float | None
    method: str
    mc_se: torch.Tensor
    num_samples: int


def _mc_info(log_cond_fn, draw_fn, n: int, num_samples: int, chunk_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Σ terms of ``log q(z_n | x_n) − log (1/N) Σ_m q(z_n | x_m)`` over draws; mean and MC SE."""
    total, total_sq, count = 0.0, 0.0, 0
    for _ in range(num_samples):
        z = draw_fn()  # (N, K)
        cond = log_cond_fn(z, None)  # (N, [K])
        for start in range(0, n, chunk_size):
            rows = slice(start, start + chunk_size)
            mix = log_cond_fn(z[rows], True)  # (c, N, [K])
            term = (cond[rows] - (torch.logsumexp(mix, dim=1) - math.log(n))).double()
            total = total + term.sum(0)
            total_sq = total_sq + (term**2).sum(0)
            count += term.shape[0]
    mean = total / count
    var = (total_sq / count - mean**2).clamp_min(0) if count > 1 else torch.zeros_like(mean)
    return mean, (var / count).sqrt()


def mutual_info_encoder(
    q, x=None, *, num_samples: int = 10, seed: int = 0, chunk_size: int | None = None, max_joint_evaluations: int = 10**7
) -> EncoderMutualInfo:
    """``I_q(x; z_i)`` per dimension and ``I_q(x; z)`` for any encoder ``q(z | x)`` over a data set.

    ``I_q(x; z) = E_{p(x) q(z|x)}[log q(z|x) − log q(z)]`` with the aggregate posterior
    ``q(z) = (1/N) Σ_m q(z | x_m)`` over the N rows, by Monte Carlo over ``num_samples`` codes
    per row. A diagonal Normal q uses :func:`mutual_info_gaussian_encoder`'s Gaussian formula;
    any other q uses its own density (its per-dimension marginals when it is factorised, an
    ``Independent`` of a univariate family such as a Student-t; only the joint when its
    coordinates are dependent, e.g. a flow).

    Parameters
    ----------
    q : guide or distribution
        A Pyro guide (then ``x`` is required; see :func:`pyro_vae.traces.guide_distribution`) or
        ``q(z | x)`` of batch (N,) and event (K,).
    x : Tensor (N, D), optional
    num_samples : int
        Codes drawn per row.
    seed : int
        Seeds the codes (on a forked stream).
    max_joint_evaluations : int
        For a q with dependent coordinates (a flow), codes per row are cut so that the
        ``num_samples · N²`` density evaluations stay below this (at least one code per row);
        the result's ``num_samples`` says how many were drawn.

    Returns
    -------
    EncoderMutualInfo

    References
    ----------
    004 Table 1 ("avg_i I(x; z_i)"); Hoffman & Johnson (2016) for the aggregate posterior.
    """
    from pyro_vae.traces import diagonal_normal, factorised_marginals, guide_distribution
    from pyro_vae.rng import isolated_rng

    num_samples = check_int("num_samples", num_samples, minimum=1)
    if not isinstance(q, torch.distributions.Distribution) and x is None:
        raise ValueError("x=None: a guide needs the observations to give q(z | x)")
    dist_q = guide_distribution(q, x)
    if len(dist_q.batch_shape) != 1:
        raise ValueError(f"q of batch shape {tuple(dist_q.batch_shape)}: expected (N,); select one restart first")
    n, k = dist_q.batch_shape[0], dist_q.event_shape[0]
    normal = diagonal_normal(dist_q)
    if normal is not None:
        loc, scale = (t.detach() for t in normal)
        per_dim = mutual_info_gaussian_encoder(loc, scale, num_samples=num_samples, seed=seed, per_dim=True)
        joint = mutual_info_gaussian_encoder(loc, scale, num_samples=num_samples, seed=seed, per_dim=False)
        se = torch.full((k,), float("nan"), dtype=torch.float64)
        return EncoderMutualInfo(per_dim, joint, float(per_dim.mean()), "gaussian", se, num_samples)
    chunk = chunk_size or max(1, _CHUNK_ELEMENTS // (n * k))
    device = getattr(x, "device", None)
    marginals = factorised_marginals(dist_q)
    with torch.no_grad(), isolated_rng(device or "cpu", seed):
        if marginals is not None:
            per_dim, se = _mc_info(
                lambda z, mix: marginals.log_prob(z[:, None, :]) if mix else marginals.log_prob(z),
                lambda: marginals.sample(), n, num_samples, chunk,
            )
        else:
            per_dim = se = None
    if marginals is not None and k == 1:  # one coordinate: its marginal is the joint
        return EncoderMutualInfo(per_dim, per_dim[0], float(per_dim.mean()), "monte_carlo", se, num_samples)
    joint_samples = num_samples if marginals is not None else max(1, min(num_samples, max_joint_evaluations // (n * n)))
    with torch.no_grad(), isolated_rng(device or "cpu", seed + 1):
        joint, joint_se = _mc_info(
            lambda z, mix: dist_q.log_prob(z[:, None, :]) if mix else dist_q.log_prob(z),
            lambda: dist_q.sample(), n, joint_samples, chunk,
        )
    if per_dim is None and k == 1:
        return EncoderMutualInfo(joint.reshape(1), joint, float(joint), "monte_carlo", joint_se.reshape(1), joint_samples)
    if per_dim is None:
        return EncoderMutualInfo(None, joint, None, "monte_carlo", joint_se, joint_samples)
    return EncoderMutualInfo(per_dim, joint, float(per_dim.mean()), "monte_carlo", se, num_samples)
