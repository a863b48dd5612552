"""Reference posteriors of any Pyro model: the truth, a learned model and a user's model alike."""

import math

import pytest
import torch

from common import assert_close, assert_within_se
from pyro_vae.datasets import get_dataset
from pyro_vae.models import build_vae_model
from pyro_vae.posterior.compare import nuts_vs_grid
from pyro_vae.posterior.grid import grid_posterior
from pyro_vae.posterior.nuts import nuts_posterior
from pyro_vae.posterior.target import ModelTarget, likelihood_target, posterior_target

from metrics.test_any_guide_metrics import _linear_posterior, linear_model


@pytest.mark.parametrize("name", ["figure8", "variant1", "linear_jte"])
def test_the_pyro_program_and_the_closed_form_give_the_same_log_joint(name):
    """A data set read through its Pyro program (traces) equals its f and σ² read directly."""
    ds = get_dataset(name)
    x, z = ds.sample(7, seed=1)
    program, closed = posterior_target(ds), likelihood_target(ds)
    assert isinstance(program, ModelTarget) and program.latent == "z" and program.observed == "x"
    zs = torch.stack([z.double(), z.double() * 0.5 + 0.1]).clamp(0.01, 0.99) if ds.prior == "uniform" else torch.stack(
        [z.double(), z.double() * 0.5 + 0.1])
    assert_close(program.log_joint(x.double(), zs), closed.log_joint(x.double(), zs), rtol=1e-10, atol=1e-10)
    assert program.prior == closed.prior


def test_a_users_model_gets_grid_and_nuts_posteriors():
    """Latent "w" ~ N(1, 2²), observed "y" (no site named z or x): exact Gaussian posterior."""
    x = torch.tensor([[0.9, -0.4]], dtype=torch.float64)
    mean, sd = _linear_posterior(x)
    post = grid_posterior(linear_model, x)
    assert_close(post.mean[:, 0], torch.tensor(mean), atol=1e-6, msg="grid mean")
    res = nuts_posterior(linear_model, x, num_chains=2, num_warmup=100, num_samples=200, seed=0)
    assert res.idata.posterior["w"].shape == (2, 200, 1)
    draws = res.flat()[:, 0]
    assert_within_se(float(draws.mean()), float(mean[0]), res.diagnostics["mcse_mean"][0], k=4.0, msg="NUTS mean")
    assert abs(float(draws.std()) - sd) < 4 * res.diagnostics["mcse_sd"][0] + 1e-3


def _learned_model():
    """A 'trained' VAE model: an MLP decoder fitted to a smooth curve, K = 1, D = 2."""
    from pyro_vae.nets import fit_to_function

    torch.manual_seed(0)
    model = build_vae_model(1, 2, 0.02, hidden=(16, 16), activation="tanh")
    fit_to_function(model.decoder, lambda z: torch.cat([torch.tanh(z), 0.3 * z], -1),
                    lambda n, g: torch.randn(n, 1, generator=g), max_steps=1500, lr=1e-2, seed=0)
    return model


@pytest.mark.slow
def test_nuts_on_a_learned_model_agrees_with_its_grid_posterior():
    model = _learned_model()
    x = torch.tensor([[0.35, 0.15]])
    res = nuts_posterior(model, x, num_warmup=200, num_samples=500, seed=0)
    assert res.ok, res.reasons
    post = grid_posterior(model, x)
    cmp = nuts_vs_grid(res, post, 0)
    assert_within_se(float(cmp.mean_error[0]), 0.0, float(cmp.mean_se[0]), k=4.0, msg="mean")
    assert_within_se(float(cmp.var_error[0]), 0.0, float(cmp.var_se[0]), k=4.0, msg="variance")
    assert math.isfinite(float(post.log_marginal[0]))
    assert res.provenance["target"] == "model"


def test_targets_refuse_what_they_cannot_read():
    import pyro
    import pyro.distributions as dist

    def two_latents(x):
        with pyro.plate("data", x.shape[0]):
            a = pyro.sample("a", dist.Normal(torch.zeros(x.shape[0], 1), 1.0).to_event(1))
            b = pyro.sample("b", dist.Normal(a, 1.0).to_event(1))
            pyro.sample("x", dist.Normal(b.expand(x.shape), 1.0).to_event(1), obs=x)

    with pytest.raises(ValueError, match=r"latent sites \['a', 'b'\].*latent="):
        posterior_target(two_latents, obs_dim=2)
    assert ModelTarget(two_latents, 2, latent="b").latent_dim == 1
    with pytest.raises(ValueError, match="observed='y'"):
        posterior_target(two_latents, obs_dim=2, observed="y", latent="a")
    with pytest.raises(ValueError, match="restart-batched"):
        posterior_target(build_vae_model(1, 2, 0.1, hidden=(4,), num_restarts=2))
