"""The unsupervised pedagogical examples of 004 Appendix G, and their 5-D embeddings (004 §8).

All have ``z ~ N(0, 1)`` (K = 1) and ``x | z ~ N(f(z), σ² I)`` with D = 2 (or 5). Φ is the
standard normal CDF. The ``conditions`` attribute says which of 004 Section 5.1's conditions
(1: posteriors poorly approximated by a mean-field Gaussian for many x; 2: no alternative f
with simpler posteriors explains p(x)) the paper states the example triggers.
"""

from __future__ import annotations

import math

import torch
from torch.special import ndtr

from pyro_vae.datasets.base import Dataset

#: 004 Section 8, footnote 3: the linear map embedding the 2-D examples in 5-D.
EMBED_5D = ((1.0, 0.0, 0.5, 0.2, -0.8), (0.0, 1.0, -0.5, 0.3, -0.1))


class _AppendixG(Dataset):
    """The 004 App. G examples: generated from a fitted surrogate when ``surrogate=True``."""

    supports_surrogate = True


class Figure8(_AppendixG):
    """Figure-8 example, 004 App. G.1, Eq. 33 (σ² = 0.02).

    ``u(z) = (0.6 + 1.8 Φ(z)) π``,
    ``f(z) = [√2/2 · cos u / (sin² u + 1), √2 · cos u sin u / (sin² u + 1)]``: a lemniscate
    through the origin at z = 0, whose two ends (|z| ≥ 3) also lie near the origin.
    """

    name, obs_dim, noise_var = "figure8", 2, 0.02
    paper, conditions = "004 App. G.1, Eq. 33", "1 and 2"

    def true_f(self, z: torch.Tensor) -> torch.Tensor:
        u = (0.6 + 1.8 * ndtr(z)) * math.pi
        s, c = torch.sin(u), torch.cos(u)
        den = s**2 + 1
        return torch.cat([math.sqrt(2) / 2 * c / den, math.sqrt(2) * c * s / den], dim=-1)


class Circle(_AppendixG):
    """Circle example, 004 App. G.2, Eq. 34 (σ² = 0.01): ``f(z) = [cos 2πΦ(z), sin 2πΦ(z)]``."""

    name, obs_dim, noise_var = "circle", 2, 0.01
    paper, conditions = "004 App. G.2, Eq. 34", "2 only"

    def true_f(self, z: torch.Tensor) -> torch.Tensor:
        angle = 2 * math.pi * ndtr(z)
        return torch.cat([torch.cos(angle), torch.sin(angle)], dim=-1)


class AbsoluteValue(_AppendixG):
    """Absolute-Value example, 004 App. G.3 (σ² = 0.01), in its two-to-one form.

    ``f(z) = [|2Φ(z) − 1|, |2Φ(z) − 1|]``, so ``f(z) = f(−z)``.

    Eq. 35 prints ``f(z) = [|Φ(z)|, |Φ(z)|]``, which is one-to-one (Φ > 0), while the text
    (004 §6, "A Non-Linear Example") says ``f(z) = |z|``, "two values of z could have
    generated every x" and the ground-truth posteriors are bimodal. We follow the text, and
    keep Eq. 35's scale: since Φ(z) ~ U(0, 1), ``|2Φ(z) − 1|`` ~ U(0, 1) too, so this f gives
    exactly the same p(x) as the printed one. The printed f is then the "alternative
    likelihood function that explains p(x) equally well and has simpler posterior" of
    App. G.3 (Figure 9b), which is why only condition (1) holds.
    """

    name, obs_dim, noise_var = "absolute_value", 2, 0.01
    paper, conditions = "004 App. G.3, Eq. 35 (two-to-one form, see docstring)", "1 only"

    def true_f(self, z: torch.Tensor) -> torch.Tensor:
        v = torch.abs(2 * ndtr(z) - 1)
        return torch.cat([v, v], dim=-1)


def _steps(u: torch.Tensor, height: float) -> torch.Tensor:
    """``height · tanh(10u − 20⌊u/2⌋ − 10) + 2·height·⌊u/2⌋ + height``: smoothed steps."""
    k = torch.floor(u / 2)
    return height * torch.tanh(10 * u - 20 * k - 10) + 2 * height * k + height


class Clusters(_AppendixG):
    """Clusters example, 004 App. G.4, Eq. 36 (σ² = 0.2): a step function on a circle.

    ``u(z) = 2π / (1 + exp(−πz/2))``, ``t(u) = 2 tanh(10u − 20⌊u/2⌋ − 10) + 4⌊u/2⌋ + 2``,
    ``f(z) = [cos t, sin t]`` (⌊·⌋ is the floor; its gradient is zero).
    """

    name, obs_dim, noise_var = "clusters", 2, 0.2
    paper, conditions = "004 App. G.4, Eq. 36", "1 and 2"

    def true_f(self, z: torch.Tensor) -> torch.Tensor:
        t = _steps(2 * math.pi * torch.sigmoid(0.5 * math.pi * z), 2.0)
        return torch.cat([torch.cos(t), torch.sin(t)], dim=-1)


class SpiralDots(_AppendixG):
    """Spiral-Dots example, 004 App. G.5, Eq. 37 (σ² = 0.01): a step function on a spiral.

    ``u(z) = 4π / (1 + exp(−πz/2))``, ``t(u) = tanh(10u − 20⌊u/2⌋ − 10) + 2⌊u/2⌋ + 1``,
    ``f(z) = [t cos t, t sin t]``. The paper states the posterior is multi-modal and the
    VAE compromises p(x) for simpler posteriors, hence conditions "1 and 2".
    """

    name, obs_dim, noise_var = "spiral_dots", 2, 0.01
    paper, conditions = "004 App. G.5, Eq. 37", "1 and 2"

    def true_f(self, z: torch.Tensor) -> torch.Tensor:
        t = _steps(4 * math.pi * torch.sigmoid(0.5 * math.pi * z), 1.0)
        return torch.cat([t * torch.cos(t), t * torch.sin(t)], dim=-1)


class _Embedded5D(Dataset):
    """A 2-D App. G example mapped to 5-D: ``x = f(z)ᵀ A + ε`` (004 §8, footnote 3).

    ``A = EMBED_5D`` (2 × 5); σ² is the 2-D example's. With ``surrogate=True`` the 2-D
    function is the fitted surrogate (cached under the 2-D name; see ``self.inner``),
    which is then embedded.
    """

    supports_surrogate = True
    base: type[Dataset] = Dataset
    obs_dim = 5

    def __init__(self, surrogate: bool = False, surrogate_max_steps: int = 20000,
                 surrogate_seed: int = 0, cache_dir: str | None = None):
        super().__init__(False, surrogate_max_steps, surrogate_seed, cache_dir)
        self.surrogate = surrogate
        self.inner = self.base(surrogate, surrogate_max_steps, surrogate_seed, cache_dir)
        self.noise_var = self.inner.noise_var

    def _embed(self, y: torch.Tensor) -> torch.Tensor:
        return y @ torch.as_tensor(EMBED_5D, dtype=y.dtype, device=y.device)

    def true_f(self, z: torch.Tensor) -> torch.Tensor:
        return self._embed(self.inner.true_f(z))

    def f(self, z: torch.Tensor) -> torch.Tensor:
        return self._embed(self.inner.f(z))


class Figure8In5D(_Embedded5D):
    """Figure-8 example embedded in 5-D (004 §8 Case B, footnote 3; σ² = 0.02)."""

    name, base, noise_var = "figure8_5d", Figure8, 0.02
    paper, conditions = "004 §8 footnote 3 (App. G.1 embedded in 5-D)", "1 and 2"


class ClustersIn5D(_Embedded5D):
    """Clusters example embedded in 5-D (004 §8 Case B, footnote 3; σ² = 0.2)."""

    name, base, noise_var = "clusters_5d", Clusters, 0.2
    paper, conditions = "004 §8 footnote 3 (App. G.4 embedded in 5-D)", "1 and 2"
