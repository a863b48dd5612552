"""What the checks need from any Pyro model and guide, read off their traces.

The checks of :mod:`pyro_vae.diagnose` work on any pair of Pyro programs ``model(x)``,
``guide(x)`` of the package's contract (:mod:`pyro_vae.inference.objectives`): a latent site
``"z"`` (event shape (K,)) and an observed site ``"x"`` whose likelihood is Gaussian,
``x | z ~ N(f(z), diag σ²)``, both inside the plate ``"data"``. :class:`ModelProbe` finds K, D,
the decoder mean ``f`` (by conditioning the model on ``z`` and reading the location of ``"x"``),
σ² (its scale), whether the prior is N(0, I), and draws and densities of the guide. Nothing
here depends on :class:`pyro_vae.models.VAEModel`: a user's own model works the same way.
"""

from __future__ import annotations

import contextlib
import random
from typing import Callable

import numpy as np
import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import torch

from pyro_vae.models import unregistered
from pyro_vae.posterior.target import PosteriorTarget

__all__ = ["ModelProbe", "ProbeError", "seeded"]


class ProbeError(ValueError):
    """The model or guide does not follow the contract the checks need."""


@contextlib.contextmanager
def seeded(seed: int):
    """Run the block with torch, NumPy and ``random`` seeded by ``seed``, then restore their states.

    The checks draw their own random numbers without resetting the caller's global RNG.
    """
    torch_state, np_state, py_state = torch.random.get_rng_state(), np.random.get_state(), random.getstate()
    try:
        pyro.set_rng_seed(seed)
        yield
    finally:
        torch.random.set_rng_state(torch_state)
        np.random.set_state(np_state)
        random.setstate(py_state)


def _base(fn):
    while isinstance(fn, dist.Independent):
        fn = fn.base_dist
    return fn


class ModelProbe:
    """A model and guide seen through their traces (see the module docstring).

    Parameters
    ----------
    model, guide : callable
        Unbatched Pyro programs taking ``x`` (N, D).
    x : Tensor (N, D)
        Example observations (only their shape, dtype and device are used).

    Attributes
    ----------
    latent_dim, obs_dim : int
    standard_prior : bool
        The prior at ``"z"`` is N(0, I) (quadrature and the grid posterior need it).
    noise_var : Tensor (D,) or None
        σ² of ``x | z`` (float64), or None when the scale varies with z.
    """

    def __init__(self, model: Callable, guide: Callable, x: torch.Tensor):
        if not isinstance(x, torch.Tensor) or x.dim() != 2 or x.shape[0] < 2:
            raise ProbeError(f"x of shape {tuple(getattr(x, 'shape', ()))}: expected a tensor (N, D) with N >= 2")
        self.model, self.guide = model, guide
        self.dtype, self.device = x.dtype, x.device
        self.obs_dim = x.shape[1]
        example = x[:2]
        with seeded(0), torch.no_grad(), poutine.block(), unregistered():  # the caller's RNG is left as it was
            g = poutine.trace(guide).get_trace(example)
        if "z" not in g.nodes or g.nodes["z"]["type"] != "sample":
            raise ProbeError("the guide has no sample site 'z'")
        z = g.nodes["z"]["value"]
        if z.dim() != 2 or z.shape[0] != 2:
            raise ProbeError(
                f"the guide's 'z' has shape {tuple(z.shape)} for 2 points: expected (N, K) — "
                "an unbatched guide (select one restart first)"
            )
        self.latent_dim = z.shape[1]
        with seeded(0), torch.no_grad(), poutine.block(), unregistered():
            m = poutine.trace(poutine.condition(model, data={"z": z})).get_trace(example)
        site = m.nodes.get("x")
        if site is None or site["type"] != "sample" or not site["is_observed"]:
            raise ProbeError("the model has no observed sample site 'x'")
        if not isinstance(_base(site["fn"]), dist.Normal):
            raise ProbeError(f"the model's 'x' is {type(_base(site['fn'])).__name__}: the checks need a Normal likelihood")
        prior = _base(m.nodes["z"]["fn"])
        self.standard_prior = bool(
            isinstance(prior, dist.Normal)
            and torch.all(prior.loc == 0).item()
            and torch.all(prior.scale == 1).item()
        )
        scale = torch.broadcast_to(_base(site["fn"]).scale, (2, self.obs_dim))
        self.noise_var = None if not torch.allclose(scale[0], scale[1]) else scale[0].detach().double() ** 2

    # ------------------------------------------------------------------ the model
    def f(self, z: torch.Tensor) -> torch.Tensor:
        """Decoder mean ``f(z)`` for ``z`` of shape (..., M, K); returns (..., M, D)."""
        m = z.shape[-2]
        dummy = torch.zeros(m, self.obs_dim, dtype=self.dtype, device=self.device)
        with poutine.block(), unregistered():
            tr = poutine.trace(poutine.condition(self.model, data={"z": z.to(self.dtype)})).get_trace(dummy)
        loc = _base(tr.nodes["x"]["fn"]).loc
        return torch.broadcast_to(loc, (*z.shape[:-1], self.obs_dim))

    def log_joint(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """``log p(x, z)`` for ``z`` (S, N, K); returns (S, N)."""
        with poutine.block(), unregistered():
            tr = poutine.trace(poutine.condition(self.model, data={"z": z})).get_trace(x)
        return tr.nodes["z"]["fn"].log_prob(z) + tr.nodes["x"]["fn"].log_prob(x)

    def log_prior(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """``log p(z)`` for ``z`` (S, N, K) (the model run on ``x``); returns (S, N)."""
        with poutine.block(), unregistered():
            tr = poutine.trace(poutine.condition(self.model, data={"z": z})).get_trace(x)
        return tr.nodes["z"]["fn"].log_prob(z)

    def prior_draws(self, x: torch.Tensor, num: int) -> torch.Tensor:
        """``num`` draws from the prior per row of ``x``: (num, N, K)."""
        with poutine.block(), unregistered():
            tr = poutine.trace(self.model).get_trace(x)
        return tr.nodes["z"]["fn"].sample((num,))

    def target(self) -> PosteriorTarget | None:
        """The model as a :class:`~pyro_vae.posterior.target.PosteriorTarget` (K ≤ 2 grid posteriors).

        None unless the prior is N(0, I) and σ² does not vary with z.
        """
        if not self.standard_prior or self.noise_var is None:
            return None
        return PosteriorTarget(self.f, self.noise_var, self.latent_dim, "normal", self.dtype, "model")

    # ------------------------------------------------------------------ the guide
    def guide_distribution(self, x: torch.Tensor):
        """The guide's distribution at ``"z"`` for the rows of ``x`` (batch (N,), event (K,))."""
        with poutine.block(), unregistered():
            tr = poutine.trace(self.guide).get_trace(x)
        return tr.nodes["z"]["fn"]

    def guide_draws(self, x: torch.Tensor, num: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``num`` draws per row from the guide and their log densities: (S, N, K), (S, N)."""
        with poutine.block(), unregistered(), pyro.plate("diagnose_particles", num, dim=-2):
            tr = poutine.trace(self.guide).get_trace(x)
        site = tr.nodes["z"]
        return site["value"], site["fn"].log_prob(site["value"])

    def log_weights(self, x: torch.Tensor, num: int) -> torch.Tensor:
        """``log p(x, z_s) − log q(z_s | x)`` for ``num`` guide draws per row: (S, N), float64."""
        z, log_q = self.guide_draws(x, num)
        return (self.log_joint(x, z) - log_q).double()
