"""Three values of the observation noise σ² for one learned decoder (004 §8 Case A, §9 item 2).

- the model's own σ² (learned jointly with the ELBO, or fixed by the user);
- Eq. 9's ELBO-optimal σ² for the model and guide,
  ``σ²_d = (1/N) Σ_n E_q(z|x_n)[(x_nd − f(z)_d)²]`` (:func:`pyro_vae.metrics.noise.elbo_noise_var`),
  which a poor q inflates;
- the σ² that maximises the held-out log-likelihood ``Σ_n log p_θ(x_n)`` with f fixed, over a
  grid of multiples ``c · σ²_model``, by defensive importance sampling with one set of draws
  shared by every c (:func:`.marginal.defensive_profile`): the "unbiased low-variance
  log-likelihood estimator" of guideline 2, applied as a profile over σ² rather than a
  retraining per value.
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Sequence

import torch

from pyro_vae.diagnose.marginal import defensive_profile
from pyro_vae.diagnose.probe import ModelProbe, seeded
from pyro_vae.metrics.noise import elbo_noise_var

__all__ = ["NoiseProfile", "noise_profile", "DEFAULT_MULTIPLIERS"]

DEFAULT_MULTIPLIERS = tuple(2.0 ** (k / 4) for k in range(-12, 13))  # 1/8 … 8, four per octave


class NoiseProfile(NamedTuple):
    """σ² per dimension (D,) float64 and the held-out log-likelihood profile.

    ``log_lik`` is (C, N): per multiplier, per held-out point; ``best`` indexes the maximum.
    """

    model: torch.Tensor
    elbo_optimal: torch.Tensor
    multipliers: torch.Tensor
    log_lik: torch.Tensor
    method: str
    best: int

    @property
    def loglik_optimal(self) -> torch.Tensor:
        return self.model * self.multipliers[self.best]

    @property
    def mean_log_lik(self) -> torch.Tensor:
        return self.log_lik.mean(1)

    def gain_se(self) -> tuple[float, float]:
        """Gain in mean held-out log-lik of the best multiplier over c = 1, and its paired SE."""
        one = int(torch.argmin((self.multipliers.log()).abs()))
        diff = self.log_lik[self.best] - self.log_lik[one]
        n = diff.shape[0]
        return float(diff.mean()), float(diff.std() / n**0.5) if n > 1 else float("nan")


def noise_profile(
    model: Callable,
    guide: Callable,
    x: torch.Tensor,
    *,
    multipliers: Sequence[float] = DEFAULT_MULTIPLIERS,
    num_samples: int = 1000,
    elbo_samples: int = 100,
    seed: int = 0,
) -> NoiseProfile:
    """The model's σ², Eq. 9's, and the held-out log-likelihood over ``c · σ²`` (module docstring).

    Parameters
    ----------
    model, guide : callable
        Unbatched Pyro programs with a Gaussian likelihood whose σ² does not depend on z.
    x : Tensor (N, D)
        Held-out points (validation data in the papers' protocol).
    multipliers : sequence of float
        The grid of ``c``; must contain 1.
    num_samples : int
        Importance samples per point.
    elbo_samples : int
        Draws of q per point for Eq. 9.
    seed : int

    References
    ----------
    004 Eq. 9 and App. C.2 (Eq. 31); 004 §9 guideline 2.
    """
    mult = torch.as_tensor(sorted(float(c) for c in multipliers), dtype=torch.float64)
    if not bool((mult > 0).all()) or not bool(torch.isclose(mult, torch.ones((), dtype=mult.dtype)).any()):
        raise ValueError(f"multipliers={list(multipliers)!r}: expected positive numbers including 1")
    probe = ModelProbe(model, guide, x)
    if probe.noise_var is None:
        raise ValueError("the model's σ² varies with z: the noise check needs a homoscedastic Gaussian likelihood")
    with seeded(seed), torch.no_grad():
        z, _ = probe.guide_draws(x, elbo_samples)
        elbo_sigma2 = elbo_noise_var(x, probe.f(z)).cpu()
        log_lik = defensive_profile(probe, x, mult, num_samples)
    best = int(log_lik.mean(1).argmax())
    return NoiseProfile(probe.noise_var.cpu(), elbo_sigma2, mult, log_lik, "importance", best)
