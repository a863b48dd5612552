"""The papers' figure panels as matplotlib Figures, and one function that writes a PNG.

Each panel returns a :class:`matplotlib.figure.Figure` (built without pyplot's global state);
the caller decides where it goes:

>>> from pyro_vae.datasets import get_dataset
>>> from pyro_vae.plots import density_panel, save_png
>>> fig = density_panel(get_dataset("circle"))
>>> save_png(fig, "circle.png")                        # doctest: +SKIP

Panels
------
- :func:`density_panel`: true vs learned ``p(x)`` with ``f(z)`` coloured by z (004 Figure 4, App. I (a)).
- :func:`posterior_panel`: ``p(z | x)`` under the true and learned f, and ``q(z | x)`` (004 App. I (c, d)).
- :func:`aggregate_posterior_panel`: ``q(z)`` vs the prior (000 Figure 1E/F).
- :func:`m2_panel`: ``f(z, y)`` per y and ``p(x | y)`` per cohort (004 App. H, Figures 17-22).
- :func:`landscape_panel` with :func:`linear_jte_landscape`: objectives over B (000 Figure 1A/B).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Mapping, NamedTuple, Sequence

import numpy as np
import torch
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from pyro_vae.io import atomic_write_bytes
from pyro_vae.plots.common import check_positive_int, check_range_pair, figure_png_bytes, new_figure, to_numpy
from pyro_vae.plots.density import DensityImage, default_extent, density_image, density_panel
from pyro_vae.plots.posterior import aggregate_posterior_panel, posterior_panel

__all__ = [
    "DensityImage",
    "LinearJTELandscape",
    "aggregate_posterior_panel",
    "default_extent",
    "density_image",
    "density_panel",
    "figure_png_bytes",
    "landscape_panel",
    "linear_jte_landscape",
    "m2_panel",
    "posterior_panel",
    "save_png",
]


def save_png(fig: Figure, path: str | os.PathLike, *, dpi: int = 110) -> Path:
    """Render ``fig`` as PNG and write it to ``path`` atomically; returns the path written.

    Raises
    ------
    ValueError
        If ``path`` does not end in ``.png`` (nothing is rendered or written).
    """
    if not str(path).lower().endswith(".png"):
        raise ValueError(f"path={str(path)!r}: expected a file name ending in .png")
    return atomic_write_bytes(path, figure_png_bytes(fig, dpi=dpi))


# ---------------------------------------------------------------------------- M2: f(z, y)
def _labels(label_values) -> dict[str, torch.Tensor]:
    items = label_values.items() if isinstance(label_values, Mapping) else ((None, y) for y in label_values)
    out = {}
    for name, y in items:
        y = torch.as_tensor(y, dtype=torch.get_default_dtype()).reshape(-1)
        if y.numel() < 1 or not bool(torch.isfinite(y).all()):
            raise ValueError(f"label_values: {y.tolist()!r} is not a finite label vector")
        if name is None:
            one_hot = y.numel() > 1 and bool(((y == 0) | (y == 1)).all()) and float(y.sum()) == 1.0
            name = f"y = {int(y.argmax())}" if one_hot else "y = " + ", ".join(f"{v:.2g}" for v in y.tolist())
        out[str(name)] = y
    if not out:
        raise ValueError("label_values: expected at least one label value")
    if len({y.numel() for y in out.values()}) != 1:
        raise ValueError("label_values: expected label vectors of one length")
    return out


def m2_panel(
    f: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    *,
    label_values: Sequence | Mapping[str, object],
    z_range: tuple[float, float] = (-3.0, 3.0),
    samples: Mapping[str, torch.Tensor] | None = None,
    num_points: int = 400,
) -> Figure:
    """``f(z, y)`` for each ``y`` as a curve in x-space, and ``p(x | y)`` per cohort as samples.

    Axes: the curves in x-space; for D ≥ 2 the first two coordinates of ``f`` against z (two
    labels can trace the same curve at different speeds, as the semi-circles do, and
    "functional collapse" is when they coincide as functions of z); with ``samples``, the
    draws of x per cohort. Works for any ``f(z, y)``: a labelled data set's true ``f``
    (one-hot ``y`` of shape (…, 2) for ``discrete_semicircle``, ``y`` of shape (…, 1) for
    ``continuous_semicircle``) or a learned M2 decoder. Curves are coloured by y (by value for scalar labels, by order
    otherwise), with dots at z = −2, −1, 0, 1, 2 to show how fast f moves along z.

    Parameters
    ----------
    f : callable
        ``(n, 1) latents, (n, L) labels -> (n, D)``.
    label_values : sequence of label vectors, or dict of name to label vector
        The ``y`` to draw (e.g. ``[[1, 0], [0, 1]]`` or ``{"y = 0.5": [0.5]}``).
    z_range : pair of float
    samples : dict of str to Tensor (n, D), optional
        Draws of x per cohort (e.g. per label); a cohort named like a label shares its colour.
    num_points : int
        Points along each curve.

    Returns
    -------
    matplotlib.figure.Figure
        Two axes for D ≥ 2 (one for D = 1), plus one with ``samples``.

    References
    ----------
    004 Appendix H (Eqs. 38-39) and Figures 17-22.
    """
    if not callable(f):
        raise ValueError(f"f of type {type(f).__name__}: expected a callable f(z, y)")
    labels = _labels(label_values)
    lo, hi = check_range_pair("z_range", z_range)
    num_points = check_positive_int("num_points", num_points, 2)
    if samples is not None:
        if not isinstance(samples, Mapping) or not samples:
            raise ValueError("samples: expected a non-empty dict {cohort: x tensor (n, D)}")
        for name, xs in samples.items():
            if not isinstance(xs, torch.Tensor) or xs.dim() != 2:
                raise ValueError(f"samples[{name!r}] of shape {tuple(getattr(xs, 'shape', ()))}: expected (n, D)")
    z = torch.linspace(lo, hi, num_points)[:, None]
    marks = torch.arange(max(-2, int(np.ceil(lo))), min(2, int(np.floor(hi))) + 1, dtype=z.dtype)[:, None]
    curves = {}
    with torch.no_grad():
        for name, y in labels.items():
            curves[name] = (to_numpy(f(z, y.expand(num_points, -1))), to_numpy(f(marks, y.expand(len(marks), -1))))
    scalar = next(iter(labels.values())).numel() == 1 and len(labels) > 2
    values = [float(y[0]) for y in labels.values()]
    norm = Normalize(min(values), max(values)) if scalar else None
    colours = {name: ("viridis", norm(v)) if scalar else ("tab10", i % 10) for i, (name, v) in
               enumerate(zip(labels, values))}

    def colour(name, i):
        from matplotlib import colormaps

        cmap, v = colours.get(name, ("tab10", (len(labels) + i) % 10))
        return colormaps[cmap](v)

    d = next(iter(curves.values()))[0].shape[1]
    fig, axes = new_figure(1, (2 if d > 1 else 1) + bool(samples), width=4.0, height=3.6)
    ax = axes[0, 0]
    for i, (name, (xs, xm)) in enumerate(curves.items()):
        c = colour(name, i)
        if d == 1:
            ax.plot(to_numpy(z[:, 0]), xs[:, 0], color=c, label=name)
            ax.plot(to_numpy(marks[:, 0]), xm[:, 0], "o", color=c, markersize=3)
        else:
            ax.plot(xs[:, 0], xs[:, 1], color=c, label=name)
            ax.plot(xm[:, 0], xm[:, 1], "o", color=c, markersize=3)
    if scalar:
        from matplotlib.cm import ScalarMappable

        fig.colorbar(ScalarMappable(norm=norm, cmap="viridis"), ax=ax, label="y", shrink=0.8)
    else:
        ax.legend(fontsize=7)
    ax.set_xlabel("z" if d == 1 else "x₁")
    ax.set_ylabel("x" if d == 1 else "x₂")
    ax.set_title(f"f(z, y) for z in [{lo:g}, {hi:g}] (dots: integer z)", fontsize=9)
    if d > 1:  # the same curve in x-space can be two functions of z: show each coordinate against z
        axz = axes[0, 1]
        for i, (name, (xs, _)) in enumerate(curves.items()):
            c = colour(name, i)
            axz.plot(to_numpy(z[:, 0]), xs[:, 0], color=c, label=f"{name}: x₁" if i == 0 else None)
            axz.plot(to_numpy(z[:, 0]), xs[:, 1], color=c, linestyle="--", label=f"{name}: x₂" if i == 0 else None)
        axz.set_xlabel("z")
        axz.set_ylabel("f(z, y)")
        axz.set_title("f(z, y) against z (x₁ solid, x₂ dashed)", fontsize=9)
    if samples:
        ax2 = axes[0, -1]
        for i, (name, xs) in enumerate(samples.items()):
            x = to_numpy(xs)
            if x.shape[1] == 1:
                ax2.hist(x[:, 0], bins=50, density=True, alpha=0.5, color=colour(str(name), i), label=str(name))
            else:
                ax2.scatter(x[:, 0], x[:, 1], s=3, alpha=0.4, color=colour(str(name), i), label=str(name))
        ax2.set_xlabel("x₁" if d > 1 else "x")
        ax2.set_ylabel("x₂" if d > 1 else "density")
        ax2.set_title("p(x | y) per cohort (samples)", fontsize=9)
        ax2.legend(fontsize=7, markerscale=3)
        if d > 1:
            xl = (min(ax.get_xlim()[0], ax2.get_xlim()[0]), max(ax.get_xlim()[1], ax2.get_xlim()[1]))
            yl = (min(ax.get_ylim()[0], ax2.get_ylim()[0]), max(ax.get_ylim()[1], ax2.get_ylim()[1]))
            for a in (ax, ax2):
                a.set_xlim(*xl)
                a.set_ylim(*yl)
    return fig


# ---------------------------------------------------------------------------- 000 Figure 1A/B
class LinearJTELandscape(NamedTuple):
    """Closed-form objectives of the case2 family over ``B = diag(b1_i, b2_j)`` (float64 arrays).

    ``pmo[i, j]`` is ``min_φ KL(q_φ ‖ p_θ(z | x))`` at the best mean-field guide, the ``L(θ, φ)``
    of 000 Figure 1A (the MLE objective is 0 for every B, so −ELBO = H(p_data) + PMO);
    ``neg_elbo`` adds the data entropy; ``mutual_info`` is ``I_θ(X; Z)`` (000 Figure 1B).
    """

    b1: np.ndarray
    b2: np.ndarray
    pmo: np.ndarray
    neg_elbo: np.ndarray
    mutual_info: np.ndarray


def linear_jte_landscape(num: int = 25, *, b_values: Sequence[float] | None = None) -> LinearJTELandscape:
    """``L(θ, φ)``, −ELBO and ``I(X; Z)`` over diagonal B for the model of 000 Eq. 3.

    Every B with entries in [0, σ²) gives the same ``p(x) = N(0, AAᵀ + σ²I)`` (the ``case2``
    data set); the objectives are the closed forms of
    :mod:`pyro_vae.metrics.linear_gaussian` (000 App. C.2-C.3).

    Parameters
    ----------
    num : int
        Grid size per entry: ``b = σ² k / (num + 1)``, ``k = 1..num``.
    b_values : sequence of float, optional
        The entries to use instead (each in [0, σ²)), for both diagonal entries.

    Returns
    -------
    LinearJTELandscape

    References
    ----------
    000 Section 1, Eq. 3 and Figure 1A/B; App. C.2 (Eqs. 17-24), C.3 (Eqs. 25-27).
    """
    from pyro_vae.datasets import get_dataset
    from pyro_vae.datasets.jte import SIGMA2_JTE
    from pyro_vae.metrics import linear_gaussian as lg

    if b_values is None:
        num = check_positive_int("num", num)
        b = SIGMA2_JTE * np.arange(1, num + 1) / (num + 1)
    else:
        b = np.asarray(b_values, dtype=float).reshape(-1)
        if b.size < 1:
            raise ValueError("b_values: expected at least one value")
    shape = (b.size, b.size)
    pmo, neg_elbo, mi = np.empty(shape), np.empty(shape), np.empty(shape)
    for i, b1 in enumerate(b):
        for j, b2 in enumerate(b):
            ds = get_dataset("case2", b_diag=(float(b1), float(b2)))  # validates the range
            params = lg.linear_gaussian_params(ds)
            data = ds.marginal()
            pmo[i, j] = float(lg.optimal_pmo(params))
            neg_elbo[i, j] = -float(lg.optimal_mean_field_elbo(params, data_mean=data.loc,
                                                               data_cov=data.covariance_matrix))
            mi[i, j] = float(lg.mutual_information(params))
    return LinearJTELandscape(b.copy(), b.copy(), pmo, neg_elbo, mi)


def landscape_panel(
    values,
    b1,
    b2,
    *,
    title: str,
    colorbar_label: str | None = None,
    mark: str | None = "min",
    points: Mapping[str, tuple[float, float]] | None = None,
) -> Figure:
    """A heat map of ``values[i, j]`` at ``B = diag(b1[i], b2[j])`` (000 Figure 1A/B).

    ``b1`` (the upper-left entry of B) runs up the vertical axis and ``b2`` along the
    horizontal one, so the B that 000 Figure 1A finds preferred (high ``b1``, low ``b2``) is
    in the top-left corner, as there. The dashed line is the diagonal ``b1 = b2``; ``mark``
    puts a star on the grid's minimum or maximum, and ``points`` marks named B's (e.g.
    ``{"ground truth": (0.006, 0.006)}``).

    Parameters
    ----------
    values : array (len(b1), len(b2))
    b1, b2 : array
        Increasing grid values of the two diagonal entries.
    title : str
    colorbar_label : str, optional
    mark : {"min", "max", None}
    points : dict of str to (b1, b2), optional

    Returns
    -------
    matplotlib.figure.Figure
    """
    v, r, c = to_numpy(values), to_numpy(b1).reshape(-1), to_numpy(b2).reshape(-1)
    if v.shape != (r.size, c.size):
        raise ValueError(f"values of shape {v.shape}: expected (len(b1), len(b2)) = ({r.size}, {c.size})")
    if mark not in ("min", "max", None):
        raise ValueError(f"mark={mark!r}: expected 'min', 'max' or None")
    fig, axes = new_figure(1, 1, width=4.4, height=3.8)
    ax = axes[0, 0]
    mesh = ax.pcolormesh(c, r, v, shading="nearest", cmap="viridis")
    fig.colorbar(mesh, ax=ax, label=colorbar_label or "")
    lo, hi = min(r.min(), c.min()), max(r.max(), c.max())
    ax.plot([lo, hi], [lo, hi], color="w", linestyle="--", linewidth=1, label="b₁ = b₂")
    if mark is not None:
        i, j = np.unravel_index(np.nanargmin(v) if mark == "min" else np.nanargmax(v), v.shape)
        ax.plot(c[j], r[i], "*", color="tab:red", markersize=14, markeredgecolor="w",
                label=f"{mark} {v[i, j]:.3g} at b = ({r[i]:.3g}, {c[j]:.3g})")
    for k, (name, (p1, p2)) in enumerate((points or {}).items()):
        ax.plot(p2, p1, "o", color=f"C{k + 1}", markeredgecolor="w", label=str(name))
    ax.set_xlabel("B₂₂ (b₂)")
    ax.set_ylabel("B₁₁ (b₁)")
    ax.set_title(title, fontsize=10)
    fig.legend(loc="outside lower center", ncol=2, fontsize=7)
    return fig
