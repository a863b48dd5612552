"""Smooth k-nearest-neighbour two-sample statistic (Djolonga & Krause, 2017).

The papers' main measure of how well a learned :math:`p_\\theta(x)` matches :math:`p(x)`
(Appendix D of 004, Appendix E of 000): draw 100 points from each, compute the statistic,
repeat and average. Lower is better; about 0 means "indistinguishable".

The pooled sample :math:`u_1..u_n` (``n = n_1 + n_2``) defines a soft k-NN graph: row ``i``
is a distribution over k-subsets ``S`` of the other points with weight
:math:`\\exp(-\\alpha \\sum_{j \\in S} \\|u_i - u_j\\|)`, and :math:`M_{ij}` is the
probability that ``j`` is among the k neighbours of ``i``. ``T`` is the expected number of
edges that join the two samples, :math:`T = \\sum_{i \\ne j} M_{ij} [s_i \\ne s_j]`, and
the statistic is its z-score under the permutation null, ``z = (E0[T] - T) / sd0[T]``,
which grows as the samples separate.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy.spatial.distance import cdist
from scipy.special import logsumexp, softmax

from ._checks import ArrayLike, as_numpy_2d, check_int, check_positive

__all__ = ["SmoothKNNResult", "smooth_knn_statistic", "smooth_knn_test", "smooth_knn_marginals"]


class SmoothKNNResult(NamedTuple):
    """Mean of the statistic over the repeats and its standard error."""

    mean: float
    se: float


def _subset_marginals(log_weights: np.ndarray, k: int) -> np.ndarray:
    """Row-wise inclusion probabilities of a weighted k-subset distribution.

    Row ``i`` defines :math:`p(S) \\propto \\prod_{j \\in S} w_{ij}` over subsets with
    ``|S| = k``; the result is :math:`P(j \\in S)`. Sum-product over the chain of
    indicators with the running count as state (forward and backward messages of size
    ``k + 1``), as in the cardinality-potential inference of torch-two-sample (after
    Swersky et al., 2012). Cost ``O(n_rows * n_cols * k)`` time and memory.
    """
    rows, cols = log_weights.shape
    q = log_weights - log_weights.max(axis=1, keepdims=True)  # a per-row shift cancels
    empty = np.full((rows, k + 1), -np.inf)
    empty[:, 0] = 0.0
    fwd = np.empty((cols + 1, rows, k + 1))  # fwd[j][:, c] = log e_c(w_0..w_{j-1})
    bwd = np.empty((cols + 1, rows, k + 1))  # bwd[j][:, c] = log e_c(w_j..w_{cols-1})
    fwd[0] = empty
    bwd[cols] = empty
    with np.errstate(invalid="ignore"):  # -inf + -inf in masked entries
        for j in range(cols):
            prev = fwd[j]
            fwd[j + 1] = prev
            fwd[j + 1][:, 1:] = np.logaddexp(prev[:, 1:], prev[:, :-1] + q[:, j : j + 1])
        for j in range(cols - 1, -1, -1):
            nxt = bwd[j + 1]
            bwd[j] = nxt
            bwd[j][:, 1:] = np.logaddexp(nxt[:, 1:], nxt[:, :-1] + q[:, j : j + 1])
        log_z = fwd[cols][:, k]  # (rows,)
        # P(j in S) = w_j * sum_a e_a(before j) e_{k-1-a}(after j) / e_k(all)
        pairs = fwd[:cols, :, :k] + bwd[1:, :, k - 1 :: -1]  # (cols, rows, k)
        log_incl = logsumexp(pairs, axis=2).T + q - log_z[:, None]
    return np.exp(np.where(np.isfinite(log_incl), log_incl, -np.inf))


def smooth_knn_marginals(pooled: ArrayLike, k: int = 1, alpha: float = 1.0) -> np.ndarray:
    """Soft k-NN edge marginals :math:`M_{ij}` of a pooled sample.

    Parameters
    ----------
    pooled : array (n, d)
        The pooled points.
    k : int
        Neighbours per point, ``1 <= k <= n - 1``.
    alpha : float
        Inverse temperature on the Euclidean distances.

    Returns
    -------
    numpy.ndarray (n, n)
        Zero diagonal; each row sums to ``k``. ``k = 1`` is a softmax of ``-alpha * d``.

    References
    ----------
    Djolonga & Krause (2017), "Learning implicit generative models using differentiable
    graph tests", Section 3; torch-two-sample ``SmoothKNNStatistic``.
    """
    u = as_numpy_2d("pooled", pooled, min_rows=2)
    n = u.shape[0]
    k = check_int("k", k, minimum=1, maximum=n - 1)
    alpha = check_positive("alpha", alpha)
    logits = -alpha * cdist(u, u)
    np.fill_diagonal(logits, -np.inf)
    if k == 1:
        return softmax(logits, axis=1)
    return _subset_marginals(logits, k)


def _null_moments(margs: np.ndarray, n_1: int, n_2: int) -> tuple[float, float]:
    """Exact mean and variance of ``T`` when the ``n_1`` / ``n_2`` labels are permuted.

    With :math:`W_{ij} = M_{ij} + M_{ji}` on the edges ``i < j``, an edge is cut with
    probability ``2 chi_1``, two edges sharing a vertex with ``chi_1`` and two disjoint
    edges with ``chi_1 chi_2``; collecting terms gives
    ``Var = chi_1 chi_2 sum W^2 + chi_1 (1 - chi_2) sum_i deg_i^2 + chi_1 (chi_2 - 4 chi_1) m^2``
    (the formula of torch-two-sample's ``SmoothKNNStatistic``).
    """
    n = n_1 + n_2
    m = margs.sum()
    chi_1 = n_1 * n_2 / (n * (n - 1))
    chi_2 = 4.0 * (n_1 - 1) * (n_2 - 1) / ((n - 2) * (n - 3))
    degree_sq = ((margs.sum(0) + margs.sum(1)) ** 2).sum()
    edge_sq = (margs**2).sum() + (margs * margs.T).sum()  # sum over i<j of W_ij^2
    mean = 2.0 * chi_1 * m
    var = chi_1 * chi_2 * edge_sq + chi_1 * (1.0 - chi_2) * degree_sq + chi_1 * (chi_2 - 4.0 * chi_1) * m**2
    return float(mean), float(var)


def _cross_edges(margs: np.ndarray, n_1: int) -> float:
    return float(margs[:n_1, n_1:].sum() + margs[n_1:, :n_1].sum())


def smooth_knn_statistic(x: ArrayLike, y: ArrayLike, k: int = 1, alpha: float = 1.0) -> float:
    """Smooth k-NN two-sample statistic as a z-score under the permutation null.

    Parameters
    ----------
    x, y : array (n_1, d), (n_2, d)
        The two samples (NumPy arrays or torch tensors; 1-D means ``d = 1``), at least
        two points each and four in all.
    k : int
        Neighbours per point (``1 <= k < n_1 + n_2``). The papers do not state it; 1 is
        the reference library's fast case. ``k > 1`` costs ``O(n^2 k)``.
    alpha : float
        Inverse temperature on the raw Euclidean distances (papers: unstated; default 1).

    Returns
    -------
    float
        ``(E0[T] - T) / sqrt(Var0[T])``: about 0 (mean 0, variance 1 over draws) when
        both samples come from one distribution, larger when they differ. 0.0 when the
        null variance vanishes (all pairwise distances equal).

    References
    ----------
    Djolonga & Krause (2017); torch-two-sample ``SmoothKNNStatistic(compute_t_stat=True)``
    (same sign convention; distances here are exact, in float64, without its 1e-5 jitter).
    Used in 004 Appendix D and 000 Appendix E ("lower is better").
    """
    x = as_numpy_2d("x", x, min_rows=2)
    y = as_numpy_2d("y", y, min_rows=2)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must have the same number of columns; got {x.shape[1]} and {y.shape[1]}")
    n_1, n_2 = x.shape[0], y.shape[0]
    if n_1 + n_2 < 4:
        raise ValueError(f"x and y need at least 4 points together; got {n_1} + {n_2}")
    margs = smooth_knn_marginals(np.concatenate([x, y]), k=k, alpha=alpha)
    mean, var = _null_moments(margs, n_1, n_2)
    if var <= 1e-12 * max(1.0, mean**2):
        return 0.0
    return (mean - _cross_edges(margs, n_1)) / float(np.sqrt(var))


def smooth_knn_test(
    sample_p: ArrayLike,
    sample_q: ArrayLike,
    n: int = 100,
    repeats: int = 20,
    seed: int = 0,
    k: int = 1,
    alpha: float = 1.0,
) -> SmoothKNNResult:
    """Average the smooth k-NN statistic over repeated ``n``-vs-``n`` draws.

    Each repeat draws ``n`` rows without replacement from each sample (e.g. the test set
    or ground-truth samples, and samples of the learned model) and evaluates
    :func:`smooth_knn_statistic`.

    Parameters
    ----------
    sample_p, sample_q : array (N_p, d), (N_q, d)
        Pools to draw from, each with at least ``n`` rows.
    n : int
        Points drawn from each pool per repeat (papers: 100).
    repeats : int
        Number of draws, at least 2 (004: "many"; 000: 20000).
    seed : int
        Seed of the draws.
    k, alpha
        Passed to :func:`smooth_knn_statistic`.

    Returns
    -------
    SmoothKNNResult
        ``(mean, se)``: mean of the statistics and its standard error
        ``sd / sqrt(repeats)``.

    References
    ----------
    004 Appendix D; 000 Appendix E (Evaluation); Djolonga & Krause (2017).
    """
    p = as_numpy_2d("sample_p", sample_p)
    q = as_numpy_2d("sample_q", sample_q)
    n = check_int("n", n, minimum=2)
    repeats = check_int("repeats", repeats, minimum=2)
    if n > p.shape[0]:
        raise ValueError(f"n must be at most the {p.shape[0]} rows of sample_p; got n={n}")
    if n > q.shape[0]:
        raise ValueError(f"n must be at most the {q.shape[0]} rows of sample_q; got n={n}")
    if p.shape[1] != q.shape[1]:
        raise ValueError(f"sample_p and sample_q must have the same number of columns; got {p.shape[1]} and {q.shape[1]}")
    k = check_int("k", k, minimum=1, maximum=2 * n - 1)
    check_positive("alpha", alpha)
    rng = np.random.default_rng(seed)
    draws = [(rng.choice(p.shape[0], size=n, replace=False), rng.choice(q.shape[0], size=n, replace=False))
             for _ in range(repeats)]
    if k == 1:
        stats = _batched_statistics_k1(p, q, draws, alpha)
    else:
        stats = np.array([smooth_knn_statistic(p[i], q[j], k=k, alpha=alpha) for i, j in draws])
    return SmoothKNNResult(float(stats.mean()), float(stats.std(ddof=1) / np.sqrt(repeats)))


def _batched_statistics_k1(p: np.ndarray, q: np.ndarray, draws, alpha: float, chunk: int = 64) -> np.ndarray:
    """:func:`smooth_knn_statistic` with ``k = 1`` for many draws at once (float64, torch).

    The same marginals (a softmax of ``-alpha * d`` per row), null moments and cross edges as
    the one-draw path, computed for ``chunk`` draws per batched distance matrix.
    """
    import torch

    pt, qt = torch.from_numpy(np.ascontiguousarray(p, dtype=np.float64)), torch.from_numpy(np.ascontiguousarray(q, dtype=np.float64))
    idx_p = torch.from_numpy(np.stack([i for i, _ in draws]))
    idx_q = torch.from_numpy(np.stack([j for _, j in draws]))
    n_1, n_2 = idx_p.shape[1], idx_q.shape[1]
    n = n_1 + n_2
    chi_1 = n_1 * n_2 / (n * (n - 1))
    chi_2 = 4.0 * (n_1 - 1) * (n_2 - 1) / ((n - 2) * (n - 3))
    out = []
    eye = torch.eye(n, dtype=torch.bool)
    for start in range(0, len(draws), chunk):
        u = torch.cat([pt[idx_p[start : start + chunk]], qt[idx_q[start : start + chunk]]], 1)  # (B, n, d)
        logits = (-alpha * torch.cdist(u, u)).masked_fill(eye, -torch.inf)
        m = torch.softmax(logits, -1)
        total = m.sum((1, 2))
        degree_sq = ((m.sum(1) + m.sum(2)) ** 2).sum(-1)
        edge_sq = (m**2).sum((1, 2)) + (m * m.transpose(1, 2)).sum((1, 2))
        mean = 2.0 * chi_1 * total
        var = chi_1 * chi_2 * edge_sq + chi_1 * (1.0 - chi_2) * degree_sq + chi_1 * (chi_2 - 4.0 * chi_1) * total**2
        cross = m[:, :n_1, n_1:].sum((1, 2)) + m[:, n_1:, :n_1].sum((1, 2))
        degenerate = var <= 1e-12 * torch.clamp(mean**2, min=1.0)
        z = torch.where(degenerate, torch.zeros_like(mean), (mean - cross) / var.clamp_min(1e-300).sqrt())
        out.append(z)
    return torch.cat(out).numpy()
