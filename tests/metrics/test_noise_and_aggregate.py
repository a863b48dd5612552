"""ELBO-optimal noise variance (004 Eq. 9/31) and the aggregate posterior (000 Eq. 4)."""

import math

import numpy as np
import pytest
import torch
from scipy.integrate import quad
from scipy.stats import norm
from common import assert_close, assert_within_se

from pyro_vae.metrics import aggregate_posterior, elbo_noise_var, optimal_noise_var

# Linear-Gaussian model x = W z + eps, z ~ N(0, I_2), eps ~ N(0, diag(S)): the posterior is
# N(m(x), Sigma) with Sigma = (I + W^T S^-1 W)^-1 and m(x) = Sigma W^T S^-1 x.
W = np.array([[1.0, 0.5], [0.3, -1.0], [0.8, 0.2]])
S = np.array([0.1, 0.2, 0.05])
PRECISION = np.eye(2) + W.T @ np.diag(1 / S) @ W
POST_COV = np.linalg.inv(PRECISION)


def linear_data(n, rng):
    x = rng.standard_normal((n, 2)) @ W.T + rng.standard_normal((n, 3)) * np.sqrt(S)
    return x, x @ (POST_COV @ W.T @ np.diag(1 / S)).T


def test_exact_posterior_recovers_the_true_noise_variance():
    # With q the exact posterior and f the true decoder, E_p(x) E_q[(x - f(z))^2] = S exactly.
    rng = np.random.default_rng(0)
    x, m = linear_data(2000, rng)
    z = m + rng.standard_normal((10, 2000, 2)) @ np.linalg.cholesky(POST_COV).T
    decoded = z @ W.T
    estimate = elbo_noise_var(torch.tensor(x), torch.tensor(decoded))
    per_point = ((x - decoded) ** 2).mean(0)  # (N, D), independent across n
    se = per_point.std(0, ddof=1) / np.sqrt(2000)
    # Given the data, the expectation is also analytic: (x - W m)^2 + diag(W Sigma W^T).
    conditional = ((x - m @ W.T) ** 2).mean(0) + np.diag(W @ POST_COV @ W.T)
    mc_se = (per_point - ((x - m @ W.T) ** 2 + np.diag(W @ POST_COV @ W.T))).std(0, ddof=1) / np.sqrt(2000)
    for d in range(3):
        assert_within_se(estimate[d].item(), S[d], se[d], msg=f"population, dimension {d}")
        assert_within_se(estimate[d].item(), conditional[d], mc_se[d], msg=f"given x, dimension {d}")


def test_mean_field_guide_matches_its_closed_form():
    # The KL-optimal mean-field q has variances 1 / Lambda_ii, so Eq. 31 becomes
    # mean_n (x_n - W m_n)^2 + sum_k W_dk^2 / Lambda_kk.
    rng = np.random.default_rng(1)
    x, m = linear_data(500, rng)
    scale = np.broadcast_to(1 / np.sqrt(np.diag(PRECISION)), m.shape)
    closed = ((x - m @ W.T) ** 2).mean(0) + (W**2 / np.diag(PRECISION)).sum(1)
    w_t = torch.tensor(W)
    runs = np.array(
        [optimal_noise_var(x, lambda z: z @ w_t.T, m, scale, num_samples=20, seed=s).numpy() for s in range(8)]
    )
    for d in range(3):
        assert_within_se(runs[:, d].mean(), closed[d], runs[:, d].std(ddof=1) / np.sqrt(8), msg=f"dimension {d}")
    assert runs.dtype == np.float64


def test_noise_var_accepts_a_single_sample_and_checks_shapes():
    x = torch.zeros(4, 2)
    assert_close(elbo_noise_var(x, torch.ones(4, 2)), torch.ones(2))
    with pytest.raises(ValueError, match="decoded must have shape \\(S, 4, 2\\)"):
        elbo_noise_var(x, torch.ones(3, 4, 3))
    with pytest.raises(ValueError, match="loc and scale must both have shape \\(4, K\\)"):
        optimal_noise_var(x, lambda z: z, torch.zeros(4, 2), torch.ones(5, 2))


def test_aggregate_of_exact_posteriors_is_the_prior():
    rng = np.random.default_rng(2)
    n = 2000
    _, m = linear_data(n, rng)
    scale = np.broadcast_to(np.sqrt(np.diag(POST_COV)), m.shape)
    # Per-dimension scales of the exact posterior (its correlation is dropped) still give
    # aggregate variances of 1; the off-diagonal is Cov(m)_12 = -Sigma_12.
    agg = aggregate_posterior(torch.tensor(m), torch.tensor(scale.copy()), seed=3)
    sd_m = np.sqrt(np.diag(np.eye(2) - POST_COV))
    for i in range(2):
        assert_within_se(agg.mean[i], 0.0, sd_m[i] / np.sqrt(n), msg=f"mean {i}")
        assert_within_se(agg.cov[i, i], 1.0, np.sqrt(2.0) * sd_m[i] ** 2 / np.sqrt(n), msg=f"var {i}")
    assert_within_se(agg.cov[0, 1], -POST_COV[0, 1], np.sqrt(1.0 / n), msg="covariance")
    assert agg.samples.shape == (n, 2)
    assert agg.hz_p_value > 0.01


def test_aggregate_moments_match_its_samples():
    rng = np.random.default_rng(4)
    loc, scale = rng.normal(size=(300, 2)), rng.uniform(0.2, 1.0, size=(300, 2))
    agg = aggregate_posterior(loc, scale, num_samples=4000, seed=5)
    assert agg.samples.shape == (4000, 2)
    for i in range(2):
        se = np.sqrt(agg.cov[i, i] / 4000)
        assert_within_se(agg.samples[:, i].mean(), agg.mean[i], se, msg=f"sample mean {i}")
    assert_close(np.cov(agg.samples.T), agg.cov, atol=0.1, rtol=0)


def test_bimodal_aggregate_fails_the_normality_test():
    rng = np.random.default_rng(6)
    loc = np.where(rng.uniform(size=(1000, 1)) < 0.5, -2.0, 2.0) * np.array([[1.0, 0.0]])
    agg = aggregate_posterior(loc, np.full((1000, 2), 0.3), seed=7)
    assert_close(agg.cov, np.diag([(loc[:, 0] ** 2).mean() - loc[:, 0].mean() ** 2 + 0.09, 0.09]), rtol=1e-12)
    assert agg.hz_p_value < 1e-6


def test_prior_kl_is_the_closed_form_and_bounds_the_mixture_kl():
    # q(z) = ½ N(−a, s²) + ½ N(a, s²) in 1-D: mean 0, variance a² + s²
    s = 0.5
    for a in (0.0, 0.8, 2.0):
        agg = aggregate_posterior(np.array([[-a], [a], [-a], [a]]), np.full((4, 1), s), num_samples=10, seed=0)
        v = a**2 + s**2
        assert_close(agg.prior_kl, 0.5 * (v - 1.0 - math.log(v)), rtol=1e-12, atol=1e-15)
        q = lambda z: 0.5 * (norm.pdf(z, -a, s) + norm.pdf(z, a, s))  # noqa: E731
        exact = quad(lambda z: q(z) * (math.log(q(z)) - norm.logpdf(z)), -12, 12, limit=200)[0]
        if a == 0.0:
            assert_close(agg.prior_kl, exact, rtol=1e-7)  # a Gaussian q: the bound is tight
        else:
            assert agg.prior_kl < exact - 1e-3
    prior = aggregate_posterior(np.zeros((10, 2)), np.ones((10, 2)))
    assert prior.prior_kl == 0.0
    shifted = aggregate_posterior(np.full((10, 2), 0.5), np.ones((10, 2)))
    assert_close(shifted.prior_kl, 0.25, rtol=1e-12)  # ½ |mean|² with cov = I


def test_aggregate_validates_input():
    with pytest.raises(ValueError, match="scale must be positive"):
        aggregate_posterior(np.zeros((10, 2)), np.zeros((10, 2)))
    with pytest.raises(ValueError, match="same shape"):
        aggregate_posterior(np.zeros((10, 2)), np.ones((10, 3)))
    with pytest.raises(ValueError, match="num_samples must be >= 4"):
        aggregate_posterior(np.zeros((10, 2)), np.ones((10, 2)), num_samples=3)


def test_module_decoder_sets_dtype_of_the_codes():
    decoder = torch.nn.Linear(2, 3)  # float32 weights, float64 NumPy inputs
    x = np.random.default_rng(8).normal(size=(50, 3))
    loc, scale = np.zeros((50, 2)), np.ones((50, 2))
    estimate = optimal_noise_var(x, decoder, loc, scale, num_samples=4000, seed=0)
    with torch.no_grad():
        # f(z) = A z + b with z ~ N(0, I): E(x_d - f(z)_d)^2 = mean_n (x_nd - b_d)^2 + sum_k A_dk^2.
        closed = ((torch.tensor(x) - decoder.bias.double()) ** 2).mean(0) + (decoder.weight.double() ** 2).sum(1)
    assert estimate.dtype == torch.float64
    assert_close(estimate, closed, rtol=0.03)  # 200k draws: Monte Carlo relative SE below 0.5%
