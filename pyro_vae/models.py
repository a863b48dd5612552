"""The VAE's generative model as a Pyro program.

``p(z) p_θ(x | z)`` with ``z ~ N(0, I_K)`` and ``x | z ~ N(f_θ(z), diag(σ²))`` (Eq. 1 of 004,
Eq. 1 of 000). Sample sites are ``"z"`` and ``"x"`` inside the plate ``"data"``; with
``num_restarts=R`` an outer plate ``"restarts"`` (dim −2) holds R independent models whose
parameters carry a leading dimension of size R (see :mod:`pyro_vae.nets`).
"""

from __future__ import annotations

import contextlib
import math

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from pyro_vae.nets import MLP

NOISE_MODES = ("fixed", "learned")
_REGISTRATION = {"enabled": True}


@contextlib.contextmanager
def unregistered():
    """Skip ``pyro.module`` registration inside the block.

    :func:`pyro_vae.inference.train` optimises module parameters directly, so the per-step
    registration in Pyro's param store (about a third of a small model's step time) is
    pure overhead there. Outside this block the programs register as Pyro users expect.
    """
    previous = _REGISTRATION["enabled"]
    _REGISTRATION["enabled"] = False
    try:
        yield
    finally:
        _REGISTRATION["enabled"] = previous


@contextlib.contextmanager
def recorded_modules():
    """Inside the block, programs do not register and the modules they would register are
    collected in the list this yields (so their own parameters are found without reading
    Pyro's param store, which may hold another model's tensors under the same names)."""
    previous = dict(_REGISTRATION)
    found: list[nn.Module] = []
    _REGISTRATION.update(enabled=False, record=found)
    try:
        yield found
    finally:
        _REGISTRATION.clear()
        _REGISTRATION.update(previous)


def register(name: str, module: nn.Module) -> None:
    """``pyro.module(name, module)`` unless inside :func:`unregistered` or :func:`recorded_modules`."""
    record = _REGISTRATION.get("record")
    if record is not None:
        record.append(module)
    if _REGISTRATION["enabled"]:
        pyro.module(name, module)


def data_plates(num_restarts: int | None, size: int, device: torch.device | str | None = None):
    """The ``"restarts"`` (dim −2, when batched) and ``"data"`` (dim −1) plates, entered together."""
    stack = contextlib.ExitStack()
    if num_restarts is not None:
        stack.enter_context(pyro.plate("restarts", num_restarts, dim=-2, device=device))
    stack.enter_context(pyro.plate("data", size, dim=-1, device=device))
    return stack


class VAEModel(nn.Module):
    """Pyro model ``z ~ N(0, I)``, ``x | z ~ N(decoder(z), diag(noise_var))``.

    Parameters
    ----------
    decoder : nn.Module
        Maps ``(..., [R,] N, K)`` latents to ``(..., R, N, D)`` means. If it has a method
        ``noise_var()`` (a data set's parametric family, e.g. 000's Case 1 where the noise
        depends on θ), that variance is used and ``noise_var`` below is ignored.
    latent_dim, obs_dim : int
    noise_var : float or sequence of float
        σ², scalar or per dimension. The initial value when ``noise="learned"``.
    noise : {"fixed", "learned"}
        Learned σ² is per dimension and positive (parameterised by its logarithm).
    num_restarts : int or None
        Number of independent models trained in one batch.
    name : str
        Prefix of the parameters in Pyro's param store.
    """

    def __init__(
        self,
        decoder: nn.Module,
        latent_dim: int,
        obs_dim: int,
        noise_var: float | torch.Tensor = 0.01,
        *,
        noise: str = "fixed",
        num_restarts: int | None = None,
        name: str = "model",
    ):
        super().__init__()
        if noise not in NOISE_MODES:
            raise ValueError(f"noise={noise!r}: expected one of {NOISE_MODES}")
        log_var = torch.as_tensor(noise_var, dtype=torch.get_default_dtype()).log().expand(obs_dim).clone()
        if not torch.isfinite(log_var).all():
            raise ValueError(f"noise_var={noise_var!r}: expected positive variances")
        lead = (1,) if num_restarts is None else (num_restarts, 1)  # unbatched: (1, D), as a selected restart
        log_var = log_var.expand(*lead, obs_dim).clone()
        if noise == "learned":
            self.log_noise_var = nn.Parameter(log_var)
        else:
            self.register_buffer("log_noise_var", log_var)
        self.decoder = decoder
        self.restart_buffers = () if noise == "learned" or num_restarts is None else ("log_noise_var",)
        self.latent_dim, self.obs_dim, self.num_restarts = latent_dim, obs_dim, num_restarts
        self.noise, self.name = noise, name

    def noise_variance(self) -> torch.Tensor:
        """σ² per dimension: shape ``(1, D)``, or ``(R, 1, D)`` when batched."""
        family_noise = getattr(self.decoder, "noise_var", None)
        if callable(family_noise):
            return family_noise()
        return self.log_noise_var.exp()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Score ``x`` of shape ``(N, D)``; returns the decoded means."""
        register(self.name, self)
        zero = x.new_zeros(())
        with data_plates(self.num_restarts, x.shape[-2], x.device):
            prior = dist.Normal(zero, zero + 1.0).expand([self.latent_dim]).to_event(1)
            z = pyro.sample("z", prior)
            loc = self.decoder(z)
            scale = self.noise_variance().sqrt()
            pyro.sample("x", dist.Normal(loc, scale).to_event(1), obs=x)
        return loc

    def log_likelihood(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """``log p_θ(x | z)`` summed over dimensions, broadcast over leading dims of ``z``."""
        loc = self.decoder(z)
        var = self.noise_variance()
        return (-0.5 * ((x - loc) ** 2 / var + var.log() + math.log(2 * math.pi))).sum(-1)


def build_vae_model(
    latent_dim: int,
    obs_dim: int,
    noise_var: float | torch.Tensor,
    *,
    hidden: tuple[int, ...] = (50, 50, 50),
    activation: str = "leaky_relu",
    decoder: nn.Module | None = None,
    noise: str = "fixed",
    num_restarts: int | None = None,
) -> VAEModel:
    """A :class:`VAEModel` with the default MLP decoder (004 Appendix D) unless one is given."""
    if decoder is None:
        decoder = MLP(latent_dim, obs_dim, hidden, activation, num_restarts)
    return VAEModel(decoder, latent_dim, obs_dim, noise_var, noise=noise, num_restarts=num_restarts)
