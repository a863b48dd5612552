"""1-D illustrations of 004 Section 5.2: the Figure 2 variants and the floor model of Eq. 7.

The paper gives no observation noise for these; ours are documented per class and can be
changed with the ``noise_var`` parameter.
"""

from __future__ import annotations

import torch

from pyro_vae.datasets.base import Dataset, check_positive

#: Our choice of σ² for the Figure 2 variants (the paper gives none): f ranges over
#: [0, 0.25], and σ = 0.032 (1/8 of that range) keeps Variant 1's posteriors visibly bimodal.
VARIANT_NOISE_VAR = 1e-3
#: Our choice of σ² for Eq. 7 (the paper gives none): σ = 0.1 separates the unit steps of ⌊z⌋.
FLOOR_NOISE_VAR = 1e-2


class _Variant(Dataset):
    """Figure 2 of 004: ``z ~ U(0, 1)``, ``x | z ~ N(f(z), σ²)``, K = D = 1.

    All three variants have the same ``p(x)``: ``f(z)`` is the square of a U(−1/2, 1/2) or
    U(0, 1/2) variable in each case. σ² defaults to ``VARIANT_NOISE_VAR`` = 1e-3 (our choice).
    """

    latent_dim, obs_dim, prior = 1, 1, "uniform"

    def __init__(self, noise_var: float = VARIANT_NOISE_VAR):
        super().__init__()
        self.noise_var = check_positive("noise_var", noise_var)
        self.params = {"noise_var": self.noise_var}


class Variant1(_Variant):
    """Variant 1 of 004 Figure 2: ``f(z) = (z − 0.5)²`` (two-to-one, bimodal posteriors)."""

    name, paper, conditions = "variant1", "004 §5.2, Figure 2 (a)", "1 only"

    def true_f(self, z: torch.Tensor) -> torch.Tensor:
        return (z - 0.5) ** 2


class Variant2(_Variant):
    """Variant 2 of 004 Figure 2: ``f(z) = 0.25 z²`` (one-to-one, nearly Gaussian posteriors)."""

    name, paper, conditions = "variant2", "004 §5.2, Figure 2 (b)", "neither"

    def true_f(self, z: torch.Tensor) -> torch.Tensor:
        return 0.25 * z**2


class Variant3(_Variant):
    """Variant 3 of 004 Figure 2: ``f(z) = I(z < 0.5)(2z − 0.5)² + I(z ≥ 0.5)(2z − 1.5)²``."""

    name, paper, conditions = "variant3", "004 §5.2, Figure 2 (c)", "1 only"

    def true_f(self, z: torch.Tensor) -> torch.Tensor:
        return torch.where(z < 0.5, (2 * z - 0.5) ** 2, (2 * z - 1.5) ** 2)


class Floor(Dataset):
    """Floor model, 004 Eq. 7: ``z ~ N(0, 1)``, ``x | z ~ N(⌊z⌋, σ²)``, K = D = 1.

    σ² defaults to ``FLOOR_NOISE_VAR`` = 0.01 (our choice; the paper gives none). ``f`` is a
    step function: its gradient is zero almost everywhere.
    """

    name, latent_dim, obs_dim = "floor", 1, 1
    paper, conditions = "004 §5.3, Eq. 7", "1 and 2"

    def __init__(self, noise_var: float = FLOOR_NOISE_VAR):
        super().__init__()
        self.noise_var = check_positive("noise_var", noise_var)
        self.params = {"noise_var": self.noise_var}

    def true_f(self, z: torch.Tensor) -> torch.Tensor:
        return torch.floor(z)
