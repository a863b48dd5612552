"""Parametric likelihood families of the 000 data sets (000 App. E, "Architecture").

"For all models, we used the same architecture for the likelihood as the one of the
ground-truth process": each family below has the ground-truth process's form with the
paper's learned parameter θ free and the rest fixed.

Every family is an ``nn.Module`` with ``forward(z) -> loc``, ``noise_var()`` (the per-dim
variance of ``x | z``) and ``set_ground_truth()``. With ``num_restarts=R`` every parameter
has a leading dimension R (independent initialisations trained as one batch, as in
:class:`pyro_vae.nets.BatchedLinear`): ``z`` of shape (..., R, N, K) or (N, K) gives ``loc`` of
shape (..., R, N, D), and ``noise_var()`` has shape (R, 1, D). With ``num_restarts=None``
``noise_var()`` has shape (D,). Random initialisations use torch's global RNG.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from pyro_vae.nets import _check_restarts

_MIN_NOISE_FRACTION = 1e-6  # noise variance floor, as a fraction of σ², at the edge of the range


def _as_tensor(value) -> torch.Tensor:
    return torch.as_tensor(value, dtype=torch.float32)


class _Family(nn.Module):
    def __init__(self, num_restarts: int | None):
        super().__init__()
        _check_restarts(num_restarts)
        self.num_restarts = num_restarts

    @property
    def lead(self) -> tuple[int, ...]:
        """The restart dimension, read from ``num_restarts`` (which stacking and slicing change)."""
        return () if self.num_restarts is None else (self.num_restarts,)

    def _shape_noise(self, v: torch.Tensor) -> torch.Tensor:
        """(D,) or (R, D) variances -> (D,) or (R, 1, D)."""
        if self.num_restarts is None:
            return v
        return v.expand(*self.lead, v.shape[-1]).unsqueeze(-2)


def _cholesky_loc(z: torch.Tensor, a: torch.Tensor, b: torch.Tensor, cubic: bool) -> torch.Tensor:
    """``Cholesky(AAᵀ + diag(b)) z`` (cubed element-wise if ``cubic``), batched over A and b."""
    cov = a @ a.mT + torch.diag_embed(b)
    loc = torch.matmul(z, torch.linalg.cholesky(cov).mT)
    return loc**3 if cubic else loc


class CholeskyFamily(_Family):
    """LinearJTE / CubicJTE likelihood (000 Eq. 3, App. E): learn A, B fixed.

    ``f(z) = Cholesky(AAᵀ + B) z`` (element-wise cubed for CubicJTE), noise ``σ²I − B``.
    A is initialised with N(0, 1) entries.
    """

    def __init__(self, a_true: Sequence, b_diag: Sequence[float], sigma2: float,
                 cubic: bool = False, num_restarts: int | None = None):
        super().__init__(num_restarts)
        a_true = _as_tensor(a_true)
        self.cubic = cubic
        self.A = nn.Parameter(torch.randn(*self.lead, *a_true.shape))
        self.register_buffer("a_true", a_true)
        self.register_buffer("b_diag", _as_tensor(b_diag))
        self.register_buffer("noise", sigma2 - self.b_diag)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return _cholesky_loc(z, self.A, self.b_diag, self.cubic)

    def noise_var(self) -> torch.Tensor:
        return self._shape_noise(self.noise)

    @torch.no_grad()
    def set_ground_truth(self) -> None:
        self.A.copy_(self.a_true.expand_as(self.A))


class Case2Family(_Family):
    """000 App. C.2 likelihood: A fixed, learn diagonal B in (0, σ²).

    ``B = σ² · sigmoid(raw_b)``, ``f(z) = Cholesky(AAᵀ + B) z``, noise ``σ²I − B``.
    ``raw_b`` is initialised with N(0, 1) entries.
    """

    def __init__(self, a_true: Sequence, b_true: Sequence[float], sigma2: float,
                 num_restarts: int | None = None):
        super().__init__(num_restarts)
        self.sigma2 = float(sigma2)
        self.register_buffer("a_true", _as_tensor(a_true))
        self.register_buffer("b_true", _as_tensor(b_true))
        self.raw_b = nn.Parameter(torch.randn(*self.lead, self.b_true.shape[-1]))

    def b_diag(self) -> torch.Tensor:
        """Current diagonal of B, shape (D,) or (R, D)."""
        return self.sigma2 * torch.sigmoid(self.raw_b)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return _cholesky_loc(z, self.a_true, self.b_diag(), cubic=False)

    def noise_var(self) -> torch.Tensor:
        v = (self.sigma2 - self.b_diag()).clamp_min(self.sigma2 * _MIN_NOISE_FRACTION)
        return self._shape_noise(v)

    @torch.no_grad()
    def set_ground_truth(self) -> None:
        p = (self.b_true / self.sigma2).clamp(1e-6, 1 - 1e-6)
        self.raw_b.copy_(torch.logit(p).expand_as(self.raw_b))


class Case1Family(_Family):
    """000 Eq. 5 / App. C.1 likelihood: learn θ in ``f(z) = θ z``, noise ``σ² − θ²``.

    ``θ = σ · tanh(raw_theta)`` keeps ``|θ| < σ`` (θ and −θ give the same p(x) and mirrored
    posteriors). ``raw_theta`` is initialised from N(0, 1).
    """

    def __init__(self, theta_true: float, sigma2: float, num_restarts: int | None = None):
        super().__init__(num_restarts)
        self.sigma2 = float(sigma2)
        self.theta_true = float(theta_true)
        self.raw_theta = nn.Parameter(torch.randn(*self.lead, 1, 1))  # (1, 1) unbatched: what select_restart gives

    def theta(self) -> torch.Tensor:
        """Current θ, shape (1,) or (R, 1, 1)."""
        return self.sigma2**0.5 * torch.tanh(self.raw_theta)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z * self.theta()

    def noise_var(self) -> torch.Tensor:
        return (self.sigma2 - self.theta() ** 2).clamp_min(self.sigma2 * _MIN_NOISE_FRACTION)

    @torch.no_grad()
    def set_ground_truth(self) -> None:
        ratio = torch.tensor(self.theta_true / self.sigma2**0.5)
        self.raw_theta.fill_(float(torch.atanh(ratio)))


class GaussianFamily(_Family):
    """000 App. E "Gaussian" likelihood: learn A (K × D) in ``f(z) = zᵀA``; noise fixed.

    A is initialised with N(0, 1) entries.
    """

    def __init__(self, a_true: Sequence, noise: float, num_restarts: int | None = None):
        super().__init__(num_restarts)
        a_true = _as_tensor(a_true)
        self.register_buffer("a_true", a_true)
        self.register_buffer("noise", torch.full((a_true.shape[-1],), float(noise)))
        self.A = nn.Parameter(torch.randn(*self.lead, *a_true.shape))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.matmul(z, self.A)

    def noise_var(self) -> torch.Tensor:
        return self._shape_noise(self.noise)

    @torch.no_grad()
    def set_ground_truth(self) -> None:
        self.A.copy_(self.a_true.expand_as(self.A))
