"""Henze-Zirkler test of multivariate normality (Henze & Zirkler, 1990).

For ``n`` points in ``p`` dimensions with mean :math:`\\bar x` and biased covariance
:math:`S`, let :math:`D_j = (x_j - \\bar x)^T S^{-1} (x_j - \\bar x)`,
:math:`D_{jk} = (x_j - x_k)^T S^{-1} (x_j - x_k)` and
:math:`\\beta = 2^{-1/2} ((2p + 1) n / 4)^{1/(p+4)}`. The statistic is

.. math::
    HZ = \\frac{1}{n} \\sum_{j,k} e^{-\\beta^2 D_{jk}/2}
       - 2 (1+\\beta^2)^{-p/2} \\sum_j e^{-\\beta^2 D_j / (2(1+\\beta^2))}
       + n (1+2\\beta^2)^{-p/2},

and its p-value is the upper tail of the lognormal with the statistic's null mean and
variance. A singular covariance gives ``HZ = 4n`` (the convention of R's MVN and
pingouin), i.e. a p-value of about 0.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch
from scipy.stats import lognorm

from ._checks import ArrayLike, as_numpy_2d, as_tensor_2d, check_positive

__all__ = ["HenzeZirkler", "henze_zirkler", "henze_zirkler_torch", "henze_zirkler_penalty"]

_CHUNK = 1024
_PAIR_BUDGET = 1 << 18  # float64 pair-matrix entries per batched block (2 MiB)


class HenzeZirkler(NamedTuple):
    """The Henze-Zirkler statistic and its lognormal p-value."""

    statistic: float
    p_value: float


def _smoothing(n: int, p: int) -> float:
    return ((2 * p + 1) * n / 4.0) ** (1.0 / (p + 4)) / math.sqrt(2.0)


def _lognormal_null(n: int, p: int) -> tuple[float, float]:
    """Log-mean and log-sd of the lognormal matching HZ's null mean and variance."""
    b2 = _smoothing(n, p) ** 2
    a = 1 + 2 * b2
    wb = (1 + b2) * (1 + 3 * b2)
    mu = 1 - a ** (-p / 2) * (1 + p * b2 / a + p * (p + 2) * b2**2 / (2 * a**2))
    si2 = (
        2 * (1 + 4 * b2) ** (-p / 2)
        + 2 * a ** (-p) * (1 + 2 * p * b2**2 / a**2 + 3 * p * (p + 2) * b2**4 / (4 * a**4))
        - 4 * wb ** (-p / 2) * (1 + 3 * p * b2**2 / (2 * wb) + p * (p + 2) * b2**4 / (2 * wb**2))
    )
    log_mean = math.log(math.sqrt(mu**4 / (si2 + mu**2)))
    log_sd = math.sqrt(math.log1p(si2 / mu**2))
    return log_mean, log_sd


def _check_points(name: str, n: int, p: int) -> None:
    if n < p + 2:
        raise ValueError(f"{name} needs at least p + 2 = {p + 2} rows for {p} columns; got {n}")


def henze_zirkler(x: ArrayLike) -> HenzeZirkler:
    """Henze-Zirkler statistic and p-value, in NumPy/SciPy float64 (for reporting).

    Parameters
    ----------
    x : array (n, p)
        Points to test (1-D means ``p = 1``), ``n >= p + 2``.

    Returns
    -------
    HenzeZirkler
        ``(statistic, p_value)``; a small p-value rejects multivariate normality. The
        lognormal p-value holds its size for ``p >= 2`` (0.049-0.058 at a nominal 0.05
        for n = 50-100 in our checks) and is slightly liberal for ``p = 1`` (about 0.06).

    References
    ----------
    Henze & Zirkler (1990), Commun. Stat. Theory Methods 19(10); the lognormal p-value
    as in Trujillo-Ortiz et al.'s HZmvntest and pingouin ``multivariate_normality``.
    Used by 004 Section 9 (guideline 4) and 000 Eq. 44.
    """
    x = as_numpy_2d("x", x)
    n, p = x.shape
    _check_points("x", n, p)
    centred = x - x.mean(axis=0)
    cov = centred.T @ centred / n
    log_mean, log_sd = _lognormal_null(n, p)
    chol = None
    if np.linalg.matrix_rank(cov) == p:
        try:
            chol = np.linalg.cholesky(cov)
        except np.linalg.LinAlgError:
            pass
    if chol is None:
        stat = 4.0 * n
    else:
        b2 = _smoothing(n, p) ** 2
        white = np.linalg.solve(chol, centred.T).T  # rows: L^{-1}(x - mean), |.|^2 = Mahalanobis
        d_j = (white**2).sum(axis=1)
        pair_sum = 0.0
        for start in range(0, n, _CHUNK):  # O(n^2) time, O(n * _CHUNK) memory
            block = white[start : start + _CHUNK]
            d_jk = d_j[start : start + _CHUNK, None] + d_j[None, :] - 2.0 * block @ white.T
            pair_sum += np.exp(-b2 / 2 * np.maximum(d_jk, 0.0)).sum()
        stat = float(
            pair_sum / n
            - 2 * (1 + b2) ** (-p / 2) * np.exp(-b2 / (2 * (1 + b2)) * d_j).sum()
            + n * (1 + 2 * b2) ** (-p / 2)
        )
    p_value = float(lognorm.sf(stat, log_sd, scale=math.exp(log_mean)))
    return HenzeZirkler(float(stat), p_value)


def henze_zirkler_torch(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Differentiable Henze-Zirkler statistic and p-value in float64 PyTorch.

    Same numbers as :func:`henze_zirkler`; gradients flow to ``x`` through both outputs.
    Computed on ``x``'s device, without a host synchronisation. A singular covariance (rank
    below ``p`` or a failed Cholesky factorisation) gives the constant ``4n`` with a zero
    gradient.

    Parameters
    ----------
    x : Tensor (n, p) or (R, n, p)
        E.g. a batch of codes ``h(x_n)`` in LiBI (000 Eq. 44); ``n >= p + 2``. A leading
        dimension ``R`` holds independent batches (LiBI's restarts), tested one by one.

    Returns
    -------
    (Tensor, Tensor)
        Float64 statistic and p-value: scalars, or ``(R,)`` for a batched ``x``.

    References
    ----------
    Henze & Zirkler (1990); 000 Eq. 43-44.
    """
    if not isinstance(x, torch.Tensor) and np.ndim(x) == 3:
        x = torch.tensor(np.asarray(x, dtype=np.float64))
    if isinstance(x, torch.Tensor) and x.dim() > 3:
        raise ValueError(f"x must have shape (n,), (n, p) or (R, n, p); got {tuple(x.shape)}")
    batched = isinstance(x, torch.Tensor) and x.dim() == 3
    if batched:
        if x.shape[0] < 1 or x.shape[2] < 1:
            raise ValueError(f"x must have at least one batch and one column; got shape {tuple(x.shape)}")
        x = x.double()
    else:
        x = as_tensor_2d("x", x, dtype=torch.float64).unsqueeze(0)
    n, p = x.shape[-2:]
    _check_points("x", n, p)
    centred = x - x.mean(dim=-2, keepdim=True)
    cov = centred.transpose(-1, -2) @ centred / n
    regular = (torch.linalg.cholesky_ex(cov.detach())[1] == 0) & (torch.linalg.matrix_rank(cov.detach()) == p)
    # a singular batch is whitened by the identity: finite values and gradients, then discarded
    eye = torch.eye(p, dtype=x.dtype, device=x.device)
    chol = torch.linalg.cholesky_ex(torch.where(regular[:, None, None], cov, eye))[0]  # no error check: no sync
    log_mean, log_sd = _lognormal_null(n, p)
    b2 = _smoothing(n, p) ** 2
    white = torch.linalg.solve_triangular(chol, centred.transpose(-1, -2), upper=False).transpose(-1, -2)
    d_j = (white**2).sum(dim=-1)
    per_chunk = max(1, _PAIR_BUDGET // (n * n))  # restarts whose n × n pair matrices stay in cache
    pair_sum = torch.cat([
        (d_j[r : r + per_chunk, :, None] + d_j[r : r + per_chunk, None, :]
         - 2.0 * white[r : r + per_chunk] @ white[r : r + per_chunk].transpose(-1, -2))
        .clamp_min(0.0).mul(-b2 / 2).exp().sum((-2, -1))
        for r in range(0, x.shape[0], per_chunk)
    ])
    stat = (
        pair_sum / n
        - 2 * (1 + b2) ** (-p / 2) * torch.exp(-b2 / (2 * (1 + b2)) * d_j).sum(-1)
        + n * (1 + 2 * b2) ** (-p / 2)
    )
    stat = torch.where(regular, stat, x.sum((-2, -1)) * 0.0 + 4.0 * n)
    p_value = 0.5 * torch.special.erfc((torch.log(stat) - log_mean) / (log_sd * math.sqrt(2.0)))
    return (stat, p_value) if batched else (stat[0], p_value[0])


def henze_zirkler_penalty(x: torch.Tensor, max_exponent: float = 50.0) -> torch.Tensor:
    """``exp(HZ(x))``, the LiBI penalty of 000 Eq. 44, guarded against overflow.

    ``HZ`` grows linearly in ``n`` on non-normal batches (about ``0.3 n`` for two tight
    clusters), so ``exp(HZ)`` overflows float32 (``HZ > 88``) from a few hundred codes
    and float64 (``HZ > 709``) from a few thousand. Above ``max_exponent`` the exponential is
    continued by its tangent line, ``exp(c) * (1 + HZ - c)``: equal value and slope at
    ``c``, finite, and still increasing in ``HZ``.

    Parameters
    ----------
    x : Tensor (n, p)
        Batch of codes.
    max_exponent : float
        Where the linear continuation starts.

    Returns
    -------
    Tensor
        Scalar float64 penalty, differentiable in ``x``.

    References
    ----------
    000 Eq. 44 (the ``epsilon_HZ exp(HZ(...))`` term; the weight is the caller's).
    """
    c = check_positive("max_exponent", max_exponent)
    stat, _ = henze_zirkler_torch(x)
    return torch.where(stat <= c, torch.exp(stat.clamp_max(c)), math.exp(c) * (1.0 + stat - c))
