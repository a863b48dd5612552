"""Smooth k-NN two-sample statistic: marginals, exact permutation null, behaviour."""

import itertools

import numpy as np
import pytest
import torch
from common import assert_close, assert_within_se
from scipy.spatial.distance import cdist

from pyro_vae.metrics import smooth_knn_marginals, smooth_knn_statistic, smooth_knn_test
from pyro_vae.metrics.smooth_knn import _cross_edges, _null_moments


def _brute_force_marginals(u, k, alpha):
    """P(j among the k neighbours of i) by enumerating every k-subset."""
    d = cdist(u, u)
    n = len(u)
    out = np.zeros((n, n))
    for i in range(n):
        others = [j for j in range(n) if j != i]
        total = 0.0
        for subset in itertools.combinations(others, k):
            w = np.exp(-alpha * d[i, list(subset)].sum())
            total += w
            out[i, list(subset)] += w
        out[i] /= total
    return out


@pytest.mark.parametrize("k", [1, 2, 3, 6])
def test_marginals_match_enumeration(k):
    u = np.random.default_rng(1).normal(size=(7, 2))
    margs = smooth_knn_marginals(u, k=k, alpha=1.7)
    assert_close(margs, _brute_force_marginals(u, k, 1.7), atol=1e-12, rtol=0)
    assert_close(margs.sum(1), np.full(7, k), rtol=1e-12)


def test_k1_marginals_are_softmax_of_negative_distances():
    u = np.random.default_rng(2).normal(size=(5, 3))
    d = cdist(u, u)
    w = np.exp(-0.5 * d)
    np.fill_diagonal(w, 0.0)
    assert_close(smooth_knn_marginals(u, k=1, alpha=0.5), w / w.sum(1, keepdims=True), rtol=1e-12)


def test_large_alpha_recovers_hard_knn():
    u = np.random.default_rng(3).normal(size=(12, 2))
    d = cdist(u, u)
    np.fill_diagonal(d, np.inf)
    hard = np.zeros_like(d)
    for i, row in enumerate(np.argsort(d, axis=1)[:, :3]):
        hard[i, row] = 1.0
    assert_close(smooth_knn_marginals(u, k=3, alpha=1e4), hard, atol=1e-8, rtol=0)


@pytest.mark.parametrize("k", [1, 2])
def test_null_moments_exact_by_enumerating_labellings(k):
    # Every assignment of 3 "x" labels among 7 points is equally likely under the null.
    n_1, n_2 = 3, 4
    margs = smooth_knn_marginals(np.random.default_rng(4).normal(size=(7, 2)), k=k)
    values = []
    for chosen in itertools.combinations(range(7), n_1):
        order = list(chosen) + [i for i in range(7) if i not in chosen]
        values.append(_cross_edges(margs[np.ix_(order, order)], n_1))
    mean, var = _null_moments(margs, n_1, n_2)
    assert_close(mean, np.mean(values), rtol=1e-12)
    assert_close(var, np.var(values), rtol=1e-10)


def test_null_moments_against_random_permutations():
    rng = np.random.default_rng(5)
    n_1, n_2 = 100, 100
    margs = smooth_knn_marginals(rng.normal(size=(200, 2)), k=1)
    labels = np.zeros((20000, 200))
    for row in labels:
        row[rng.choice(200, n_1, replace=False)] = 1.0
    # T = sum_ij M_ij [s_i != s_j] for each labelling, vectorised.
    t = ((labels @ margs) * (1 - labels)).sum(1) + (((1 - labels) @ margs) * labels).sum(1)
    mean, var = _null_moments(margs, n_1, n_2)
    assert_within_se(t.mean(), mean, t.std() / np.sqrt(t.size), msg="null mean")
    var_se = np.sqrt((np.mean((t - t.mean()) ** 4) - t.var() ** 2) / t.size)
    assert_within_se(t.var(), var, var_se, msg="null variance")


@pytest.mark.parametrize("k", [1, 3])
def test_null_distribution_has_mean_zero_and_sd_one(k):
    # Conditionally on the pooled points, z is standardised exactly, so over repeated draws
    # from one distribution its mean is 0 and its variance 1.
    rng = np.random.default_rng(6)
    reps = 300 if k == 1 else 100
    z = np.array([smooth_knn_statistic(rng.normal(size=(50, 2)), rng.normal(size=(50, 2)), k=k) for _ in range(reps)])
    assert_within_se(z.mean(), 0.0, z.std(ddof=1) / np.sqrt(reps), msg="mean z under the null")
    sd = z.std(ddof=1)
    sd_se = np.sqrt(np.mean((z - z.mean()) ** 4) - sd**4) / (2 * sd * np.sqrt(reps))
    assert_within_se(sd, 1.0, sd_se, msg="sd of z under the null")


def test_grows_monotonically_with_mean_shift():
    rng = np.random.default_rng(7)
    pool_p = rng.normal(size=(1000, 2))
    means = []
    for shift in [0.0, 0.25, 0.5, 1.0, 2.0]:
        mean, se = smooth_knn_test(pool_p, rng.normal(size=(1000, 2)) + shift, n=100, repeats=10, seed=1)
        means.append(mean)
    assert abs(means[0]) < 1.5, means
    assert np.all(np.diff(means) > 0), means
    assert means[-1] > 20, means


def test_symmetric_in_its_two_samples_and_accepts_tensors():
    rng = np.random.default_rng(8)
    x, y = rng.normal(size=(30, 3)), rng.normal(size=(40, 3)) + 0.5
    a = smooth_knn_statistic(x, y, k=2, alpha=0.7)
    assert_close(smooth_knn_statistic(torch.tensor(y), torch.tensor(x), k=2, alpha=0.7), a, rtol=1e-10)
    assert a > 0


def test_test_helper_mean_and_standard_error():
    rng = np.random.default_rng(9)
    p, q = rng.normal(size=(300, 2)), rng.normal(size=(300, 2)) + 0.5
    mean, se = smooth_knn_test(p, q, n=50, repeats=8, seed=3)
    draw = np.random.default_rng(3)
    stats = []
    for _ in range(8):
        xs = p[draw.choice(300, 50, replace=False)]
        ys = q[draw.choice(300, 50, replace=False)]
        stats.append(smooth_knn_statistic(xs, ys))
    assert_close(mean, np.mean(stats), rtol=1e-12)
    assert_close(se, np.std(stats, ddof=1) / np.sqrt(8), rtol=1e-12)
    assert smooth_knn_test(p, q, n=50, repeats=8, seed=3) == (mean, se)


def test_identical_points_give_zero():
    assert smooth_knn_statistic(np.ones((5, 2)), np.ones((5, 2))) == 0.0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"k": 0}, "k must be"),
        ({"k": 20}, "k must be"),
        ({"alpha": 0.0}, "alpha must be"),
    ],
)
def test_statistic_rejects_bad_arguments(kwargs, match):
    x = np.zeros((10, 2))
    with pytest.raises(ValueError, match=match):
        smooth_knn_statistic(x, x + 1, **kwargs)


def test_rejects_bad_shapes_and_sizes():
    with pytest.raises(ValueError, match="same number of columns"):
        smooth_knn_statistic(np.zeros((5, 2)), np.zeros((5, 3)))
    with pytest.raises(ValueError, match="y must have at least 2 rows"):
        smooth_knn_statistic(np.zeros((5, 2)), np.zeros((1, 2)))
    with pytest.raises(ValueError, match="n must be at most the 50 rows of sample_q"):
        smooth_knn_test(np.zeros((500, 2)), np.zeros((50, 2)), n=100)
    with pytest.raises(ValueError, match="repeats must be"):
        smooth_knn_test(np.zeros((500, 2)), np.zeros((500, 2)), repeats=1)


def test_batched_repeats_equal_the_one_draw_statistic():
    """The k = 1 batched path gives each repeat's statistic as smooth_knn_statistic does."""
    from pyro_vae.metrics.smooth_knn import _batched_statistics_k1

    rng = np.random.default_rng(3)
    p, q = rng.normal(size=(500, 2)), rng.normal(loc=0.3, size=(400, 2))
    draws = [(rng.choice(500, 50, replace=False), rng.choice(400, 60, replace=False)) for _ in range(7)]
    batched = _batched_statistics_k1(p, q, draws, alpha=0.7, chunk=3)
    one = [smooth_knn_statistic(p[i], q[j], k=1, alpha=0.7) for i, j in draws]
    np.testing.assert_allclose(batched, one, rtol=1e-9, atol=1e-12)
