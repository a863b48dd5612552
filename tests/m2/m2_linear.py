"""A tiny linear-Gaussian M2 model with closed forms, shared by the M2 tests.

``f(z, y) = w_z z + W_y y + b`` (K = 1, D = 2): ``x | y`` is Gaussian, so ``log p(x)``,
``log p(x, y)``, ``p(y | x)`` and ``p(z | x, y)`` are exact, and guides can be set to them.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from guides.m2 import MIN_SCALE, build_m2_guide
from pyro_vae.models_m2 import M2Model

NOISE = 0.3
W_Z = torch.tensor([[1.2], [-0.7]], dtype=torch.float64)
W_Y = torch.tensor([[1.5, -1.0], [0.5, 0.8]], dtype=torch.float64)  # columns: class 0, class 1
W_CONT = torch.tensor([[0.9], [1.1]], dtype=torch.float64)  # continuous label's column
B = torch.tensor([0.2, -0.1], dtype=torch.float64)
PROBS = (0.3, 0.7)


def _linear(weight: torch.Tensor, bias: torch.Tensor) -> nn.Linear:
    layer = nn.Linear(weight.shape[1], weight.shape[0])
    with torch.no_grad():
        layer.weight.copy_(weight)
        layer.bias.copy_(bias)
    return layer


def discrete_model() -> M2Model:
    return M2Model(_linear(torch.cat([W_Z, W_Y], 1).float(), B.float()), 1, 2, 2, "discrete", NOISE, label_probs=PROBS)


def continuous_model() -> M2Model:
    return M2Model(_linear(torch.cat([W_Z, W_CONT], 1).float(), B.float()), 1, 2, 1, "continuous", NOISE)


def _inv_softplus(v: float) -> float:
    return math.log(math.expm1(v))


def _posterior_encoder(w_y: torch.Tensor, sd_factor: float, shift: float) -> nn.Linear:
    """``[x, y] → (loc, raw scale)`` of p(z | x, y) (times ``sd_factor``, loc + ``shift``)."""
    prec = 1.0 + float((W_Z**2).sum()) / NOISE
    sd = math.sqrt(1.0 / prec)
    a = W_Z[:, 0] / NOISE / prec  # loc = a · (x − W_y y − b)
    weight = torch.zeros(2, 2 + w_y.shape[1], dtype=torch.float64)
    weight[0, :2] = a
    weight[0, 2:] = -(a @ w_y)
    bias = torch.tensor([-(a @ B) + shift, _inv_softplus(sd * sd_factor - MIN_SCALE)])
    return _linear(weight.float(), bias.float())


def marginal_cov(w_y_cont: bool = False) -> torch.Tensor:
    cov = W_Z @ W_Z.T + NOISE * torch.eye(2, dtype=torch.float64)
    return cov + (W_CONT @ W_CONT.T if w_y_cont else 0)


def discrete_guide(kind: str = "enum", *, sd_factor: float = 1.0, shift: float = 0.0, **options):
    """An enumerated or relaxed guide set to the exact p(y | x) and p(z | x, y) (optionally
    perturbed: sd times ``sd_factor``, loc plus ``shift``)."""
    guide = build_m2_guide(kind, 2, 1, 2, hidden=(4,), **options)
    prec = torch.linalg.inv(marginal_cov())
    mu = (W_Y + B[:, None]).T  # (C, D) means of x | y
    weight = mu @ prec
    bias = -0.5 * (weight * mu).sum(-1) + torch.tensor(PROBS, dtype=torch.float64).log()
    guide.classifier = _linear(weight.float(), bias.float())
    guide.encoder = _posterior_encoder(W_Y, sd_factor, shift)
    return guide


def continuous_guide():
    """A Gaussian-label guide set to the exact p(y | x) and p(z | x, y): q = p(z, y | x)."""
    guide = build_m2_guide("gaussian", 2, 1, 1, hidden=(4,))
    cov = marginal_cov(True)
    gain = (W_CONT.T @ torch.linalg.inv(cov))[0]  # E[y | x] = gain · (x − b)
    var = 1.0 - float(gain @ W_CONT[:, 0])
    weight = torch.stack([gain, torch.zeros(2, dtype=torch.float64)])
    bias = torch.tensor([-(gain @ B), _inv_softplus(math.sqrt(var) - MIN_SCALE)])
    guide.classifier = _linear(weight.float(), bias.float())
    guide.encoder = _posterior_encoder(W_CONT, 1.0, 0.0)
    return guide


def log_p_xy(x: torch.Tensor, c: int) -> torch.Tensor:
    """Exact ``log p(x, y = c)`` of the discrete model, (N,)."""
    mvn = torch.distributions.MultivariateNormal(W_Y[:, c] + B, marginal_cov())
    return mvn.log_prob(x.double()) + math.log(PROBS[c])


def log_p_x(x: torch.Tensor) -> torch.Tensor:
    return torch.logsumexp(torch.stack([log_p_xy(x, c) for c in range(2)]), 0)


def log_p_x_continuous(x: torch.Tensor) -> torch.Tensor:
    return torch.distributions.MultivariateNormal(B, marginal_cov(True)).log_prob(x.double())


def log_p_xy_continuous(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    mean = B + y.double() * W_CONT[:, 0]
    prior = torch.distributions.Normal(0.0, 1.0).log_prob(y.double()[:, 0])
    return torch.distributions.MultivariateNormal(mean, marginal_cov()).log_prob(x.double()) + prior


def sample_x(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Draws ``(x, y one-hot)`` from the discrete model."""
    gen = torch.Generator().manual_seed(seed)
    c = torch.multinomial(torch.tensor(PROBS), n, replacement=True, generator=gen)
    z = torch.randn(n, 1, generator=gen, dtype=torch.float64)
    x = z @ W_Z.T + W_Y.T[c] + B + math.sqrt(NOISE) * torch.randn(n, 2, generator=gen, dtype=torch.float64)
    return x.float(), torch.eye(2)[c]
