"""Input conversion and validation shared by the metrics."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

ArrayLike = Any  # NumPy array, torch tensor or nested sequence of floats


def as_numpy_2d(name: str, value: ArrayLike, *, min_rows: int = 1) -> np.ndarray:
    """Return ``value`` as a float64 array of shape ``(n, d)``; a 1-D input becomes ``(n, 1)``."""
    if isinstance(value, torch.Tensor):
        arr = value.detach().cpu().double().numpy()
    else:
        arr = np.asarray(value, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 1-D or 2-D array (n,) or (n, d); got shape {tuple(arr.shape)}")
    if arr.shape[0] < min_rows or arr.shape[1] < 1:
        raise ValueError(f"{name} must have at least {min_rows} rows and 1 column; got shape {tuple(arr.shape)}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite; got {int((~np.isfinite(arr)).sum())} non-finite entries")
    return arr


def as_tensor_2d(name: str, value: ArrayLike, *, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Return ``value`` as a tensor of shape ``(n, d)`` (keeping its device); 1-D becomes ``(n, 1)``."""
    if not isinstance(value, torch.Tensor):
        value = torch.tensor(np.asarray(value, dtype=np.float64))
    if dtype is not None:
        value = value.to(dtype)
    elif not value.is_floating_point():
        value = value.double()
    if value.dim() == 1:
        value = value.unsqueeze(-1)
    if value.dim() != 2:
        raise ValueError(f"{name} must be a 1-D or 2-D tensor (n,) or (n, d); got shape {tuple(value.shape)}")
    if value.shape[0] < 1 or value.shape[1] < 1:
        raise ValueError(f"{name} must have at least one row and one column; got shape {tuple(value.shape)}")
    return value


def check_int(name: str, value: Any, *, minimum: int, maximum: int | None = None) -> int:
    """``value`` is an integer in ``[minimum, maximum]``; returns it as ``int``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer; got {value!r}")
    value = int(value)
    if value < minimum or (maximum is not None and value > maximum):
        allowed = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        raise ValueError(f"{name} must be {allowed}; got {value}")
    return value


def check_positive(name: str, value: Any) -> float:
    """``value`` is a finite positive real number; returns it as ``float``."""
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a positive number; got {value!r}") from None
    if not np.isfinite(out) or out <= 0:
        raise ValueError(f"{name} must be a finite positive number; got {value!r}")
    return out


def decoder_dtype_device(f: Any, default: torch.Tensor) -> tuple[torch.dtype, torch.device]:
    """dtype and device of ``f``'s parameters if it is a module with any, else ``default``'s."""
    if isinstance(f, torch.nn.Module):
        for param in f.parameters():
            return param.dtype, param.device
    return default.dtype, default.device
