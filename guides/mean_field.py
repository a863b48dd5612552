"""Amortised mean-field Gaussian guide (the "MFG" variational family of 004 and 000).

``q_φ(z | x) = N(μ_φ(x), diag σ²_φ(x))`` with an MLP encoder (3 × 50 leaky-ReLU by default,
004 Appendix D). Any other callable ``guide(x)`` that samples a site ``"z"`` inside the
plate ``"data"`` (and ``"restarts"`` when the model is batched) works wherever a guide is
accepted; this class is one such guide.
"""

from __future__ import annotations

from typing import Sequence


import pyro
import pyro.distributions as dist
import torch
from torch import nn
from torch.nn.functional import softplus

from pyro_vae.models import data_plates, register
from pyro_vae.nets import MLP

MIN_SCALE = 1e-5


class MeanFieldGuide(nn.Module):
    """Pyro guide ``z ~ N(μ_φ(x), diag σ_φ(x)²)``.

    Parameters
    ----------
    obs_dim, latent_dim : int
    hidden, activation :
        Encoder architecture (see :class:`pyro_vae.nets.MLP`).
    num_restarts : int or None
        Independent encoders trained in one batch, matching the model's restarts.
    encoder : nn.Module, optional
        A custom encoder mapping ``(N, D)`` to ``(..., N, 2K)`` (loc, unconstrained scale).
    name : str
        Prefix of the parameters in Pyro's param store.
    """

    def __init__(
        self,
        obs_dim: int,
        latent_dim: int,
        hidden: Sequence[int] = (50, 50, 50),
        activation: str = "leaky_relu",
        *,
        num_restarts: int | None = None,
        encoder: nn.Module | None = None,
        name: str = "guide",
    ):
        super().__init__()
        self.encoder = encoder if encoder is not None else MLP(obs_dim, 2 * latent_dim, hidden, activation, num_restarts)
        self.obs_dim, self.latent_dim, self.num_restarts, self.name = obs_dim, latent_dim, num_restarts, name

    def distribution(self, x: torch.Tensor) -> dist.Normal:
        """``q_φ(z | x)`` as a batched Normal of shape ``([R,] N, K)``."""
        out = self.encoder(x)
        loc, raw = out[..., : self.latent_dim], out[..., self.latent_dim :]
        return dist.Normal(loc, softplus(raw) + MIN_SCALE)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        register(self.name, self)
        q = self.distribution(x)
        with data_plates(self.num_restarts, x.shape[-2], x.device):
            return pyro.sample("z", q.to_event(1))
