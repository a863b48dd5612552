"""Guide-vs-truth divergences on the grid and sample distances."""

import math

import numpy as np
import pyro.distributions as dist
import pytest
import torch
from scipy.stats import energy_distance as scipy_energy

from common import assert_close, assert_within_se
from pyro_vae.datasets import get_dataset
from pyro_vae.metrics.linear_gaussian import gaussian_kl, linear_gaussian_params, mean_field_kl, mean_field_optimum, posterior
from pyro_vae.posterior.compare import energy_distance, grid_kl, guide_vs_samples, kl_monte_carlo, wasserstein_1d
from pyro_vae.posterior.grid import grid_posterior


def _linear_jte_case(n=30, shift=0.01):
    ds = get_dataset("linear_jte")
    x, _ = ds.sample(n, seed=3)
    p = linear_gaussian_params(ds)
    exact = posterior(p, x)
    v = mean_field_optimum(exact.cov)
    q = dist.Normal(exact.mean + shift, v.sqrt().expand_as(exact.mean))
    return ds, x, p, exact, v, q


def test_grid_kls_match_gaussian_closed_forms():
    ds, x, p, exact, v, q = _linear_jte_case()
    post = grid_posterior(ds, x)
    kl = grid_kl(ds, q, post, x)
    assert_close(kl.kl_qp, mean_field_kl(p, x, q.loc, q.scale**2), atol=1e-8, msg="KL(q || p)")
    expected_pq = torch.stack([gaussian_kl(exact.mean[i], exact.cov, q.loc[i].double(), torch.diag(v)) for i in range(len(x))])
    assert_close(kl.kl_pq, expected_pq, atol=1e-8, msg="KL(p || q)")
    assert float(kl.kl_pq.min()) > float(kl.kl_qp.max()) > 0.5  # the mean-field optimum is mode-seeking


def test_grid_kl_of_the_exact_posterior_is_zero_in_1d():
    ds = get_dataset("case1")
    x, _ = ds.sample(10, seed=0)
    exact = posterior(linear_gaussian_params(ds), x)
    q = dist.Normal(exact.mean, exact.cov.diagonal().sqrt().expand_as(exact.mean))
    kl = grid_kl(ds, q, grid_posterior(ds, x), x)
    assert float(kl.kl_qp.abs().max()) < 1e-8 and float(kl.kl_pq.abs().max()) < 1e-8


def test_monte_carlo_kl_agrees_with_the_grid_on_a_bimodal_posterior():
    """Absolute-Value's posterior has two mirror modes of equal mass: a Gaussian fitted to one mode
    has KL(q || p) a little above log 2 (a little, because the mode is not Gaussian)."""
    ds = get_dataset("absolute_value")
    x = torch.tensor([[0.8, 0.8], [0.5, 0.45]])
    post = grid_posterior(ds, x)
    z, w = post.points()[..., 0], post.log_weights().exp()
    w_pos = torch.where(z > 0, w, torch.zeros_like(w)) / 0.5
    mean_pos = (w_pos * z).sum(-1, keepdim=True)
    sd_pos = (w_pos * (z - mean_pos) ** 2).sum(-1, keepdim=True).sqrt()
    q = dist.Normal(mean_pos, sd_pos)
    kl = grid_kl(ds, q, post, x)
    mc, se = kl_monte_carlo(ds, q, x, post.log_marginal, num_samples=4000, seed=1)
    for i in range(2):
        assert_within_se(float(mc[i]), float(kl.kl_qp[i]), float(se[i]), k=4.0, msg=f"row {i}")
    assert math.log(2) < float(kl.kl_qp.min()) and float(kl.kl_qp.max()) < math.log(2) + 0.1
    assert float(kl.kl_pq.min()) > 1.0  # p's other mode lies in q's far tail


def test_kl_is_infinite_when_a_gaussian_guide_leaves_a_uniform_prior_support():
    ds = get_dataset("variant1")
    x = torch.tensor([[0.04]])
    post = grid_posterior(ds, x)
    kl = grid_kl(ds, dist.Normal(torch.tensor([[0.3]]), torch.tensor([[0.2]])), post, x)
    assert math.isinf(float(kl.kl_qp[0])) and math.isfinite(float(kl.kl_pq[0]))


def test_energy_distance_matches_scipy_in_1d_and_brute_force_in_2d():
    rng = np.random.default_rng(0)
    a, b, w = rng.normal(size=300), rng.normal(0.5, 1.2, size=200), rng.random(200)
    assert_close(energy_distance(a, b), scipy_energy(a, b), rtol=1e-10)
    assert_close(energy_distance(a, b, w), scipy_energy(a, b, v_weights=w), rtol=1e-10)
    a2, b2 = rng.normal(size=(60, 2)), rng.normal(size=(50, 2)) + [1.0, 0.0]

    def mean_dist(u, v):
        return np.mean([[np.linalg.norm(p - q) for q in v] for p in u])

    brute = math.sqrt(2 * mean_dist(a2, b2) - mean_dist(a2, a2) - mean_dist(b2, b2))
    assert_close(energy_distance(a2, b2), brute, rtol=1e-10)


def test_wasserstein_of_a_shift():
    rng = np.random.default_rng(1)
    a = rng.normal(size=5000)
    assert_close(wasserstein_1d(a, a + 0.3), 0.3, rtol=1e-10)


def test_guide_vs_samples_finds_a_wrong_mean_and_accepts_the_right_one():
    g = torch.Generator().manual_seed(0)
    samples = 0.7 + 0.2 * torch.randn(4000, 1, generator=g, dtype=torch.float64)
    right = guide_vs_samples(dist.Normal(torch.tensor([0.7]), torch.tensor([0.2])), samples, seed=1)
    assert_within_se(float(right.mean_error[0]), 0.0, float(right.mean_se[0]))
    assert_within_se(float(right.var_error[0]), 0.0, float(right.var_se[0]))
    wrong = guide_vs_samples(dist.Normal(torch.tensor([0.8]), torch.tensor([0.2])), samples, seed=1)
    assert abs(float(wrong.mean_error[0])) > 10 * float(wrong.mean_se[0])
    assert wrong.wasserstein > 3 * right.wasserstein and wrong.energy > 2 * right.energy


def test_grid_kl_rejects_mismatched_inputs():
    ds, x, p, exact, v, q = _linear_jte_case(n=5)
    post = grid_posterior(ds, x[:4])
    with pytest.raises(ValueError, match="same x"):
        grid_kl(ds, q, post, x)
    with pytest.raises(ValueError, match="keep_density"):
        grid_kl(ds, q, grid_posterior(ds, x, keep_density=False), x)
