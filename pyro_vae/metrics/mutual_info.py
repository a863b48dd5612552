"""Mutual information between the data and the latent codes (004 Table 1, 000 Figure 1B).

Two estimators, both in nats:

- :func:`mutual_info_gaussian_encoder` uses the densities of a Gaussian encoder,
  :math:`I_q(x; z_i) = E_{p(x) q(z_i|x)}[\\log q(z_i|x) - \\log q(z_i)]` with the aggregate
  posterior :math:`q(z_i) = \\frac{1}{N} \\sum_m q(z_i | x_m)` over the data set;
- :func:`mutual_info_ksg` is the k-nearest-neighbour estimator of Kraskov, Stoegbauer &
  Grassberger (2004), algorithm 1, on samples ``(x, z)`` from any model.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.spatial import cKDTree
from scipy.special import digamma

from ._checks import ArrayLike, as_numpy_2d, as_tensor_2d, check_int

__all__ = ["mutual_info_gaussian_encoder", "mutual_info_ksg", "mutual_info_per_dim"]

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
