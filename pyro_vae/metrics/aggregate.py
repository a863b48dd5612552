"""The aggregate posterior of a Gaussian encoder, compared with the prior N(0, I)."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ._checks import ArrayLike, as_numpy_2d, check_int
from .linear_gaussian import gaussian_kl
from .normality import henze_zirkler

__all__ = ["AggregatePosterior", "aggregate_posterior"]


class AggregatePosterior(NamedTuple):
    """Moments of ``q(z) = mean_n q(z | x_n)`` and a normality test on its samples."""

    mean: np.ndarray  # (K,), exact mixture mean
    cov: np.ndarray  # (K, K), exact mixture covariance
    hz_statistic: float
    hz_p_value: float
    samples: np.ndarray  # (M, K), the draws the test used
    prior_kl: float  # KL(N(mean, cov) || N(0, I)) <= KL(q(z) || p(z))


def aggregate_posterior(
    loc: ArrayLike, scale: ArrayLike, num_samples: int | None = None, seed: int = 0
) -> AggregatePosterior:
    """Mean, covariance and Henze-Zirkler normality of the aggregate posterior.

    The moments are those of the mixture, exactly: mean ``mean_n loc_n`` and covariance
    ``Cov_n(loc_n) + mean_n diag(scale_n^2)`` (with the ``1/N`` covariance of the locs).
    A prior-matching aggregate has mean 0, covariance ``I`` and a non-small p-value.

    ``prior_kl`` is ``KL(N(mean, cov) ‖ N(0, I)) = ½ (tr cov + |mean|² − K − log det cov)``, a
    lower bound on ``KL(q(z) ‖ p(z))``: the prior's log-density is quadratic, so for the
    moment-matched Gaussian ``q_G``, ``KL(q ‖ p) = KL(q ‖ q_G) + KL(q_G ‖ p)``. It sees what the
    normality test cannot: a Gaussian ``q(z)`` with the wrong mean or covariance (000 Fig. 1F).

    Parameters
    ----------
    loc, scale : array (N, K)
        Encoder outputs ``q(z | x_n) = N(loc_n, diag(scale_n^2))`` over the data set.
    num_samples : int, optional
        Draws for the test. ``None``: one draw from each ``q(z | x_n)`` (``M = N``);
        otherwise ``M`` draws with the mixture component chosen uniformly. The test costs
        ``O(M^2 K)``.
    seed : int
        Seed of the draws.

    Returns
    -------
    AggregatePosterior
        ``(mean, cov, hz_statistic, hz_p_value, samples, prior_kl)``.

    References
    ----------
    000 Eq. 4 (aggregated posterior vs prior) and Appendix B; 004 Eq. 8;
    Henze & Zirkler (1990) for the test.
    """
    loc_a = as_numpy_2d("loc", loc)
    scale_a = as_numpy_2d("scale", scale)
    if loc_a.shape != scale_a.shape:
        raise ValueError(f"loc and scale must have the same shape; got {loc_a.shape} and {scale_a.shape}")
    if np.any(scale_a <= 0):
        raise ValueError("scale must be positive everywhere; got a non-positive entry")
    n, k = loc_a.shape
    rng = np.random.default_rng(seed)
    if num_samples is None:
        if n < k + 2:
            raise ValueError(f"loc needs at least K + 2 = {k + 2} rows for the test when num_samples is None; got {n}")
        comp = np.arange(n)
    else:
        num_samples = check_int("num_samples", num_samples, minimum=k + 2)
        comp = rng.integers(0, n, size=num_samples)
    samples = loc_a[comp] + scale_a[comp] * rng.standard_normal((comp.size, k))
    mean = loc_a.mean(axis=0)
    centred = loc_a - mean
    cov = centred.T @ centred / n + np.diag((scale_a**2).mean(axis=0))
    hz = henze_zirkler(samples)
    prior_kl = float(gaussian_kl(mean, cov, np.zeros(k), np.eye(k)))
    return AggregatePosterior(mean, cov, hz.statistic, hz.p_value, samples, prior_kl)
