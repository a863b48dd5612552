"""Importance-sampled and quadrature log-likelihoods against linear-Gaussian closed forms."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch import nn

from common import assert_close, assert_within_se
from pyro_vae.metrics.loglik import exact_log_likelihood, grid_log_likelihood, importance_log_likelihood
from pyro_vae.models import VAEModel
from pyro_vae.posterior.quadrature import latent_grid, log_marginal_quadrature, log_sum_over_grid


class LinearDecoder(nn.Module):
    def __init__(self, w, b):
        super().__init__()
        self.w, self.b = nn.Parameter(w), nn.Parameter(b)

    def forward(self, z):
        return z @ self.w.T + self.b


class ShiftedPosterior:
    """The exact Gaussian posterior of a linear-Gaussian model, deliberately shifted and widened
    (a proposal that is good but not perfect)."""

    def __init__(self, w, b, noise_var, shift=0.3, widen=1.3):
        k = w.shape[1]
        self.prec = torch.eye(k) + w.T @ w / noise_var
        self.cov = torch.linalg.inv(self.prec)
        self.w, self.b, self.noise_var, self.shift, self.widen = w, b, noise_var, shift, widen

    def distribution(self, x):
        mean = (x - self.b) @ self.w @ self.cov / self.noise_var
        sd = self.cov.diagonal().sqrt()
        return dist.Normal(mean + self.shift * sd, self.widen * sd.expand_as(mean))

    def __call__(self, x):  # a Pyro guide: z in the plate "data"
        with pyro.plate("data", x.shape[0]):
            return pyro.sample("z", self.distribution(x).to_event(1))


def _linear_case(k, d, noise_var, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(d, k, generator=g) * 0.8
    b = torch.randn(d, generator=g) * 0.1
    marginal = dist.MultivariateNormal(b.double(), (w @ w.T + noise_var * torch.eye(d)).double())
    x = marginal.sample((200,)).float()
    model = VAEModel(LinearDecoder(w, b), k, d, noise_var)
    return model, w, b, marginal, x


@pytest.mark.parametrize("k,d", [(1, 2), (2, 3)])
def test_importance_sampling_matches_closed_form_marginal(k, d):
    noise_var = 0.05
    model, w, b, marginal, x = _linear_case(k, d, noise_var)
    guide = ShiftedPosterior(w, b, noise_var)
    est = importance_log_likelihood(model, guide, x, num_samples=2000, chunk_size=500, seed=1)
    truth = marginal.log_prob(x.double())
    # Monte Carlo error of the mean, from the weights (delta method); 4 SE
    assert_within_se(est.mean, float(truth.mean()), est.mc_se, k=4.0, msg="IS vs closed form")
    assert 0 < est.mc_se < 0.01
    assert 100 < est.ess <= 2000
    assert_close(est.se, truth.std() / math.sqrt(len(truth)), rtol=0.05, msg="SE over data points")


def test_importance_sampling_detects_a_wrong_model():
    noise_var = 0.05
    model, w, b, marginal, x = _linear_case(1, 2, noise_var)
    guide = ShiftedPosterior(w, b, noise_var)
    est = importance_log_likelihood(model, guide, x + 0.5, num_samples=1000, seed=1)
    truth = marginal.log_prob((x + 0.5).double())
    assert_within_se(est.mean, float(truth.mean()), est.mc_se, k=4.0)
    assert est.mean < float(marginal.log_prob(x.double()).mean()) - 1.0


@pytest.mark.parametrize("k,d", [(1, 2), (2, 2)])
def test_quadrature_matches_closed_form(k, d):
    noise_var = 0.02
    model, w, b, marginal, x = _linear_case(k, d, noise_var, seed=3)
    res = log_marginal_quadrature(model.decoder, noise_var, x, k)
    assert res.converged
    assert_close(res.log_marginal, marginal.log_prob(x.double()), atol=2e-3, msg="quadrature")


def test_quadrature_uniform_prior_integrates_to_one():
    # x | z ~ N(z, 0.01), z ~ U(0, 1): p(x) integrates to 1 over x.
    xs = torch.linspace(-1.0, 2.0, 3001)[:, None]
    res = log_marginal_quadrature(lambda z: z, 0.01, xs, 1, prior="uniform")
    assert res.converged
    total = float(res.log_marginal.exp().sum() * (xs[1, 0] - xs[0, 0]))
    assert abs(total - 1.0) < 1e-4


def _dense_quadrature(f, noise_var, x, k, points, prior="normal"):
    """The plain estimator: every x on one grid of ``points`` per axis, densities term by term."""
    grid, log_w = latent_grid(k, points, prior, dtype=torch.float64)
    loc = f(grid.float()).double()
    terms = dist.Normal(loc[None], math.sqrt(noise_var)).log_prob(x.double()[:, None]).sum(-1) + log_w
    return torch.logsumexp(terms, -1)


@pytest.mark.parametrize("k,prior", [(1, "normal"), (2, "normal"), (1, "uniform")])
def test_refined_quadrature_matches_the_dense_grid(k, prior):
    """Per-x refinement with nested grids and blocked matrix products against the dense estimator on
    the finest grid the refinement reached: within ``rtol_nats`` for every x (an x stops at the first
    refinement that moved it by less than that; the rectangle rule's later moves are far smaller)."""
    gen = torch.Generator().manual_seed(4)
    torch.manual_seed(4)
    net = nn.Sequential(nn.Linear(k, 30), nn.Tanh(), nn.Linear(30, 3)).requires_grad_(False)
    z = torch.rand(60, k, generator=gen) if prior == "uniform" else torch.randn(60, k, generator=gen)
    x = net(z) + 0.1 * torch.randn(60, 3, generator=gen)
    rtol = 1e-4
    res = log_marginal_quadrature(net, 0.01, x, k, prior=prior, rtol_nats=rtol,
                                  num_points=101 if k == 2 else None)
    assert res.converged
    dense = _dense_quadrature(net, 0.01, x, k, res.num_points, prior)
    assert_close(res.log_marginal, dense, atol=rtol, msg="refined vs dense")
    # the blocked sum alone equals the term-by-term one to rounding
    grid, log_w = latent_grid(k, 41, prior, dtype=torch.float64)
    loc = net(grid.float()).double()
    blocked = log_sum_over_grid(x.double(), loc, torch.tensor(0.01, dtype=torch.float64), log_w, chunk_elements=1000)
    terms = dist.Normal(loc[None], 0.1).log_prob(x.double()[:, None]).sum(-1) + log_w
    assert_close(blocked, torch.logsumexp(terms, -1), atol=1e-9, msg="blocked sum")


def test_exact_loglik_resolves_posteriors_narrower_than_the_shared_grid():
    """σ² = 1e-6 (000's Gaussian set): the shared grid cannot resolve posteriors ~1e-3 wide; the
    per-x grid then gives the closed-form marginal."""
    noise_var = 1e-6
    model, w, b, marginal, x = _linear_case(2, 4, noise_var, seed=5)
    assert not log_marginal_quadrature(model.decoder, noise_var, x[:50], 2).converged
    exact = exact_log_likelihood(model.decoder, torch.tensor(noise_var), x[:50], 2)
    assert exact is not None
    w64 = w.double()  # the covariance in float64: in float32, w wᵀ's rounding is as large as σ²
    truth = dist.MultivariateNormal(b.double(), w64 @ w64.T + noise_var * torch.eye(4, dtype=torch.float64))
    assert_close(exact, truth.log_prob(x[:50].double()), atol=2e-3, msg="per-x grid vs closed form")
    log_p, converged = grid_log_likelihood(model.decoder, torch.tensor(noise_var), x[:50], 2)
    assert converged.dtype == torch.bool and bool(converged.all()) and torch.equal(log_p, exact)


def test_exact_loglik_is_none_beyond_two_dimensions():
    assert exact_log_likelihood(lambda z: z, 0.1, torch.zeros(3, 3), 3) is None
    with pytest.raises(ValueError, match="latent_dim=3: grid quadrature needs K <= 2"):
        grid_log_likelihood(lambda z: z, 0.1, torch.zeros(3, 3), 3)


def test_importance_sampling_rejects_batched_models_and_bad_sizes():
    model, w, b, _, x = _linear_case(1, 2, 0.05)
    guide = ShiftedPosterior(w, b, 0.05)
    with pytest.raises(ValueError, match="num_samples=0"):
        importance_log_likelihood(model, guide, x, num_samples=0)
    model.num_restarts = 3
    with pytest.raises(ValueError, match="restart-batched"):
        importance_log_likelihood(model, guide, x)
