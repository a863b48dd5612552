"""The synthetic data sets of 000 (LiBI): LinearJTE, CubicJTE, Gaussian, Mobius (App. E) and
the pedagogical examples of App. C.

Names follow the project's convention, not the paper's section titles: ``case1`` is 000
Eq. 5 / App. C.1 (x = θz + ε; the body calls it "Case 2"), and ``case2`` is App. C.2
(x = Cholesky(AAᵀ + B) z + ε with B learned; the body's "Case 1" discussion of Eq. 3).
Each set has 500 train, validation and test points (000 App. E).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

from pyro_vae.datasets import families
from pyro_vae.datasets.base import Dataset, check_positive, check_range

#: 000 Eq. 3 / App. E ground truth: A, diag(B) and σ².
A_JTE = ((0.75, 0.25), (1.5, -1.0))
B_JTE = (0.006, 0.006)
SIGMA2_JTE = 0.01
#: 000 App. E "Gaussian": A (K = 2 rows, D = 4 columns) and the noise variance.
A_GAUSSIAN = ((-0.7074, 0.0995, 0.0286, 0.1240), (0.7074, 0.9948, -0.9995, 0.9920))
GAUSSIAN_NOISE_VAR = 1e-6
#: 000 App. E "Mobius": m(z) = (a z + b) / (c z + d), complex constants as (real, imag).
MOBIUS = {"a": (1.0, 0.0), "b": (1.0, 4.0), "c": (1.0, 0.0), "d": (7.0, 4.0)}


def _f64(value) -> torch.Tensor:
    return torch.as_tensor(value, dtype=torch.float64)


def cholesky_factor(a: Sequence, b_diag: Sequence[float]) -> torch.Tensor:
    """Lower-triangular ``Cholesky(AAᵀ + diag(b))`` in float64 (000 Eq. 3)."""
    a = _f64(a)
    return torch.linalg.cholesky(a @ a.T + torch.diag(_f64(b_diag)))


class _CholeskyProcess(Dataset):
    """``z ~ N(0, I)``, ``x | z = Cholesky(AAᵀ + B) z + ε``, ``ε ~ N(0, σ²I − B)`` (000 Eq. 3)."""

    latent_dim, obs_dim, noise_var, sizes = 2, 2, SIGMA2_JTE, (500, 500, 500)
    cubic = False

    def _setup(self, b_diag: Sequence[float]) -> None:
        self.a = _f64(A_JTE)
        self.b_diag = _f64(b_diag)
        self.chol = cholesky_factor(A_JTE, b_diag)

    def obs_noise_var(self, device=None, dtype=None) -> torch.Tensor:
        return (self.noise_var - self.b_diag).to(device=device, dtype=dtype or torch.float32)

    def true_f(self, z: torch.Tensor) -> torch.Tensor:
        loc = z @ self.chol.T.to(dtype=z.dtype, device=z.device)
        return loc**3 if self.cubic else loc

    def marginal(self) -> torch.distributions.MultivariateNormal | None:
        """``N(0, AAᵀ + σ²I)`` for every valid B (000 App. C.2); ``None`` when cubic."""
        if self.cubic:
            return None
        cov = self.a @ self.a.T + self.noise_var * torch.eye(self.obs_dim, dtype=torch.float64)
        return torch.distributions.MultivariateNormal(torch.zeros(self.obs_dim, dtype=torch.float64), cov)

    def decoder_family(self, num_restarts: int | None = None) -> torch.nn.Module:
        """Learn A with B fixed (000 App. E): :class:`families.CholeskyFamily`."""
        return families.CholeskyFamily(A_JTE, self.b_diag.tolist(), self.noise_var, self.cubic, num_restarts)


class LinearJTE(_CholeskyProcess):
    """LinearJTE (000 App. E.1, Eq. 3; 004 Eq. 6): A = A_JTE, B = diag(0.006, 0.006), σ² = 0.01."""

    name, paper, conditions = "linear_jte", "000 App. E (1), Eq. 3; 004 Eq. 6", "1 and 2"

    def __init__(self):
        super().__init__()
        self._setup(B_JTE)


class CubicJTE(_CholeskyProcess):
    """CubicJTE (000 App. E.2): ``x | z = (Cholesky(AAᵀ + B) z)³ + ε``, cube element-wise."""

    name, paper, conditions = "cubic_jte", "000 App. E (2)", "1 and 2"
    cubic = True

    def __init__(self):
        super().__init__()
        self._setup(B_JTE)


class Case2(_CholeskyProcess):
    """000 App. C.2 (Eqs. 17-19): Eq. 3 with A = A_JTE fixed and diagonal B the parameter.

    Every B with entries in [0, σ²) gives the same ``p(x) = N(0, AAᵀ + σ²I)``; the family
    learns B. (The body of 000 discusses this under "Case 1"; here it is ``case2``.)

    Parameters
    ----------
    b_diag : pair of float
        Diagonal of B, each in [0, σ²) with σ² = 0.01 (default (0.006, 0.006), as LinearJTE).
    """

    name, paper, conditions = "case2", "000 App. C.2, Eqs. 17-19", "1 only"

    def __init__(self, b_diag: Sequence[float] = B_JTE):
        super().__init__()
        try:
            values = [float(v) for v in b_diag]
        except (TypeError, ValueError):
            raise ValueError(f"b_diag={b_diag!r}: expected 2 numbers in [0, {SIGMA2_JTE:g})") from None
        if len(values) != 2:
            raise ValueError(f"b_diag={b_diag!r}: expected 2 numbers in [0, {SIGMA2_JTE:g})")
        for i, v in enumerate(values):
            check_range(f"b_diag[{i}]", v, 0.0, SIGMA2_JTE)
        self._setup(values)
        self.params = {"b_diag": tuple(values)}

    def decoder_family(self, num_restarts: int | None = None) -> torch.nn.Module:
        """Learn B with A fixed (000 §1): :class:`families.Case2Family`."""
        return families.Case2Family(A_JTE, self.b_diag.tolist(), self.noise_var, num_restarts)


class Case1(Dataset):
    """000 Eq. 5 / App. C.1 (Eqs. 10-12): ``x = θ z + ε``, ``ε ~ N(0, σ² − θ²)``, K = D = 1.

    Every ``0 ≤ θ < σ`` gives ``p(x) = N(0, σ²)``; θ sets ``I(X; Z)``. (The body of 000 calls
    this "Case 2"; here it is ``case1``.) The paper fixes no values; our defaults are
    σ² = 1 and θ = 0.9, an informative ground truth (I(X; Z) = −½ log(1 − θ²/σ²) ≈ 0.83 nats)
    that a collapsed model (θ → 0) visibly departs from.

    Parameters
    ----------
    theta : float
        In [0, σ).
    sigma2 : float
        σ² > 0, the marginal variance of x.
    """

    name, latent_dim, obs_dim, sizes = "case1", 1, 1, (500, 500, 500)
    paper, conditions = "000 Eq. 5, App. C.1", "n/a"

    def __init__(self, theta: float = 0.9, sigma2: float = 1.0):
        super().__init__()
        self.noise_var = check_positive("sigma2", sigma2)
        sigma = math.sqrt(self.noise_var)
        hint = f" (0 <= theta < sigma = sqrt(sigma2={self.noise_var:g}))"
        self.theta = check_range("theta", theta, 0.0, sigma, hint=hint)
        self.params = {"theta": self.theta, "sigma2": self.noise_var}

    def obs_noise_var(self, device=None, dtype=None) -> torch.Tensor:
        v = self.noise_var - self.theta**2
        return torch.full((1,), v, device=device, dtype=dtype or torch.float32)

    def true_f(self, z: torch.Tensor) -> torch.Tensor:
        return self.theta * z

    def marginal(self) -> torch.distributions.MultivariateNormal:
        """``N(0, σ²)`` for every valid θ (000 App. C.1)."""
        return torch.distributions.MultivariateNormal(
            torch.zeros(1, dtype=torch.float64), torch.full((1, 1), self.noise_var, dtype=torch.float64)
        )

    def decoder_family(self, num_restarts: int | None = None) -> torch.nn.Module:
        """Learn θ with σ² fixed: :class:`families.Case1Family`."""
        return families.Case1Family(self.theta, self.noise_var, num_restarts)


class Gaussian(Dataset):
    """000 App. E (3) "Gaussian": ``x = zᵀA + ε``, ``ε ~ N(0, 1e-6 I)``, K = 2, D = 4."""

    name, latent_dim, obs_dim, noise_var, sizes = "gaussian", 2, 4, GAUSSIAN_NOISE_VAR, (500, 500, 500)
    paper, conditions = "000 App. E (3)", "1 only"

    def true_f(self, z: torch.Tensor) -> torch.Tensor:
        return z @ torch.as_tensor(A_GAUSSIAN, dtype=z.dtype, device=z.device)

    def marginal(self) -> torch.distributions.MultivariateNormal:
        """``N(0, AᵀA + 1e-6 I)``."""
        a = _f64(A_GAUSSIAN)
        cov = a.T @ a + self.noise_var * torch.eye(self.obs_dim, dtype=torch.float64)
        return torch.distributions.MultivariateNormal(torch.zeros(self.obs_dim, dtype=torch.float64), cov)

    def decoder_family(self, num_restarts: int | None = None) -> torch.nn.Module:
        """Learn A (000 App. E): :class:`families.GaussianFamily`."""
        return families.GaussianFamily(A_GAUSSIAN, self.noise_var, num_restarts)


class Mobius(Dataset):
    """000 App. E (4) "Mobius": ``m(z) = (a z + b) / (c z + d)`` on ``z = z1 + i z2``.

    a = 1, b = 1 + 4i, c = 1, d = 7 + 4i; ``f(z) = [Re m, Im m]``, σ² = 1e-5, K = D = 2.
    The paper generates from an MLP fitted to m (``surrogate=True``). The likelihood family
    of the paper is that network's architecture, so :meth:`decoder_family` returns ``None``
    (the default MLP).
    """

    name, latent_dim, obs_dim, noise_var, sizes = "mobius", 2, 2, 1e-5, (500, 500, 500)
    paper, conditions = "000 App. E (4)", "n/a"
    supports_surrogate = True

    def true_f(self, z: torch.Tensor) -> torch.Tensor:
        (ar, ai), (br, bi), (cr, ci), (dr, di) = (MOBIUS[k] for k in "abcd")
        x, y = z[..., 0], z[..., 1]
        nr, ni = ar * x - ai * y + br, ar * y + ai * x + bi  # a z + b
        dr_, di_ = cr * x - ci * y + dr, cr * y + ci * x + di  # c z + d
        den = dr_**2 + di_**2
        return torch.stack([(nr * dr_ + ni * di_) / den, (ni * dr_ - nr * di_) / den], dim=-1)
