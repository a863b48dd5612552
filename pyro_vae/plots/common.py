"""Shared pieces of the figure panels: figures without pyplot, PNG bytes, colour-coded curves.

Every panel builds a :class:`matplotlib.figure.Figure` attached to an Agg canvas directly
(no ``pyplot`` global state, no backend switching), so panels can be made from threads and
library code and are garbage-collected like any other object.
"""

from __future__ import annotations

import io
from typing import Sequence

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

DPI = 110


def new_figure(nrows: int, ncols: int, *, width: float = 3.6, height: float = 3.2) -> tuple[Figure, np.ndarray]:
    """A Figure with an Agg canvas and an ``(nrows, ncols)`` array of axes (constrained layout)."""
    fig = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


def figure_png_bytes(fig: Figure, *, dpi: int = DPI) -> bytes:
    """The figure rendered as PNG bytes."""
    if not isinstance(fig, Figure):
        raise ValueError(f"fig of type {type(fig).__name__}: expected a matplotlib.figure.Figure")
    if fig.canvas is None or not hasattr(fig.canvas, "print_png"):
        FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def to_numpy(t) -> np.ndarray:
    """A float64 NumPy copy of a tensor or array (detached, on the CPU)."""
    if isinstance(t, torch.Tensor):
        return t.detach().cpu().double().numpy()
    return np.asarray(t, dtype=float)


def colored_line(ax, x: np.ndarray, y: np.ndarray, c: np.ndarray, *, cmap: str = "viridis",
                 norm: Normalize | None = None, linewidth: float = 2.0) -> LineCollection:
    """Draw the polyline ``(x, y)`` with each segment coloured by ``c`` (its start value)."""
    pts = np.stack([x, y], axis=-1)[:, None, :]
    segments = np.concatenate([pts[:-1], pts[1:]], axis=1)
    norm = norm or Normalize(float(np.min(c)), float(np.max(c)))
    lc = LineCollection(segments, cmap=cmap, norm=norm, linewidths=linewidth)
    lc.set_array(np.asarray(c[:-1], dtype=float))
    ax.add_collection(lc)
    return lc


def format_point(values: Sequence[float], digits: int = 2) -> str:
    """``(0.10, -0.20)``."""
    return "(" + ", ".join(f"{v:.{digits}f}" for v in values) + ")"


def check_positive_int(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name}={value!r}: expected an integer >= {minimum}")
    return int(value)


def check_range_pair(name: str, value) -> tuple[float, float]:
    """A pair ``(lo, hi)`` of finite numbers with ``lo < hi``."""
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}={value!r}: expected a pair (lo, hi) of numbers") from None
    if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
        raise ValueError(f"{name}={value!r}: expected finite numbers with lo < hi")
    return lo, hi


def check_unbatched(name: str, model) -> None:
    """A restart-batched model or guide cannot be drawn: ask for one restart."""
    if getattr(model, "num_restarts", None):
        raise ValueError(f"{name} is restart-batched (num_restarts={model.num_restarts}): select one restart "
                         f"first (pyro_vae.nets.select_restart)")
