"""Log weights and log joints from Pyro traces (pyro_vae.traces): every site, scale and mask, matching."""

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import pytest
import torch

from common import assert_close
from pyro_vae.inference.objectives import bound
from pyro_vae.traces import log_joint, log_weights


def _x(n=6, seed=0):
    return torch.randn(n, 2, generator=torch.Generator().manual_seed(seed))


def two_latent_model(x):
    """Latents "a" (K=1) and "b" (K=2), observed "obs": no site named z or x."""
    with pyro.plate("data", x.shape[0]):
        a = pyro.sample("a", dist.Normal(torch.zeros(1), 1.0).to_event(1))
        b = pyro.sample("b", dist.Normal(a.expand(*a.shape[:-1], 2), 0.5).to_event(1))
        pyro.sample("obs", dist.Normal(b, 0.3).to_event(1), obs=x)


def two_latent_guide(x):
    loc = pyro.param("loc", torch.tensor(0.2))
    with pyro.plate("data", x.shape[0]):
        a = pyro.sample("a", dist.Normal(loc + 0.1 * x[..., :1], 0.7).to_event(1))
        pyro.sample("b", dist.Normal(x + 0.1 * a, 0.4).to_event(1))


def _by_hand(x, beta=1.0, seed=3):
    pyro.set_rng_seed(seed)
    tr = poutine.trace(two_latent_guide).get_trace(x)
    a, b = tr.nodes["a"]["value"], tr.nodes["b"]["value"]
    log_q = tr.nodes["a"]["fn"].log_prob(a) + tr.nodes["b"]["fn"].log_prob(b)
    log_prior = dist.Normal(torch.zeros(1), 1.0).to_event(1).log_prob(a) + dist.Normal(a.expand(6, 2), 0.5).to_event(1).log_prob(b)
    log_lik = dist.Normal(b, 0.3).to_event(1).log_prob(x)
    return log_lik + beta * (log_prior - log_q)


def test_every_latent_site_counts_and_beta_scales_all_of_them():
    x = _x()
    for beta in (1.0, 2.5):
        pyro.set_rng_seed(3)
        ours = bound(two_latent_model, two_latent_guide, x, beta=beta, max_plate_nesting=1)
        assert_close(ours.reshape(-1), _by_hand(x, beta), rtol=1e-5, atol=1e-5, msg=f"beta={beta}")


def test_scale_and_mask_are_honoured():
    x = _x()
    mask = torch.tensor([True, False, True, True, False, True])

    def model(x):
        with pyro.plate("data", x.shape[0]), poutine.scale(scale=0.5):
            a = pyro.sample("a", dist.Normal(torch.zeros(1), 1.0).to_event(1))
            with poutine.mask(mask=mask):
                pyro.sample("obs", dist.Normal(a.expand(*a.shape[:-1], 2), 0.3).to_event(1), obs=x)

    def guide(x):
        with pyro.plate("data", x.shape[0]), poutine.scale(scale=0.5):
            pyro.sample("a", dist.Normal(x[..., :1], 0.7).to_event(1))

    pyro.set_rng_seed(1)
    lw = log_weights(model, guide, x, max_plate_nesting=1)[0]
    pyro.set_rng_seed(1)
    a = poutine.trace(guide).get_trace(x).nodes["a"]["value"]
    lik = dist.Normal(a.expand(6, 2), 0.3).to_event(1).log_prob(x) * mask
    ref = 0.5 * (dist.Normal(torch.zeros(1), 1.0).to_event(1).log_prob(a) + lik
                 - dist.Normal(x[..., :1], 0.7).to_event(1).log_prob(a))
    assert_close(lw, ref, rtol=1e-5, atol=1e-6)


def test_unmatched_sites_are_refused():
    x = _x()

    def guide_without_b(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("a", dist.Normal(torch.zeros(x.shape[0], 1), 1.0).to_event(1))

    with pytest.raises(ValueError, match="model site 'b' is latent but the guide does not sample it"):
        log_weights(two_latent_model, guide_without_b, x, max_plate_nesting=1)

    def guide_with_extra(x):
        with pyro.plate("data", x.shape[0]):
            a = pyro.sample("a", dist.Normal(x[..., :1], 0.7).to_event(1))
            pyro.sample("b", dist.Normal(x + 0.1 * a, 0.4).to_event(1))
            pyro.sample("c", dist.Normal(torch.zeros(x.shape[0]), 1.0))

    with pytest.raises(ValueError, match="guide site 'c' has no counterpart in the model"):
        log_weights(two_latent_model, guide_with_extra, x, max_plate_nesting=1)


def test_enumerated_and_non_reparameterised_sites():
    x = _x()

    def model(x):
        with pyro.plate("data", x.shape[0]):
            c = pyro.sample("c", dist.Bernoulli(0.3 * torch.ones(x.shape[0])))
            pyro.sample("obs", dist.Normal(c[..., None].expand(*c.shape, 2), 1.0).to_event(1), obs=x)

    def guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("c", dist.Bernoulli(0.5 * torch.ones(x.shape[0])))

    with pytest.raises(ValueError, match="guide site 'c' is not reparameterisable"):
        bound(model, guide, x, max_plate_nesting=1)
    # importance sampling needs no gradient: the weights are valid
    lw = log_weights(model, guide, x, num_particles=3, max_plate_nesting=1)
    assert lw.shape == (3, 6) and bool(torch.isfinite(lw).all())
    enumerated = pyro.infer.config_enumerate(guide, "parallel")
    with pytest.raises(ValueError, match="guide site 'c' is enumerated"):
        log_weights(model, enumerated, x, max_plate_nesting=1)


def test_log_joint_needs_every_latent_and_sums_all_sites():
    x = _x()
    a, b = torch.randn(6, 1), torch.randn(6, 2)
    ref = (dist.Normal(torch.zeros(1), 1.0).to_event(1).log_prob(a) + dist.Normal(a.expand(6, 2), 0.5).to_event(1).log_prob(b)
           + dist.Normal(b, 0.3).to_event(1).log_prob(x))
    assert_close(log_joint(two_latent_model, x, latents={"a": a, "b": b}), ref, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match=r"latent site\(s\) \['b'\] not given"):
        log_joint(two_latent_model, x, latents={"a": a})
