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
