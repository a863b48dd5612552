"""Mutual information estimators against closed forms (jointly Gaussian variables, 000's
pedagogical examples)."""

import numpy as np
import pytest
import torch
from common import assert_close, assert_within_se

from pyro_vae.metrics import mutual_info_gaussian_encoder, mutual_info_ksg, mutual_info_per_dim

# 000 Eq. 3 / Appendix C.2 (the model whose mean-field VAE compromises the generative model).
A = np.array([[0.75, 0.25], [1.5, -1.0]])


def eq3_model(noise_var, b_diag, n, rng):
    """x = chol(AA^T + B) z + eps, eps ~ N(0, noise_var I - B): data, codes, exact posterior,
    and I(X; Z) of 000 Eq. 22."""
    chol = np.linalg.cholesky(A @ A.T + np.diag(b_diag))
    z = rng.standard_normal((n, 2))
    x = z @ chol.T + rng.standard_normal((n, 2)) * np.sqrt(noise_var - b_diag)
    cov_x = A @ A.T + noise_var * np.eye(2)
    gain = chol.T @ np.linalg.inv(cov_x)
    post_cov = np.eye(2) - gain @ chol
    mi = 0.5 * (np.linalg.slogdet(cov_x)[1] - np.log(noise_var - b_diag).sum())
    return x, z, x @ gain.T, post_cov, mi


def eq5_model(noise_var, theta, n, rng):
    """x = theta z + eps, eps ~ N(0, noise_var - theta^2) (000 Eq. 5 / Appendix C.1): data,
    codes, exact posterior (Eq. 16) and I_theta(X; Z) = 1/2 log(noise_var / (noise_var - theta^2)).
    (Eq. 15 prints an extra "- 4" inside the bracket; it contradicts I = 0 at theta = 0, stated
    in the same appendix, and is left out.)"""
    z = rng.standard_normal(n)
    x = theta * z + np.sqrt(noise_var - theta**2) * rng.standard_normal(n)
    loc = theta / noise_var * x
    scale = np.full(n, np.sqrt((noise_var - theta**2) / noise_var))
    return x, z, loc[:, None], scale[:, None], 0.5 * np.log(noise_var / (noise_var - theta**2))


def _replicates(fn, reps):
    values = np.array([fn(seed) for seed in range(reps)], dtype=float)
    return values.mean(0), values.std(0, ddof=1) / np.sqrt(reps)


# --- Gaussian-encoder estimator ---------------------------------------------------------


@pytest.mark.parametrize("theta", [0.05, 0.09])
def test_encoder_estimator_on_eq5_with_exact_posterior(theta):
    def one(seed):
        _, _, loc, scale, _ = eq5_model(0.01, theta, 1000, np.random.default_rng(seed))
        return mutual_info_gaussian_encoder(loc, scale, num_samples=5, seed=seed).item()

    mean, se = _replicates(one, 5)
    truth = eq5_model(0.01, theta, 1, np.random.default_rng(0))[-1]
    assert_within_se(mean, truth, se, msg=f"theta={theta}")


def test_encoder_estimator_is_zero_when_codes_ignore_x():
    # theta = 0: every q(z|x_n) is the prior, so log q(z|x) = log q(z) exactly.
    _, _, loc, scale, _ = eq5_model(0.01, 0.0, 200, np.random.default_rng(0))
    assert_close(mutual_info_gaussian_encoder(loc, scale, num_samples=3), torch.zeros(1), atol=1e-12)


def test_encoder_estimator_per_dim_on_eq3_with_exact_marginal_posteriors():
    # q(z_i | x) = the exact marginal posterior N(m_i(x), Sigma_ii): I(x; z_i) = -1/2 log Sigma_ii.
    def one(seed):
        _, _, loc, post_cov, _ = eq3_model(0.01, np.array([0.006, 0.006]), 1000, np.random.default_rng(seed))
        scale = np.broadcast_to(np.sqrt(np.diag(post_cov)), loc.shape)
        return mutual_info_gaussian_encoder(torch.tensor(loc), torch.tensor(scale), num_samples=5, seed=seed).numpy()

    mean, se = _replicates(one, 5)
    post_cov = eq3_model(0.01, np.array([0.006, 0.006]), 1, np.random.default_rng(0))[3]
    truth = -0.5 * np.log(np.diag(post_cov))
    for i in range(2):
        assert_within_se(mean[i], truth[i], se[i], msg=f"dimension {i}")


def test_encoder_estimator_joint_equals_sum_for_independent_dimensions():
    # x_i = a_i z_i + eps_i with independent dimensions: I(x; z) = sum_i 1/2 log(1 + a_i^2 / s2).
    a, s2 = np.array([1.0, 2.0, 0.5]), 0.5
    truth = 0.5 * np.log(1 + a**2 / s2)

    def one(seed):
        rng = np.random.default_rng(seed)
        x = rng.standard_normal((800, 3)) * np.sqrt(a**2 + s2)
        loc, scale = x * a / (a**2 + s2), np.broadcast_to(np.sqrt(s2 / (a**2 + s2)), x.shape)
        joint = mutual_info_gaussian_encoder(loc, scale, num_samples=4, seed=seed, per_dim=False).item()
        return [joint, *mutual_info_gaussian_encoder(loc, scale, num_samples=4, seed=seed).numpy()]

    mean, se = _replicates(one, 5)
    assert_within_se(mean[0], truth.sum(), se[0], msg="joint")
    for i in range(3):
        assert_within_se(mean[1 + i], truth[i], se[1 + i], msg=f"dimension {i}")


def test_encoder_estimator_is_seeded_and_capped_by_log_n():
    _, _, loc, scale, _ = eq5_model(0.01, 0.0999, 100, np.random.default_rng(0))  # I = 3.2 nats
    a = mutual_info_gaussian_encoder(loc, scale, num_samples=2, seed=4)
    assert torch.equal(a, mutual_info_gaussian_encoder(loc, scale, num_samples=2, seed=4))
    assert_close(mutual_info_gaussian_encoder(loc, scale, num_samples=2, seed=4, chunk_size=7), a, rtol=1e-12)
    assert a.item() <= np.log(100) + 1e-12


# --- KSG estimator -----------------------------------------------------------------------

# KSG has a small downward finite-sample bias on strongly dependent Gaussians (Kraskov et al.
# 2004, Fig. 4); at N = 2000, k = 3 and these correlations it is below 0.03 nats.
KSG_BIAS = 0.03


def _assert_ksg(mean, truth, se, msg):
    assert abs(mean - truth) <= 4 * se + KSG_BIAS, f"{msg}: {mean:.4f} vs {truth:.4f} (se {se:.4f})"


@pytest.mark.parametrize("rho", [0.0, 0.6, 0.9])
def test_ksg_bivariate_gaussian(rho):
    def one(seed):
        rng = np.random.default_rng(seed)
        z = rng.standard_normal(2000)
        x = rho * z + np.sqrt(1 - rho**2) * rng.standard_normal(2000)
        return mutual_info_ksg(x, z)

    mean, se = _replicates(one, 8)
    truth = -0.5 * np.log(1 - rho**2)
    if rho == 0.0:
        assert_within_se(mean, 0.0, se, msg="independent")  # unbiased for independent variables
    _assert_ksg(mean, truth, se, f"rho={rho}")


def test_ksg_multivariate_gaussian():
    # x = M z + e with z ~ N(0, I_2), e ~ N(0, I_3): I(x; z) = 1/2 log det(I + M M^T).
    m = np.array([[0.8, 0.0], [0.4, 0.6], [0.0, 0.9]])
    truth = 0.5 * np.linalg.slogdet(np.eye(3) + m @ m.T)[1]

    def one(seed):
        rng = np.random.default_rng(seed)
        z = rng.standard_normal((2000, 2))
        return mutual_info_ksg(torch.tensor(z @ m.T + rng.standard_normal((2000, 3))), z)

    mean, se = _replicates(one, 8)
    _assert_ksg(mean, truth, se, "3-D x, 2-D z")


def test_ksg_on_eq5_and_eq3_closed_forms():
    # 000's two examples, with noise_var = 1 so the dependence stays within KSG's range.
    def one(seed):
        x5, z5, *_ = eq5_model(1.0, 0.6, 2000, np.random.default_rng(seed))
        x3, z3, *_ = eq3_model(1.0, np.array([0.3, 0.6]), 2000, np.random.default_rng(seed))
        return [mutual_info_ksg(x5, z5), mutual_info_ksg(x3, z3), *mutual_info_per_dim(x3, z3)]

    mean, se = _replicates(one, 8)
    truth5 = eq5_model(1.0, 0.6, 1, np.random.default_rng(0))[-1]
    *_, post_cov, truth3 = eq3_model(1.0, np.array([0.3, 0.6]), 1, np.random.default_rng(0))
    _assert_ksg(mean[0], truth5, se[0], "Eq. 5")
    _assert_ksg(mean[1], truth3, se[1], "Eq. 3 / Eq. 22, joint")
    per_dim = -0.5 * np.log(np.diag(post_cov))  # I(x; z_i) from the marginal posterior variance
    for i in range(2):
        _assert_ksg(mean[2 + i], per_dim[i], se[2 + i], f"Eq. 3, dimension {i}")


def test_ksg_biased_downward_when_x_has_many_dimensions():
    # The documented limitation: nine irrelevant dimensions added to x shrink the estimate.
    rng = np.random.default_rng(3)
    z = rng.standard_normal(2000)
    x1 = 0.8 * z + 0.6 * rng.standard_normal(2000)
    truth = -0.5 * np.log(1 - 0.64)
    low = mutual_info_ksg(x1, z)
    high = mutual_info_ksg(np.column_stack([x1, rng.standard_normal((2000, 9))]), z)
    assert abs(low - truth) < 0.05
    assert high < truth - 0.15


def test_ksg_validates_input():
    with pytest.raises(ValueError, match="k must be in \\[1, 9\\]; got 10"):
        mutual_info_ksg(np.zeros(10), np.zeros(10), k=10)
    with pytest.raises(ValueError, match="k must be"):
        mutual_info_ksg(np.zeros(10), np.zeros(10), k=0)
    with pytest.raises(ValueError, match="same number of rows"):
        mutual_info_ksg(np.zeros(10), np.zeros(11))


def test_encoder_estimator_validates_input():
    with pytest.raises(ValueError, match="same shape"):
        mutual_info_gaussian_encoder(np.zeros((5, 2)), np.ones((5, 3)))
    with pytest.raises(ValueError, match="scale must be positive"):
        mutual_info_gaussian_encoder(np.zeros((5, 2)), np.zeros((5, 2)))
    with pytest.raises(ValueError, match="num_samples must be >= 1"):
        mutual_info_gaussian_encoder(np.zeros((5, 2)), np.ones((5, 2)), num_samples=0)
