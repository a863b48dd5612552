"""The M2 objective (Eqs. 5, 11–15 of 004) against closed forms on a linear-Gaussian M2 model."""

from __future__ import annotations

import math

import pyro
import pyro.poutine as poutine
import pytest
import torch
from common import assert_close, assert_within_se
from m2_linear import (
    PROBS,
    continuous_guide,
    continuous_model,
    discrete_guide,
    discrete_model,
    log_p_x,
    log_p_x_continuous,
    log_p_xy,
    log_p_xy_continuous,
    sample_x,
)
from pyro.infer import TraceEnum_ELBO, config_enumerate

from guides.m2 import build_m2_guide
from pyro_vae.inference.m2 import (
    labelled_bound,
    m2_objective,
    m2_terms,
    pyro_elbo_loss,
    unlabelled_bound,
)
from pyro_vae.inference.objectives import log_weights
from pyro_vae.models_m2 import build_m2_model


def _closed_form_u(model, guide, x):
    """Σ_c q(c|x) [E_q log p(x|z,c) − KL(q(z|x,c) ‖ N(0,1)) + log p(c) − log q(c|x)] in closed
    form for the linear decoder f(z, y) = w_z z + W_y y + b."""
    w = model.decoder.weight.detach().double()
    b = model.decoder.bias.detach().double()
    w_z, w_y = w[:, :1], w[:, 1:]
    var = float(model.noise_variance().reshape(-1)[0])
    q_y = guide.label_distribution(x).probs.detach().double()
    total = torch.zeros(x.shape[0], dtype=torch.float64)
    for c in range(2):
        qz = guide.latent_distribution(x, torch.eye(2)[c].expand(x.shape[0], 2))
        mu, sd = qz.loc.detach().double(), qz.scale.detach().double()
        mean = mu @ w_z.T + w_y[:, c] + b
        sq = ((x.double() - mean) ** 2 + sd**2 * (w_z.T**2)).sum(-1)
        exp_ll = -0.5 * sq / var - math.log(2 * math.pi * var)
        kl = (0.5 * (mu**2 + sd**2 - 1) - sd.log()).sum(-1)
        total += q_y[:, c] * (exp_ll - kl + math.log(PROBS[c]) - q_y[:, c].log())
    return total


def test_enumerated_u_equals_hand_sum_over_classes():
    """U(x) = Σ_y q(y|x)(E log p(x|z,y) + log p(y) − KL − log q(y|x)) for a trained-looking guide."""
    torch.manual_seed(1)
    model = discrete_model()
    guide = build_m2_guide("enum", 2, 1, 2, hidden=(8,))
    x, _ = sample_x(3, seed=2)
    s = 4000
    u = unlabelled_bound(model, guide, x, num_particles=s).detach()[0]
    expected = _closed_form_u(model, guide, x)
    # SE of the Monte Carlo part: Σ_c q_c · mean_s log w_cs
    rows = torch.cat([x, x]), torch.eye(2).repeat_interleave(3, 0)
    log_w = log_weights(model, guide, rows[0], y=rows[1], num_particles=s).detach()[:, 0].reshape(s, 2, 3)
    q = guide.label_distribution(x).probs.detach().T  # (C, N)
    se = ((q**2 * log_w.var(0)).sum(0) / s).sqrt()
    for i in range(3):
        assert_within_se(float(u[i]), float(expected[i]), float(se[i]), msg=f"U(x_{i})")
    # Pyro's own enumeration gives the same sum
    elbo = TraceEnum_ELBO(max_plate_nesting=1, num_particles=s, vectorize_particles=True)
    pyro_u = -elbo.differentiable_loss(model, config_enumerate(guide, "parallel"), x).item()
    assert_within_se(pyro_u, float(expected.sum()), float(se.pow(2).sum().sqrt()), msg="TraceEnum_ELBO")


@pytest.mark.parametrize("kind", ["elbo", "iwae"])
def test_exact_guide_makes_bounds_exact(kind):
    """With q = p(y|x) p(z|x,y) every log weight is log p(x) (or log p(x, y)): U and L are exact."""
    model, guide = discrete_model(), discrete_guide()
    x, y = sample_x(40, seed=3)
    assert_close(unlabelled_bound(model, guide, x, kind=kind, num_particles=3)[0], log_p_x(x), rtol=1e-5, msg="U")
    label = y.argmax(-1)
    exact_l = torch.where(label == 0, log_p_xy(x, 0), log_p_xy(x, 1))
    assert_close(labelled_bound(model, guide, x, y, kind=kind, num_particles=3)[0], exact_l, rtol=1e-5, msg="L")


def test_continuous_label_bounds_are_exact_for_the_exact_guide():
    model, guide = continuous_model(), continuous_guide()
    x, _ = sample_x(40, seed=4)
    y = torch.randn(40, 1)
    assert_close(unlabelled_bound(model, guide, x, num_particles=4)[0], log_p_x_continuous(x), rtol=1e-5, msg="U")
    assert_close(labelled_bound(model, guide, x, y)[0], log_p_xy_continuous(x, y), rtol=1e-5, msg="L")
    # the classifier term is the Gaussian log q(y|x)
    q = guide.label_distribution(x)
    assert_close(guide.label_log_prob(x, y), q.log_prob(y), rtol=1e-6)


@pytest.mark.parametrize("alpha, gamma", [(0.0, 1.0), (0.1, 0.5), (1.0, 2.0), (0.1, 5.0)])
@pytest.mark.parametrize("kind", ["enum", "relaxed"])
def test_labelled_and_unlabelled_terms_are_weighted_as_specified(alpha, gamma, kind):
    """J = Σ_u log p(x) + γ Σ_l log p(x, y) + α Σ_l log q(y|x) at the exact guide — computed by
    the project's per-point objective and by Pyro's estimators with poutine.scale."""
    model = discrete_model()
    guide = discrete_guide("enum") if kind == "enum" else discrete_guide("relaxed", straight_through=True)
    x, y = sample_x(30, seed=5)
    x_u, x_l, y_l = x[:20], x[20:], y[20:]
    label = y_l.argmax(-1)
    log_pxy = torch.where(label == 0, log_p_xy(x_l, 0), log_p_xy(x_l, 1))
    log_q = log_pxy - log_p_x(x_l)  # q(y|x) is the exact p(y|x)
    expected = log_p_x(x_u).sum() + gamma * log_pxy.sum() + alpha * log_q.sum()
    ours = m2_objective(model, guide, x_u, x_l, y_l, alpha=alpha, gamma=gamma)
    assert ours.shape == (1,)
    assert_close(ours[0], expected, rtol=1e-5, msg="m2_objective")
    theirs = -pyro_elbo_loss(model, guide, x_u, x_l, y_l, alpha=alpha, gamma=gamma, max_plate_nesting=1)
    assert_close(theirs, expected, rtol=1e-5, msg="Trace(Enum)_ELBO + poutine.scale")


def test_iwae_weight_is_outside_the_logsumexp():
    """γ·L_IW(x, y) is what J uses; a poutine.scale inside the trace (RenyiELBO's way) is not it."""
    torch.manual_seed(0)
    model = discrete_model()
    guide = discrete_guide(sd_factor=2.0, shift=0.5)  # a poor q(z|x,y): weights vary
    x, y = sample_x(10, seed=6)
    gamma, s = 3.0, 16
    pyro.set_rng_seed(7)
    log_w = log_weights(model, guide, x, y=y, num_particles=s).detach()[:, 0]
    pyro.set_rng_seed(7)
    terms = m2_terms(model, guide, x[:0], x, y, kind="iwae", num_particles=s)
    outside = torch.logsumexp(log_w, 0) - math.log(s)
    assert_close(terms.labelled[0], outside, rtol=1e-5, msg="L_IW")
    assert_close(terms.objective(0.0, gamma), gamma * outside.sum(), rtol=1e-5)
    pyro.set_rng_seed(7)
    inside = log_weights(poutine.scale(model, scale=gamma), poutine.scale(guide, scale=gamma), x, y=y,
                         num_particles=s).detach()[:, 0]
    inside = torch.logsumexp(inside, 0) - math.log(s)
    assert (inside - gamma * outside).abs().max() > 1e-2


def test_iwae_is_tighter_than_the_elbo_for_a_poor_guide():
    model = discrete_model()
    guide = discrete_guide(sd_factor=1.5, shift=0.3)
    x, _ = sample_x(200, seed=8)
    truth = log_p_x(x)
    elbo = unlabelled_bound(model, guide, x).detach()[0].double()
    iwae = unlabelled_bound(model, guide, x, kind="iwae", num_particles=64).detach()[0].double()
    gap_elbo, gap_iwae = truth - elbo, truth - iwae
    se = float(gap_iwae.std() / math.sqrt(200))
    assert float(gap_elbo.mean()) > 0.1
    assert -3 * se < float(gap_iwae.mean()) < 0.25 * float(gap_elbo.mean())


def test_relaxed_objective_approaches_the_enumerated_one_at_low_temperature():
    """At the exact guide the enumerated U is log p(x); the relaxed U differs by O(T) (it is not
    a bound: soft labels mix the class means) and tends to it as T → 0. Straight-through draws
    score exact one-hots, so they match at any temperature."""
    model = discrete_model()
    x, _ = sample_x(50, seed=9)
    enumerated = unlabelled_bound(model, discrete_guide("enum"), x).detach()[0]
    gaps = []
    for t in (1.0, 0.1, 0.01):
        u = unlabelled_bound(model, discrete_guide("relaxed", temperature=t), x, num_particles=500).detach()[0]
        gaps.append(float((u - enumerated).abs().mean()))
    assert gaps[0] > gaps[1] > gaps[2] and gaps[2] < 0.01 and gaps[0] > 0.1, gaps
    st = discrete_guide("relaxed", temperature=2.2, straight_through=True)
    assert_close(unlabelled_bound(model, st, x, num_particles=20).detach()[0], enumerated, rtol=1e-5)


@pytest.mark.parametrize("kind", ["enum", "relaxed"])
def test_restarts_are_independent(kind):
    """A batched model gives one J per restart, and restart r's J moves only restart r's weights."""
    r = 3
    model = build_m2_model(1, 2, 2, "discrete", 0.01, hidden=(8,), num_restarts=r)
    guide = build_m2_guide(kind, 2, 1, 2, hidden=(8,), num_restarts=r)
    x, y = sample_x(12, seed=10)
    for objective in ("elbo", "iwae"):
        j = m2_objective(model, guide, x[:8], x[8:], y[8:], alpha=0.1, gamma=2.0, kind=objective, num_particles=4)
        assert j.shape == (r,) and torch.isfinite(j).all() and len(set(j.tolist())) == r
        model.zero_grad(), guide.zero_grad()
        j[1].backward()
        for name, p in [*model.named_parameters(), *guide.named_parameters()]:
            assert p.grad[0].abs().sum() == 0 and p.grad[2].abs().sum() == 0, name
            assert p.grad[1].abs().sum() > 0, name


def test_empty_parts_and_bad_arguments():
    model, guide = discrete_model(), discrete_guide()
    x, y = sample_x(5, seed=11)
    only_u = m2_terms(model, guide, x, x[:0], y[:0])
    assert only_u.unlabelled.shape == (1, 5) and only_u.labelled.shape == (1, 0) and only_u.classifier.shape == (1, 0)
    only_l = m2_terms(model, guide, x[:0], x, y)
    assert only_l.unlabelled.shape == (1, 0) and only_l.labelled.shape == (1, 5)
    with pytest.raises(ValueError, match="kind='vi'"):
        unlabelled_bound(model, guide, x, kind="vi")
    with pytest.raises(ValueError, match="num_particles=0"):
        labelled_bound(model, guide, x, y, num_particles=0)
    with pytest.raises(ValueError, match="gamma"):
        pyro_elbo_loss(model, guide, x, x, y, gamma=0.0)
