"""Closed forms of linear-Gaussian models (000 App. C) against independent derivations and estimators."""

import math

import pytest
import torch
from scipy.optimize import minimize

from common import assert_close, assert_within_se
from pyro_vae.datasets import get_dataset
from pyro_vae.metrics.linear_gaussian import (
    LinearGaussian,
    gaussian_kl,
    linear_gaussian_params,
    marginal,
    mean_field_kl,
    mean_field_optimum,
    mleo,
    mutual_information,
    optimal_mean_field_elbo,
    optimal_pmo,
    posterior,
)
from pyro_vae.models import VAEModel
from pyro_vae.posterior.quadrature import log_marginal_quadrature


def _random_model(k=2, d=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(d, k, generator=g, dtype=torch.float64)
    b = torch.randn(d, generator=g, dtype=torch.float64)
    psi = 0.05 + torch.rand(d, generator=g, dtype=torch.float64)
    return LinearGaussian(W, b, psi)


def test_posterior_matches_conditioning_of_the_joint():
    """Eqs. 23-24 of 000 against conditioning the joint N([b, 0], [[WWᵀ+Ψ, W], [Wᵀ, I]])."""
    p = _random_model()
    x = torch.randn(7, 3, dtype=torch.float64)
    post = posterior(p, x)
    C = p.W @ p.W.T + torch.diag(p.psi)
    gain = p.W.T @ torch.linalg.inv(C)
    assert_close(post.mean, (x - p.b) @ gain.T, atol=1e-12, msg="posterior mean")
    assert_close(post.cov, torch.eye(2, dtype=torch.float64) - gain @ p.W, atol=1e-12, msg="posterior covariance")


@pytest.mark.parametrize("name", ["linear_jte", "case1", "case2", "gaussian"])
def test_params_read_off_datasets_give_their_marginals(name):
    ds = get_dataset(name)
    m = marginal(linear_gaussian_params(ds))
    truth = ds.marginal()
    assert_close(m.covariance_matrix, truth.covariance_matrix, atol=1e-6, msg=name)
    assert_close(m.loc, truth.loc, atol=1e-7, msg=name)


def test_quadrature_marginal_matches_closed_form():
    ds = get_dataset("case1")
    x, _ = ds.sample(50, seed=3)
    res = log_marginal_quadrature(ds.f, ds.obs_noise_var(), x, 1)
    assert res.converged
    assert_close(res.log_marginal, marginal(linear_gaussian_params(ds)).log_prob(x.double()), atol=1e-6)
    p = _random_model(k=2, d=2, seed=6)
    x = marginal(p).sample((50,))
    res = log_marginal_quadrature(lambda z: z @ p.W.T.to(z) + p.b.to(z), p.psi, x, 2, num_points=101)
    assert res.converged
    assert_close(res.log_marginal, marginal(p).log_prob(x), atol=2e-3, msg="K = 2")


def test_case1_posterior_information_and_pmo():
    """000 App. C.1: posterior N(θx/σ², (σ²−θ²)/σ²) (Eq. 16), I = ½ log(σ²/(σ²−θ²)) (Eq. 15 without
    the typo), and a 1-D posterior is its own mean-field optimum (PMO* = 0)."""
    theta, sigma2 = 0.9, 1.0
    p = linear_gaussian_params(get_dataset("case1", theta=theta, sigma2=sigma2))
    x = torch.tensor([[-1.5], [0.2], [2.0]], dtype=torch.float64)
    post = posterior(p, x)
    assert_close(post.mean, theta / sigma2 * x, atol=1e-6)
    assert_close(post.cov, torch.tensor([[(sigma2 - theta**2) / sigma2]]), atol=1e-6)
    assert_close(mutual_information(p), 0.5 * math.log(sigma2 / (sigma2 - theta**2)), atol=1e-6)
    assert abs(float(optimal_pmo(p))) < 1e-12


def test_mutual_information_equals_prior_to_posterior_entropy_drop():
    """I(X; Z) = H[z] − H[z | x] = −½ log det Σ_post (unit prior), vs Eq. 22 of 000."""
    p = _random_model(seed=4)
    post = posterior(p, torch.zeros(1, 3, dtype=torch.float64))
    assert_close(mutual_information(p), -0.5 * torch.logdet(post.cov), atol=1e-10)


def test_case2_every_b_gives_the_same_marginal_but_different_information():
    """000 §1 / App. C.2: MLEO is 0 for every valid B, while I(X; Z) (Eq. 22) changes with B."""
    ds = get_dataset("case2")
    truth = ds.marginal()
    infos = []
    for b_diag in [(0.001, 0.009), (0.006, 0.006), (0.009, 0.0005)]:
        p = linear_gaussian_params(get_dataset("case2", b_diag=b_diag))
        assert float(mleo(p, truth.loc, truth.covariance_matrix)) < 1e-10
        infos.append(float(mutual_information(p)))
        expected = 0.5 * (torch.logdet(truth.covariance_matrix) - torch.log(0.01 - torch.tensor(b_diag, dtype=torch.float64)).sum())
        assert_close(infos[-1], expected, atol=1e-8, msg="Eq. 22")
    assert max(infos) - min(infos) > 0.2


def test_mean_field_optimum_minimises_kl():
    """App. C.3: variances 1/(Σ⁻¹)_ii beat every other diagonal (checked by a numerical optimiser)."""
    p = _random_model(seed=1)
    x = torch.randn(1, 3, dtype=torch.float64)
    post = posterior(p, x)
    v_star = mean_field_optimum(post.cov)

    def kl(log_v):
        return float(mean_field_kl(p, x, post.mean, torch.tensor(log_v).exp()))

    found = minimize(kl, x0=[0.0, 0.0], method="Nelder-Mead", options={"xatol": 1e-10, "fatol": 1e-14}).x
    assert_close(torch.tensor(found).exp(), v_star, rtol=1e-4)
    assert_close(kl(v_star.log().tolist()), optimal_pmo(p), atol=1e-12, msg="PMO* = KL at the optimum")
    assert kl((v_star * 1.1).log().tolist()) > float(optimal_pmo(p))


def test_linear_jte_pmo_at_ground_truth_is_the_papers_value():
    """000 §1 and 004 §5.2: at θ_GT of LinearJTE, −ELBO + const = MLEO + PMO = 0 + 0.532."""
    p = linear_gaussian_params(get_dataset("linear_jte"))
    assert_close(optimal_pmo(p), 0.532, atol=5e-4)


def test_gaussian_kl_against_monte_carlo():
    g = torch.Generator().manual_seed(2)
    a = torch.randn(3, 3, generator=g, dtype=torch.float64)
    cov_q, cov_p = a @ a.T + torch.eye(3), torch.eye(3, dtype=torch.float64) * 2
    mq, mp = torch.tensor([0.1, -0.2, 0.3], dtype=torch.float64), torch.zeros(3, dtype=torch.float64)
    q = torch.distributions.MultivariateNormal(mq, cov_q)
    pd = torch.distributions.MultivariateNormal(mp, cov_p)
    z = q.sample((200000,))
    diff = q.log_prob(z) - pd.log_prob(z)
    assert_within_se(float(diff.mean()), float(gaussian_kl(mq, cov_q, mp, cov_p)), float(diff.std() / math.sqrt(len(diff))))
    assert_close(gaussian_kl(mq, cov_q, mq, cov_q), 0.0, atol=1e-12)


def test_optimal_elbo_expectation_matches_per_point_average():
    """E_p_data[log p_θ(x)] − PMO* from Gaussian moments vs the average over samples of p_data."""
    p = _random_model(seed=5)
    data = torch.distributions.MultivariateNormal(torch.ones(3, dtype=torch.float64), torch.eye(3, dtype=torch.float64))
    x = data.sample((100000,))
    per_point = optimal_mean_field_elbo(p, x)
    expected = optimal_mean_field_elbo(p, data_mean=data.loc, data_cov=data.covariance_matrix)
    assert_within_se(float(per_point.mean()), float(expected), float(per_point.std() / math.sqrt(len(x))))
    assert_close(per_point, marginal(p).log_prob(x) - optimal_pmo(p), atol=1e-12)


def test_params_from_a_model_and_rejection_of_nonlinear_f():
    from torch import nn

    dec = nn.Linear(2, 3).double()
    model = VAEModel(dec, 2, 3, 0.1)
    p = linear_gaussian_params(model)
    assert_close(p.W, dec.weight.detach(), atol=1e-12)
    assert_close(p.b, dec.bias.detach(), atol=1e-12)
    assert_close(p.psi, torch.full((3,), 0.1), rtol=1e-6)
    with pytest.raises(ValueError, match="not linear"):
        linear_gaussian_params(get_dataset("figure8"))
    with pytest.raises(ValueError, match="prior"):
        linear_gaussian_params(get_dataset("variant1"))
