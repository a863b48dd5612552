"""Small models with closed-form posteriors for the diagnose tests.

``x = a·g(z) + ε`` with ``z ~ N(0, 1)``, ``ε ~ N(0, σ² I)``: ``g(z) = z`` (linear-Gaussian, the
posterior is N(m(x), s²) with ``s² = 1 / (1 + |a|²/σ²)``, ``m(x) = s² aᵀx / σ²``) or ``g(z) = |z|``
(two-to-one: for x near the manifold's branch the posterior is ½N(m, s²) + ½N(−m, s²)).
"""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from pyro_vae.models import VAEModel

A = torch.tensor([1.0, 0.5])
SIGMA2 = 0.1


class LinearDecoder(nn.Module):
    def __init__(self, a: torch.Tensor, absolute: bool = False):
        super().__init__()
        self.register_buffer("a", a.clone())
        self.absolute = absolute

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return (z.abs() if self.absolute else z) * self.a


def linear_model(a: torch.Tensor = A, sigma2: float = SIGMA2, absolute: bool = False, noise: str = "fixed") -> VAEModel:
    return VAEModel(LinearDecoder(a, absolute), 1, a.shape[0], sigma2, noise=noise)


def posterior_moments(x: torch.Tensor, a: torch.Tensor = A, sigma2: float = SIGMA2) -> tuple[torch.Tensor, float]:
    """Mean (N,) and variance of the Gaussian posterior of the linear model (one branch for |z|)."""
    s2 = 1.0 / (1.0 + float(a @ a) / sigma2)
    return s2 * (x @ a) / sigma2, s2


class GaussianGuide(nn.Module):
    """``q(z | x) = N(m(x) + shift, (scale · s)²)`` around the closed-form posterior."""

    def __init__(self, a: torch.Tensor = A, sigma2: float = SIGMA2, scale: float = 1.0, shift: float = 0.0):
        super().__init__()
        self.a, self.sigma2, self.scale, self.shift = a, sigma2, scale, shift

    def distribution(self, x: torch.Tensor) -> dist.Normal:
        m, s2 = posterior_moments(x, self.a, self.sigma2)
        return dist.Normal((m + self.shift)[..., None], torch.full_like(m, self.scale * math.sqrt(s2))[..., None])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with pyro.plate("data", x.shape[-2], dim=-1):
            return pyro.sample("z", self.distribution(x).to_event(1))


def draw(n: int, seed: int, a: torch.Tensor = A, sigma2: float = SIGMA2, absolute: bool = False) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(n, 1, generator=gen)
    g = z.abs() if absolute else z
    return g * a + math.sqrt(sigma2) * torch.randn(n, a.shape[0], generator=gen)


def marginal_log_prob(x: torch.Tensor, a: torch.Tensor = A, sigma2: float = SIGMA2) -> torch.Tensor:
    cov = torch.outer(a, a).double() + sigma2 * torch.eye(a.shape[0], dtype=torch.float64)
    return torch.distributions.MultivariateNormal(torch.zeros(a.shape[0], dtype=torch.float64), cov).log_prob(x.double())
