"""Guides as a user would write them, importable by path ("user_guides:...") in the tests."""

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule, PyroParam
from torch import nn

SHARED = nn.Linear(2, 2)


def function_guide(x):
    """A plain Pyro function: its parameters live in the global param store."""
    loc = pyro.param("loc", torch.zeros(1))
    with pyro.plate("data", x.shape[0]):
        return pyro.sample("z", dist.Normal(loc.expand(x.shape[0], 1), 1.0).to_event(1))


def function_factory(obs_dim, latent_dim):
    return function_guide


_ONE = None


def same_module_factory(obs_dim, latent_dim):
    global _ONE
    if _ONE is None:
        _ONE = LinearGuide(obs_dim, latent_dim)
    return _ONE


class LinearGuide(nn.Module):
    """z ~ N(W x + b, softplus(s)²): an amortised Gaussian guide without our networks."""

    def __init__(self, obs_dim, latent_dim):
        super().__init__()
        self.net = nn.Linear(obs_dim, 2 * latent_dim)
        self.k = latent_dim

    def forward(self, x):
        pyro.module("guide", self)  # as Pyro users register modules for pyro.infer.SVI
        out = self.net(x)
        with pyro.plate("data", x.shape[0]):
            return pyro.sample("z", dist.Normal(out[..., : self.k], nn.functional.softplus(out[..., self.k :]) + 1e-3)
                               .to_event(1))


class SharedLayerGuide(LinearGuide):
    """Every instance uses one module-level layer: restarts would share it."""

    def __init__(self, obs_dim, latent_dim):
        super().__init__(obs_dim, latent_dim)
        self.net = SHARED


class PyroGuide(PyroModule):
    """A PyroModule guide with a PyroParam: by default such parameters live in the global param store by name."""

    def __init__(self, obs_dim, latent_dim):
        super().__init__()
        self.net = PyroModule[nn.Linear](obs_dim, latent_dim)
        self.log_scale = PyroParam(torch.randn(latent_dim) * 0.1)

    def forward(self, x):
        with pyro.plate("data", x.shape[0]):
            return pyro.sample("z", dist.Normal(self.net(x), self.log_scale.exp()).to_event(1))
