"""The ELBO and the log-likelihood of models with different latent dimensions K (004 §8 Case B).

004 Table 1: on Figure-8 and Clusters embedded in 5-D the MFG-VAE's ELBO prefers K = 2 or 3
(with a smaller σ²) over the true K = 1, while the IWAE does not. Given one trained model per K,
:func:`latent_dimension_table` reports, on the same held-out points, each model's ELBO, its IWAE
bound (q as proposal) and ``log p_θ(x)`` (quadrature when K ≤ 2, else defensive importance
sampling, :mod:`.marginal`), with standard errors of the differences to the best K.
"""

from __future__ import annotations

from typing import Callable, Mapping, NamedTuple

import torch

from pyro_vae.diagnose.posterior import posterior_gap
from pyro_vae.diagnose.probe import ModelProbe

__all__ = ["LatentRow", "latent_dimension_table", "preferred"]


class LatentRow(NamedTuple):
    """One K: per-point ELBO, IWAE bound and log p_θ(x) (N,), and the model's mean σ²."""

    k: int
    elbo: torch.Tensor
    iwae: torch.Tensor
    log_lik: torch.Tensor
    log_lik_method: str
    noise_var_mean: float


def latent_dimension_table(
    models: Mapping[int, tuple[Callable, Callable]], x: torch.Tensor, *, num_particles: int = 1000, seed: int = 0
) -> list[LatentRow]:
    """Bounds of each ``models[K] = (model, guide)`` on the held-out ``x``, sorted by K."""
    if len(models) < 2:
        raise ValueError(f"latent dimensions {sorted(models)}: compare at least two values of K")
    rows = []
    for k in sorted(models):
        model, guide = models[k]
        probe = ModelProbe(model, guide, x)
        if probe.latent_dim != k:
            raise ValueError(f"models[{k}] has a {probe.latent_dim}-dimensional latent space")
        gap = posterior_gap(model, guide, x, num_particles=num_particles, seed=seed)
        sigma2 = float(probe.noise_var.mean()) if probe.noise_var is not None else float("nan")
        rows.append(LatentRow(k, gap.elbo, gap.iwae, gap.log_lik, gap.log_lik_method, sigma2))
    return rows


def preferred(rows: list[LatentRow], field: str) -> tuple[int, dict[int, tuple[float, float]]]:
    """The K with the highest mean ``field`` ("elbo", "iwae" or "log_lik"), and per K the
    difference of its mean to that best K with the paired standard error."""
    means = {r.k: float(getattr(r, field).mean()) for r in rows}
    best = max(means, key=means.get)
    ref = next(r for r in rows if r.k == best)
    diffs = {}
    for r in rows:
        d = getattr(r, field) - getattr(ref, field)
        diffs[r.k] = (float(d.mean()), float(d.std() / d.shape[0] ** 0.5) if d.shape[0] > 1 else float("nan"))
    return best, diffs
