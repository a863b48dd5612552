"""Grid posteriors (K ≤ 2) against linear-Gaussian closed forms and the refined uniform quadrature."""

import math

import pytest
import torch
from torch import nn

from common import assert_close, assert_within_se
from pyro_vae.datasets import get_dataset
from pyro_vae.metrics.linear_gaussian import linear_gaussian_params, marginal, posterior
from pyro_vae.models import VAEModel
from pyro_vae.posterior.grid import grid_posterior, sample_grid_posterior
from pyro_vae.posterior.quadrature import log_marginal_quadrature
from pyro_vae.posterior.target import PosteriorTarget, posterior_target


@pytest.mark.parametrize("name", ["case1", "linear_jte", "gaussian"])
def test_dataset_posterior_matches_closed_form(name):
    """Mean, sd and log p(x) of the truth's posterior; 'gaussian' (σ² = 1e-6, sd ~1e-3) needs the zoom."""
    ds = get_dataset(name)
    x, _ = ds.sample(40, seed=1)
    post = grid_posterior(ds, x)
    exact = posterior(linear_gaussian_params(ds), x)
    assert bool(post.converged.all())
    sd = exact.cov.diagonal().sqrt()
    assert_close(post.mean, exact.mean, atol=1e-6 * float(sd.min()) + 1e-9, msg="mean")
    assert_close(post.sd, sd.expand_as(post.sd), rtol=1e-6, msg="sd")
    assert_close(post.log_marginal, ds.marginal().log_prob(x.double()), atol=1e-6, msg="log p(x)")
    assert_close(post.log_weights().logsumexp(-1), torch.zeros(40), atol=1e-10, msg="normalised")


def test_without_zoom_a_narrow_posterior_is_not_resolved():
    """The same 'gaussian' posterior on the coarse box alone does not converge: the zoom is what fits it."""
    ds = get_dataset("gaussian")
    x, _ = ds.sample(5, seed=1)
    post = grid_posterior(ds, x, max_zooms=0)
    assert not bool(post.converged.all())


def test_trained_model_posterior_matches_closed_form():
    """A model with a linear (module) decoder, float32, read through posterior_target(model)."""
    torch.manual_seed(0)
    dec = nn.Linear(2, 3)
    model = VAEModel(dec, 2, 3, 0.05)
    x = torch.randn(30, 3)
    post = grid_posterior(model, x)
    exact = posterior(linear_gaussian_params(model), x)
    assert bool(post.converged.all())
    assert_close(post.mean, exact.mean, atol=1e-5, msg="mean")
    assert_close(post.sd, exact.cov.diagonal().sqrt().expand_as(post.sd), rtol=1e-5, msg="sd")


@pytest.mark.parametrize("name,rows", [("absolute_value", 20), ("variant1", 20), ("figure8", 20)])
def test_log_marginal_agrees_with_refined_uniform_quadrature(name, rows):
    ds = get_dataset(name)
    x, _ = ds.sample(rows, seed=2)
    post = grid_posterior(ds, x)
    ref = log_marginal_quadrature(ds.f, ds.obs_noise_var(), x, ds.latent_dim, prior=ds.prior, rtol_nats=1e-5)
    assert bool(post.converged.all()) and ref.converged
    assert_close(post.log_marginal, ref.log_marginal, atol=2e-4, msg=name)


def test_bimodal_posterior_splits_its_mass_between_the_modes():
    """Absolute-Value: f(z) = f(−z), so p(z | x) is symmetric with one mode on each side."""
    ds = get_dataset("absolute_value")
    x = torch.tensor([[0.8, 0.8]])
    post = grid_posterior(ds, x)
    z = post.points()[0, :, 0]
    w = post.log_weights()[0].exp()
    assert_close(w[z > 0].sum(), 0.5, atol=1e-6)
    mode = math.sqrt(2) * float(torch.special.erfinv(torch.tensor(0.8, dtype=torch.float64)))  # |2Φ(z) − 1| = 0.8
    assert abs(float(post.mean[0, 0])) < 1e-6
    assert_close(post.sd[0, 0], mode, rtol=0.05, msg="sd ≈ distance of the modes from 0")


def test_uniform_prior_box_stays_in_the_support():
    ds = get_dataset("variant1")
    x = torch.tensor([[0.04], [0.2]])
    post = grid_posterior(ds, x)
    assert float(post.axes.min()) >= 0.0 and float(post.axes.max()) <= 1.0
    assert_close(post.mean, torch.full((2, 1), 0.5), atol=1e-6, msg="f(z) = (z − 0.5)² is symmetric about 0.5")


def test_samples_from_the_grid_have_its_moments():
    ds = get_dataset("figure8")
    x = torch.tensor([[0.1, 0.1]])
    post = grid_posterior(ds, x)
    draws = sample_grid_posterior(post, 0, 20000, seed=3)
    sd = float(post.sd[0, 0])
    assert_within_se(float(draws.mean()), float(post.mean[0, 0]), sd / math.sqrt(20000), msg="mean")
    assert_close(draws.std(), sd, rtol=0.03, msg="sd")


def test_bad_inputs_raise_before_work():
    ds = get_dataset("figure8")
    with pytest.raises(ValueError, match="x of shape"):
        grid_posterior(ds, torch.zeros(3, 5))
    with pytest.raises(ValueError, match="1-D or 2-D"):
        grid_posterior(PosteriorTarget(lambda z: z, torch.ones(3, dtype=torch.float64), 3), torch.zeros(2, 3))
    with pytest.raises(ValueError, match="odd"):
        grid_posterior(ds, torch.zeros(2, 2), num_points=64)
    with pytest.raises(ValueError, match="restart"):
        posterior_target(VAEModel(nn.Linear(1, 2), 1, 2, 0.1, num_restarts=2))


def test_posterior_far_in_the_prior_tail_is_found():
    """A poor model puts some posteriors beyond |z| = 8 (the first coarse bound): the search widens."""
    W = torch.tensor([[0.0, 0.38], [-0.58, -0.52]])
    dec = nn.Linear(2, 2)
    with torch.no_grad():
        dec.weight.copy_(W)
        dec.bias.zero_()
    model = VAEModel(dec, 2, 2, 0.02)
    x = torch.tensor([[-2.47, -5.13], [0.3, 0.1]])
    exact = posterior(linear_gaussian_params(model), x)
    assert float(exact.mean.abs().max()) > 10
    post = grid_posterior(model, x)
    assert bool(post.converged.all())
    assert_close(post.mean, exact.mean, atol=1e-5)
    assert_close(post.log_marginal, marginal(linear_gaussian_params(model)).log_prob(x.double()), atol=1e-5)
    narrow = grid_posterior(model, x, max_bound=8.0)
    assert float((narrow.log_marginal - post.log_marginal).abs().max()) > 1.0


@pytest.mark.parametrize("name", ["figure8", "linear_jte"])
def test_refining_only_unconverged_points_keeps_log_marginals(name):
    """Refining only the x's that have not converged gives every x's log p(x) within the
    refinement tolerance (1e-4 nats) of refining all of them together, and the same means."""
    dataset = get_dataset(name)
    x, _ = dataset.sample(300, seed=4)
    each = grid_posterior(dataset, x, keep_density=False)
    together = grid_posterior(dataset, x, keep_density=True)
    assert bool(each.converged.all()) and bool(together.converged.all())
    assert_close(each.log_marginal, together.log_marginal, atol=1e-4, rtol=0, msg="log p(x)")
    assert_close(each.mean, together.mean, atol=1e-3, rtol=0, msg="posterior means")
