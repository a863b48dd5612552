"""−ELBO = entropy + MLEO + PMO (000 Eq. 2, 004 Eq. 3), estimated, against linear-Gaussian closed forms."""

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch import nn

from common import assert_close, assert_within_se
from pyro_vae.datasets import get_dataset
from pyro_vae.metrics.decomposition import decompose_elbo
from pyro_vae.metrics.linear_gaussian import (
    linear_gaussian_params,
    marginal,
    mean_field_optimum,
    mleo,
    optimal_pmo,
    posterior,
)
from pyro_vae.models import VAEModel


class GaussianGuide:
    """``q(z | x) = N(x @ M + c, diag(var))``: a fixed amortised diagonal-Gaussian guide."""

    def __init__(self, M, c, var):
        self.M, self.c, self.var = (torch.as_tensor(t, dtype=torch.float32) for t in (M, c, var))

    def distribution(self, x):
        loc = x @ self.M + self.c
        return dist.Normal(loc, self.var.sqrt().expand_as(loc))

    def __call__(self, x):
        with pyro.plate("data", x.shape[0], dim=-1):
            return pyro.sample("z", self.distribution(x).to_event(1))


def optimal_guide(params, full_cov=False):
    """The best mean-field guide of a linear-Gaussian model (mean map Σ Wᵀ Ψ⁻¹, variances 1/(Σ⁻¹)_ii)."""
    post = posterior(params, torch.zeros(1, params.W.shape[0], dtype=torch.float64))
    M = (params.W / params.psi[:, None]) @ post.cov
    c = -(params.b @ M)
    var = post.cov.diagonal() if full_cov else mean_field_optimum(post.cov)
    return GaussianGuide(M, c, var)


def test_identity_holds_for_a_mismatched_model():
    ds = get_dataset("linear_jte")
    x, _ = ds.sample(300, seed=1)
    torch.manual_seed(0)
    model = VAEModel(nn.Linear(2, 2), 2, 2, 0.02)
    guide = optimal_guide(linear_gaussian_params(model))
    dec = decompose_elbo(model, guide, x, ds, num_particles=20, seed=0)
    assert_close(-dec.elbo, dec.data_entropy + dec.mleo + dec.pmo, atol=1e-10, msg="identity")
    pp = dec.per_point
    assert_close(dec.mleo, (pp["log_p_data"] - pp["log_p_model"]).mean(), atol=1e-12)
    assert dec.model_log_lik_method == "quadrature" and dec.num_points == 300
    assert dec.mleo > 1.0 and dec.pmo > 0  # a random linear decoder explains the data poorly
    assert 0 <= dec.model_log_lik_change <= 1e-4


def test_quadrature_stands_where_its_last_change_is_within_the_accepted_bound():
    """A tolerance no grid reaches (1e-13 nats): the quadrature stands when every point's last
    refinement moved it by at most ``quadrature_accept``, and matches the closed-form marginal
    to that bound; otherwise importance sampling gives log p_θ(x)."""
    ds = get_dataset("linear_jte")
    x, _ = ds.sample(50, seed=1)
    torch.manual_seed(0)
    model = VAEModel(nn.Linear(2, 2), 2, 2, 0.02)
    guide = optimal_guide(linear_gaussian_params(model))
    kept = decompose_elbo(model, guide, x, ds, num_particles=5, num_samples=200, seed=0, quadrature_tol=1e-13,
                          quadrature_accept=1e-2)
    assert kept.model_log_lik_method == "quadrature" and 1e-13 < kept.model_log_lik_change <= 1e-2
    truth = marginal(linear_gaussian_params(model)).log_prob(x.double())
    assert_close(kept.per_point["log_p_model"], truth, atol=max(kept.model_log_lik_change, 1e-6), msg="vs closed form")
    refused = decompose_elbo(model, guide, x, ds, num_particles=5, num_samples=200, seed=0, quadrature_tol=1e-13,
                             quadrature_accept=0.0)
    assert refused.model_log_lik_method == "importance" and refused.model_log_lik_change == 0.0


def test_linear_jte_ground_truth_with_optimal_guide_gives_the_closed_forms():
    """At θ_GT: MLEO = 0 and PMO = PMO* = 0.532 (the optimal mean-field gap, 000 App. C.3)."""
    ds = get_dataset("linear_jte")
    x, _ = ds.sample(300, seed=2)
    params = linear_gaussian_params(ds)
    dec = decompose_elbo(ds, optimal_guide(params), x, ds, num_particles=50, seed=0)
    assert dec.model_log_lik_method == "closed_form"
    assert dec.mleo == 0.0
    # the ELBO's only randomness is the guide's draws: compare with its Monte Carlo SE
    assert_within_se(dec.pmo, float(optimal_pmo(params)), dec.elbo_mc_se, k=4.0, msg="PMO")


def test_exact_posterior_guide_has_zero_pmo():
    """Case 1 (K = 1): q = p(z|x) makes every importance weight equal p(x): ELBO = log p(x) exactly."""
    ds = get_dataset("case1")
    x, _ = ds.sample(100, seed=0)
    dec = decompose_elbo(ds, optimal_guide(linear_gaussian_params(ds), full_cov=True), x, ds, num_particles=5)
    assert abs(dec.pmo) < 1e-5 and dec.elbo_mc_se < 1e-5


def test_mleo_estimate_matches_gaussian_kl():
    """A linear model with the wrong covariance: mean(log p_data − log p_θ) estimates KL(p_data ‖ p_θ)."""
    ds = get_dataset("linear_jte")
    x, _ = ds.sample(800, seed=3)
    torch.manual_seed(1)
    dec_net = nn.Linear(2, 2)
    with torch.no_grad():
        dec_net.weight.copy_(torch.tensor([[0.8, 0.3], [0.0, 1.6]]))
        dec_net.bias.zero_()
    model = VAEModel(dec_net, 2, 2, 0.01)
    params = linear_gaussian_params(model)
    truth = ds.marginal()
    dec = decompose_elbo(model, optimal_guide(params), x, ds, num_particles=10)
    assert_within_se(dec.mleo, float(mleo(params, truth.loc, truth.covariance_matrix)), dec.mleo_se, k=4.0, msg="MLEO")
    assert_within_se(dec.pmo, float(optimal_pmo(params)), dec.elbo_mc_se, k=4.0, msg="PMO")


def test_importance_sampling_path_for_three_latents():
    """K = 3 (no quadrature): log p_θ by importance sampling, against the closed-form marginal."""
    ds = get_dataset("gaussian")  # D = 4
    x, _ = ds.sample(100, seed=4)
    torch.manual_seed(2)
    model = VAEModel(nn.Linear(3, 4), 3, 4, 0.05)
    params = linear_gaussian_params(model)
    dec = decompose_elbo(model, optimal_guide(params), x, ds, num_particles=10, num_samples=500)
    assert dec.model_log_lik_method == "importance" and dec.model_log_lik_mc_se > 0
    exact = marginal(params).log_prob(x.double()).mean()
    assert_within_se(dec.model_log_lik, float(exact), dec.model_log_lik_mc_se, k=4.0, msg="log p_θ")
    assert_close(-dec.elbo, dec.data_entropy + dec.mleo + dec.pmo, atol=1e-10)


def test_bad_inputs_raise():
    ds = get_dataset("linear_jte")
    guide = optimal_guide(linear_gaussian_params(ds))
    with pytest.raises(ValueError, match="columns"):
        decompose_elbo(ds, guide, torch.zeros(5, 3), ds)
    with pytest.raises(ValueError, match="num_particles"):
        decompose_elbo(ds, guide, torch.zeros(5, 2), ds, num_particles=0)
