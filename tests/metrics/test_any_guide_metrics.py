"""Metrics of a non-Gaussian q (a Student-t): mutual information and KLs against quadrature references."""

import math

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from scipy import integrate, stats

from common import assert_within_se
from pyro_vae.metrics import mutual_info_encoder, mutual_info_gaussian_encoder
from pyro_vae.posterior.compare import grid_kl
from pyro_vae.posterior.grid import grid_posterior

DF = 3.0


def _student_t_encoder(n=40, seed=0):
    x = torch.randn(n, 1, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    loc, scale = 1.5 * x, torch.full_like(x, 0.5)
    return x, loc, scale, dist.StudentT(torch.tensor(DF, dtype=torch.float64), loc, scale).to_event(1)


def _mi_by_quadrature(loc: np.ndarray, scale: np.ndarray) -> float:
    """(1/N) Σ_n ∫ q_n(z) log(q_n(z) / q̄(z)) dz with q̄ the exact mixture; scipy quad per n."""

    def log_mix(z):
        return np.logaddexp.reduce(stats.t.logpdf(z, DF, loc, scale)) - math.log(len(loc))

    total = 0.0
    for m, s in zip(loc, scale):
        f = lambda z: math.exp(stats.t.logpdf(z, DF, m, s)) * (stats.t.logpdf(z, DF, m, s) - log_mix(z))  # noqa: E731
        total += integrate.quad(f, -np.inf, np.inf, limit=200, epsabs=1e-10)[0]
    return total / len(loc)


def test_student_t_mutual_information_matches_quadrature_within_its_se():
    x, loc, scale, q = _student_t_encoder()
    truth = _mi_by_quadrature(loc[:, 0].numpy(), scale[:, 0].numpy())
    est = mutual_info_encoder(q, num_samples=200, seed=1)
    assert est.method == "monte_carlo" and est.num_samples == 200
    assert_within_se(float(est.per_dim[0]), truth, float(est.mc_se[0]), k=4.0, msg="I(x; z), Student-t q")
    assert float(est.joint) == float(est.per_dim[0])  # K = 1
    # reading the Student-t's loc and scale as a Gaussian's (the old behaviour) is many SEs off
    misread = float(mutual_info_gaussian_encoder(loc, scale, num_samples=200, seed=1)[0])
    assert abs(misread - truth) > 10 * float(est.mc_se[0]), (misread, truth, float(est.mc_se[0]))


def test_a_diagonal_normal_uses_the_gaussian_formula_and_a_guide_its_traced_q():
    from examples.student_t_guide import StudentTGuide

    x, loc, scale, _ = _student_t_encoder()
    normal = dist.Normal(loc, scale).to_event(1)
    est = mutual_info_encoder(normal, seed=2)
    assert est.method == "gaussian"
    assert float(est.per_dim[0]) == float(mutual_info_gaussian_encoder(loc, scale, seed=2)[0])
    torch.manual_seed(0)
    guide = StudentTGuide(1, 1)
    xs = x.float()
    a = mutual_info_encoder(guide, xs, num_samples=5, seed=3)
    b = mutual_info_encoder(guide.distribution(xs), num_samples=5, seed=3)
    assert a.method == "monte_carlo" and float(a.per_dim[0]) == float(b.per_dim[0])


def linear_model(x):
    """A user's own model: latent "w" ~ N(1, 2²), observed "y" | w ~ N(A w, 0.3² I)."""
    a = torch.tensor([1.0, -0.5], dtype=x.dtype)
    with pyro.plate("points", x.shape[0]):
        w = pyro.sample("w", dist.Normal(torch.ones(1, dtype=x.dtype), 2.0).to_event(1))
        pyro.sample("y", dist.Normal(w * a, 0.3).to_event(1), obs=x)


def _linear_posterior(x: torch.Tensor) -> tuple[np.ndarray, float]:
    a = np.array([1.0, -0.5])
    prec = 1 / 4 + (a @ a) / 0.09
    mean = (1 / 4 + x.numpy() @ a / 0.09) / prec
    return mean, math.sqrt(1 / prec)


def test_student_t_kls_to_a_user_models_posterior_match_quadrature():
    x = torch.tensor([[0.4, -0.1], [1.5, -0.9], [-0.7, 0.2]], dtype=torch.float64)
    post = grid_posterior(linear_model, x)
    mean, sd = _linear_posterior(x)
    assert np.allclose(post.mean[:, 0].numpy(), mean, atol=1e-6) and np.allclose(post.sd[:, 0].numpy(), sd, rtol=1e-5)
    q_loc = torch.tensor(mean + 0.2 * sd)[:, None]
    q = dist.StudentT(torch.tensor(4.0, dtype=torch.float64), q_loc, torch.full_like(q_loc, 0.8 * sd)).to_event(1)
    kl = grid_kl(linear_model, q, post, x, num_samples=20000, seed=4)
    assert kl.method == "monte_carlo"
    for i in range(3):
        lq = lambda z: stats.t.logpdf(z, 4.0, float(q_loc[i, 0]), 0.8 * sd)  # noqa: E731
        lp = lambda z: stats.norm.logpdf(z, mean[i], sd)  # noqa: E731
        ref_qp = integrate.quad(lambda z: math.exp(lq(z)) * (lq(z) - lp(z)), -np.inf, np.inf, limit=200)[0]
        ref_pq = integrate.quad(lambda z: math.exp(lp(z)) * (lp(z) - lq(z)), -np.inf, np.inf, limit=200)[0]
        assert_within_se(float(kl.kl_qp[i]), ref_qp, float(kl.kl_qp_se[i]), k=4.0, msg=f"KL(q||p), x {i}")
        assert abs(float(kl.kl_pq[i]) - ref_pq) < 1e-4, (float(kl.kl_pq[i]), ref_pq)


def test_importance_sampling_uses_the_guide_as_it_is():
    """A Student-t proposal is not inflated, and the estimate says so; a Normal one is, by site name."""
    from examples.student_t_guide import StudentTGuide
    from guides.mean_field import MeanFieldGuide
    from pyro_vae.metrics import importance_log_likelihood
    from pyro_vae.models import build_vae_model

    torch.manual_seed(0)
    model = build_vae_model(1, 2, 0.05, hidden=(8,))
    x = torch.randn(20, 2)
    t = importance_log_likelihood(model, StudentTGuide(2, 1), x, num_samples=200)
    n = importance_log_likelihood(model, MeanFieldGuide(2, 1, hidden=(8,)), x, num_samples=200)
    assert t.proposal.startswith("guide as it is") and "['z'] with variance x2" in n.proposal
    assert math.isfinite(t.mean) and math.isfinite(n.mean)
