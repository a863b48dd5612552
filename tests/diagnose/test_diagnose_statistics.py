"""Each statistic of pyro_vae.diagnose against a case with a known answer."""

import math

import pytest
import torch

from common import assert_close, assert_within_se
from toy_models import A, SIGMA2, GaussianGuide, draw, linear_model, marginal_log_prob, posterior_moments

from pyro_vae.diagnose.marginal import log_marginal
from pyro_vae.diagnose.noise import noise_profile
from pyro_vae.diagnose.posterior import best_gaussian_elbo, posterior_gap, psis_khat
from pyro_vae.diagnose.probe import ModelProbe


def _gaussian_kl(scale: float, shift_sd: float = 0.0) -> float:
    """KL(N(m + δ, (c·s)²) ‖ N(m, s²)) with δ = shift_sd · s and c = scale."""
    return 0.5 * (scale**2 + shift_sd**2 - 1.0) - math.log(scale)


def test_probe_reads_decoder_noise_and_prior():
    x = draw(5, 0)
    probe = ModelProbe(linear_model(), GaussianGuide(), x)
    assert (probe.latent_dim, probe.obs_dim, probe.standard_prior) == (1, 2, True)
    assert_close(probe.noise_var, torch.full((2,), SIGMA2), rtol=1e-6)
    z = torch.tensor([[[0.5], [-1.0]]])
    assert_close(probe.f(z), torch.stack([0.5 * A, -1.0 * A])[None], rtol=1e-6)


def test_log_marginal_quadrature_and_defensive_is_match_closed_form():
    x = draw(50, 1)
    probe = ModelProbe(linear_model(), GaussianGuide(scale=1.5), x)
    exact = marginal_log_prob(x)
    quad = log_marginal(probe, x)
    assert quad.method == "quadrature"
    assert_close(quad.per_point, exact, atol=1e-4, rtol=0)
    torch.manual_seed(0)
    est = log_marginal(probe, x, method="importance", num_samples=2000)
    err = (est.per_point - exact)
    assert_within_se(float(err.mean()), 0.0, float(est.mc_se.pow(2).sum().sqrt() / x.shape[0]) + 1e-4, k=4.0, msg="defensive IS")


def test_gaussian_q_for_gaussian_posterior_gives_small_gap_and_khat():
    """q = N(m, (1.2 s)²): KL(q ‖ p) = ½(1.44 − 1) − log 1.2 = 0.0377 nats per point, k̂ < 0.5."""
    x = draw(200, 2)
    model, guide = linear_model(), GaussianGuide(scale=1.2)
    gap = posterior_gap(model, guide, x, num_particles=1000, seed=0)
    assert gap.log_lik_method == "quadrature"
    kl = _gaussian_kl(1.2)
    se = float(gap.gap.std() / math.sqrt(len(x))) + float((gap.elbo - gap.elbo.mean()).std()) / math.sqrt(1000 * len(x))
    assert_within_se(float(gap.gap.mean()), kl, max(se, 1e-3), k=4.0, msg="gap = KL(q‖p)")
    assert float(gap.gap.mean()) < 0.05  # "near zero"
    khat = psis_khat(model, guide, x[:20], num_particles=1000, seed=0)
    assert float(khat.max()) < 0.5, khat
    # the exact posterior is Gaussian: the best Gaussian per point reaches it
    best = best_gaussian_elbo(model, guide, x[:50], num_particles=2000, seed=0)
    assert float((gap.log_lik[:50] - best).abs().mean()) < 5e-3


def test_narrow_q_gives_khat_of_the_weights_tail():
    """q = N(m, (0.3 s)²): weights w ∝ exp(u²(1 − 0.09)/2) have Pareto tail index k = 1 − 0.3² = 0.91."""
    x = draw(20, 3)
    khat = psis_khat(linear_model(), GaussianGuide(scale=0.3), x, num_particles=2000, seed=1)
    assert float(khat.median()) > 0.7, khat
    assert abs(float(khat.mean()) - 0.91) < 0.15, khat


def test_bimodal_posterior_gives_a_gap_of_log_two_that_iwae_misses():
    """x on the |z| model's manifold: p(z|x) = ½N(m, s²) + ½N(−m, s²); q = N(m, s²) on one mode
    gives KL(q ‖ p) = log 2 while its own IWAE bound cannot see the other mode."""
    a, sigma2 = torch.tensor([1.0, 1.0]), 0.01
    model = linear_model(a, sigma2, absolute=True)
    x = torch.tensor([[1.0, 1.0], [0.8, 0.9], [1.5, 1.4], [1.2, 1.1]])
    guide = GaussianGuide(a, sigma2)
    gap = posterior_gap(model, guide, x, num_particles=500, seed=0)
    assert_close(gap.gap, torch.full((4,), math.log(2), dtype=torch.float64), atol=0.01, rtol=0)
    assert float(gap.iwae_gap.abs().max()) < 0.01  # q as its own proposal: blind to the missing mode
    best = best_gaussian_elbo(model, guide, x, num_particles=2000, seed=0)
    assert_close(gap.log_lik - best, torch.full((4,), math.log(2), dtype=torch.float64), atol=0.02, rtol=0)


def test_noise_profile_recovers_the_data_sigma2_and_eq9():
    """Data with σ² = 0.1; a model with σ² = 0.2 and its exact posterior: the held-out
    log-likelihood peaks at c ≈ 1/2 (σ² ≈ 0.1), Eq. 9 of the model's own posterior ≈ its σ²
    corrected by the misfit: σ²_Eq9 = E[(x − a z)²] under q, a closed form."""
    x = draw(2000, 4)
    model = linear_model(sigma2=0.2)
    guide = GaussianGuide(sigma2=0.2)
    prof = noise_profile(model, guide, x, num_samples=400, elbo_samples=200, seed=0)
    best = float(prof.multipliers[prof.best])
    assert 0.42 <= best <= 0.6, best
    m, s2 = posterior_moments(x, A, 0.2)
    eq9 = ((x - m[:, None] * A) ** 2).mean(0) + s2 * A**2
    assert_close(prof.elbo_optimal, eq9, rtol=0.03)
