import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import RenyiELBO, Trace_ELBO

from common import assert_close, assert_within_se
from guides.mean_field import MeanFieldGuide
from pyro_vae.inference.objectives import VariationalObjective, bound, log_weights
from pyro_vae.models import build_vae_model


def _model_guide(num_restarts=None, seed=0):
    torch.manual_seed(seed)
    model = build_vae_model(1, 2, 0.05, hidden=(16,), num_restarts=num_restarts)
    guide = MeanFieldGuide(2, 1, hidden=(16,), num_restarts=num_restarts)
    return model, guide


def _data(n=64, seed=1):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, 1, generator=g)
    return torch.cat([torch.cos(2 * z), torch.sin(3 * z)], -1) + 0.2 * torch.randn(n, 2, generator=g)


def test_elbo_equals_pyro_trace_elbo():
    model, guide = _model_guide()
    x = _data()
    pyro.set_rng_seed(3)
    ours = -bound(model, guide, x).sum()
    pyro.set_rng_seed(3)
    theirs = Trace_ELBO().differentiable_loss(model, guide, x)
    assert_close(ours, theirs, rtol=1e-5, msg="ELBO vs Trace_ELBO with the same draws")


def test_iwae_equals_renyi_alpha_zero_on_full_batch():
    model, guide = _model_guide()
    x = _data()
    pyro.set_rng_seed(4)
    ours = VariationalObjective("iwae", num_particles=20).loss(model, guide, x)
    pyro.set_rng_seed(4)
    theirs = RenyiELBO(alpha=0, num_particles=20, vectorize_particles=True, max_plate_nesting=1).loss(model, guide, x)
    assert_close(ours, theirs, rtol=1e-5, msg="IWAE vs RenyiELBO(alpha=0)")


def test_iwae_gradients_equal_renyi():
    model, guide = _model_guide()
    x = _data()
    params = list(model.parameters()) + list(guide.parameters())
    pyro.set_rng_seed(5)
    ours = torch.autograd.grad(VariationalObjective("iwae", 5).differentiable_loss(model, guide, x), params)
    pyro.set_rng_seed(5)
    renyi = RenyiELBO(alpha=0, num_particles=5, vectorize_particles=True, max_plate_nesting=1)
    for p in params:
        p.grad = None
    renyi.loss_and_grads(model, guide, x)
    theirs = [p.grad for p in params]
    for a, b in zip(ours, theirs):
        assert_close(a, b, rtol=1e-4, atol=1e-5, msg="IWAE gradient")


def test_iwae_bound_is_above_elbo():
    model, guide = _model_guide()
    x = _data(256)
    pyro.set_rng_seed(0)
    gap = []
    for _ in range(20):
        iwae = bound(model, guide, x, kind="iwae", num_particles=20)
        elbo = bound(model, guide, x, kind="elbo", num_particles=20)
        gap.append((iwae - elbo).mean().detach())
    gap = torch.stack(gap)
    se = float(gap.std() / math.sqrt(len(gap)))
    # IWAE_20 >= ELBO in expectation; the gap here is many standard errors above zero.
    assert float(gap.mean()) > 5 * se > 0


def test_beta_one_is_the_elbo_and_beta_scales_the_latent_terms():
    model, guide = _model_guide()
    x = _data()
    pyro.set_rng_seed(6)
    plain = bound(model, guide, x)
    pyro.set_rng_seed(6)
    beta1 = bound(model, guide, x, beta=1.0)
    assert_close(beta1, plain, rtol=0, atol=0, msg="beta=1")
    # by hand: E_q[log p(x|z)] + beta * (log p(z) - log q(z|x)) with the same draw
    pyro.set_rng_seed(7)
    beta3 = bound(model, guide, x, beta=3.0)
    pyro.set_rng_seed(7)
    q = guide.distribution(x)
    z = q.rsample()
    log_lik = model.log_likelihood(x, z)
    kl_term = dist.Normal(0.0, 1.0).log_prob(z).sum(-1) - q.log_prob(z).sum(-1)
    assert_close(beta3.reshape(-1), log_lik + 3.0 * kl_term, rtol=1e-5, atol=1e-5, msg="beta=3 by hand")


def test_bound_is_per_restart_and_per_point():
    model, guide = _model_guide(num_restarts=3)
    x = _data(10)
    b = bound(model, guide, x, kind="iwae", num_particles=4)
    assert b.shape == (3, 10)


def test_site_outside_data_plate_is_rejected():
    x = _data(8)

    def model(x):
        w = pyro.sample("w", dist.Normal(0.0, 1.0))
        with pyro.plate("data", x.shape[0]):
            loc = w.reshape(w.shape + (1,)).expand(*w.shape[:-1], x.shape[0], 2)
            pyro.sample("x", dist.Normal(loc, 1.0).to_event(1), obs=x)

    def guide(x):
        pyro.sample("w", dist.Normal(pyro.param("m", torch.tensor(0.0)), 1.0))

    with pytest.raises(ValueError, match="outside the plate 'data'"):
        log_weights(model, guide, x, num_particles=2, max_plate_nesting=1)


def test_bad_arguments():
    model, guide = _model_guide()
    with pytest.raises(ValueError, match="kind='renyi'"):
        bound(model, guide, _data(4), kind="renyi")
    with pytest.raises(ValueError, match="num_particles=0"):
        bound(model, guide, _data(4), num_particles=0)
    with pytest.raises(ValueError, match="beta=-1"):
        bound(model, guide, _data(4), beta=-1)
