"""Shared test helpers: tolerances, seeds and device markers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def to_numpy(value) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().double().numpy()
    return np.asarray(value, dtype=float)


def assert_close(actual, expected, *, atol: float = 0.0, rtol: float = 1e-6, msg: str = "") -> None:
    """``|actual - expected| <= atol + rtol * |expected|`` elementwise, with a readable failure."""
    a, e = to_numpy(actual), to_numpy(expected)
    assert a.shape == e.shape or a.size == e.size == 1, f"shape {a.shape} != {e.shape} {msg}"
    err = np.abs(a - e)
    tol = atol + rtol * np.abs(e)
    bad = err > tol
    assert not bad.any(), (
        f"{msg}: max |diff| {err.max():.3g} exceeds tolerance at {int(bad.sum())} of {bad.size} "
        f"entries; actual={a.ravel()[:5]}, expected={e.ravel()[:5]}"
    )


def assert_within_se(estimate: float, truth: float, se: float, *, k: float = 4.0, msg: str = "") -> None:
    """A stochastic estimate lies within ``k`` standard errors of the truth."""
    assert se > 0, f"{msg}: standard error must be positive, got {se}"
    z = abs(estimate - truth) / se
    assert z <= k, f"{msg}: estimate {estimate:.6g} vs truth {truth:.6g} is {z:.2f} SE away (limit {k})"


class PerRestartNoise:
    """Reparameterisation noise drawn from one generator per restart, so that restart r of a
    batched run (or of a group of runs) and a single run of restart r see the same noise.

    Use with ``monkeypatch.setattr(dist.Normal, "rsample", lambda self, s=torch.Size(): noise.rsample(self, s))``;
    ``reset(single=r)`` before the single run of restart r.
    """

    def __init__(self, restarts: int, single: int | None = None, base_seed: int = 100):
        self.restarts, self.base_seed = restarts, base_seed
        self.reset(single)

    def reset(self, single: int | None = None) -> None:
        self.gens = [torch.Generator().manual_seed(self.base_seed + r) for r in range(self.restarts)]
        self.single = single

    def rsample(self, normal, sample_shape=torch.Size()):
        shape = normal._extended_shape(sample_shape)
        per = shape[:-3] + shape[-2:]
        if self.single is not None and len(shape) < 3:
            eps = torch.randn(shape, generator=self.gens[self.single])
        elif self.single is not None:
            eps = torch.randn(per, generator=self.gens[self.single]).unsqueeze(-3)
        else:
            eps = torch.stack([torch.randn(per, generator=g) for g in self.gens], dim=-3)
        return normal.loc + eps.expand(shape) * normal.scale
