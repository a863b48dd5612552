"""The data marginal ``p(x)`` as an image, and the density panel of 004 Figures 4, 8a, 10a, 13a.

The image holds, in each pixel, the exact average of ``p(x) = ∫ N(x; f(z), diag σ²) p(z) dz``
over that pixel. The latent integral uses the rectangle rule on the prior grid of
:func:`pyro_vae.posterior.quadrature.latent_grid` (as
:func:`~pyro_vae.posterior.quadrature.log_marginal_quadrature` does), and the integral over
the pixel is exact because the noise is a diagonal Gaussian:

    mass(pixel ij) = Σ_g w_g [Φ((b_{i+1} − f_1(z_g))/σ_1) − Φ((b_i − f_1(z_g))/σ_1)] · [same along x_2],

a product of two ``(pixels, G)`` matrices. This costs one matrix product per grid instead of
one likelihood per pixel and grid point, and it stays faithful when σ is smaller than a pixel
(the mass lands in the right pixel instead of being missed between pixel centres). The
latent grid is refined (``M → 2M − 1`` points per axis) until the image changes by less than
``rtol`` of its maximum.

A diagonal Gaussian's marginal over ``(x_1, x_2)`` is the same expression restricted to those
coordinates, so for D > 2 the panel shows the exact marginal of the first two coordinates.
"""

from __future__ import annotations

import math
from typing import Mapping, NamedTuple

import numpy as np
import torch
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from pyro_vae.plots.common import (
    check_positive_int, check_range_pair, check_unbatched, colored_line, new_figure, to_numpy,
)
from pyro_vae.posterior.quadrature import latent_grid
from pyro_vae.posterior.target import likelihood_target

__all__ = ["DensityImage", "density_image", "density_panel", "default_extent"]

_CHUNK_ELEMENTS = 1 << 22
_F_CHUNK = 1 << 16


class DensityImage(NamedTuple):
    """Pixel-averaged ``p(x)`` over a box.

    Attributes
    ----------
    density : ndarray
        ``(n_2, n_1)`` for two coordinates (rows along ``x_2``, ready for ``imshow(origin="lower")``),
        ``(n_1,)`` for one.
    centres : tuple of ndarray
        Pixel centres along each coordinate.
    extent : tuple of float
        ``(lo_1, hi_1[, lo_2, hi_2])``.
    mass : float
        Probability inside the box (the image's integral).
    converged : bool
        The last refinement of the latent grid changed the image by at most ``rtol`` of its maximum.
    num_points : int
        Latent grid points per axis of the last refinement.
    """

    density: np.ndarray
    centres: tuple
    extent: tuple
    mass: float
    converged: bool
    num_points: int


def _cell_probs(edges: torch.Tensor, loc: torch.Tensor, sd: float) -> torch.Tensor:
    """``2 · P(edge_i < x < edge_i+1)`` for ``x ~ N(loc_g, sd²)``: ``(cells, G)``.

    As ``erf`` differences (twice the probability, to save a multiplication per entry); the
    absolute error is that of float64 arithmetic, which is what an image needs.
    """
    c = torch.erf((edges[:, None] - loc[None, :]) * (1.0 / (sd * math.sqrt(2.0))))
    return c[1:] - c[:-1]


def _cell_mass(edges: list[torch.Tensor], loc: torch.Tensor, sd: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``Σ_g w_g Π_d P_d(cell | g)``: ``(n_1,)`` or ``(n_1, n_2)``, in chunks of grid points."""
    cells = max(e.numel() - 1 for e in edges)
    shape = tuple(e.numel() - 1 for e in edges)
    out = torch.zeros(shape, dtype=loc.dtype)
    step = max(1, _CHUNK_ELEMENTS // cells)
    for start in range(0, loc.shape[0], step):
        sl = slice(start, start + step)
        p1 = _cell_probs(edges[0], loc[sl, 0], float(sd[0])) * (w[None, sl] / 2 ** len(edges))
        out += p1.sum(1) if len(edges) == 1 else p1 @ _cell_probs(edges[1], loc[sl, 1], float(sd[1])).T
    return out


def _useful_nodes(loc: torch.Tensor, log_w: torch.Tensor, edges: list[torch.Tensor], sd: torch.Tensor) -> torch.Tensor:
    """Grid points that can put mass in the box: finite ``f``, weight above 1e-15 of the
    largest, and ``f`` within 10 σ of the box along every shown coordinate."""
    keep = torch.isfinite(loc).all(-1) & (log_w > log_w.max() - 34.5)
    for d, e in enumerate(edges):
        keep &= (loc[:, d] > e[0] - 10 * sd[d]) & (loc[:, d] < e[-1] + 10 * sd[d])
    return keep


def density_image(
    source,
    extent: tuple[float, ...],
    grid_size: int = 200,
    *,
    dims: tuple[int, ...] = (0, 1),
    rtol: float = 1e-3,
    num_points: int | None = None,
    max_points: int | None = None,
    bound: float = 6.0,
) -> DensityImage:
    """``p(x)`` averaged over each pixel of a box, for a data set's truth or a learned model.

    Parameters
    ----------
    source : Dataset, VAEModel or PosteriorTarget
        Anything :func:`pyro_vae.posterior.target.likelihood_target` accepts (K ≤ 2).
    extent : tuple
        ``(lo_1, hi_1, lo_2, hi_2)`` for two coordinates, ``(lo_1, hi_1)`` for one.
    grid_size : int
        Pixels per coordinate.
    dims : tuple of int
        The one or two coordinates of x shown (the marginal over the others).
    rtol : float
        Stop refining the latent grid when the image changes by at most ``rtol · max``.
    num_points, max_points : int
        First and largest latent grid size per axis (defaults 1001/64001 for K = 1, 201/801 for K = 2).
    bound : float
        Half-width of the latent grid under the N(0, I) prior (the default 6 leaves out a prior
        mass of about 2e-9 per axis).

    Notes
    -----
    Each refinement costs about ``grid_size² · M^K`` multiply-adds: well under a second for
    K = 1, a few seconds for K = 2 at the defaults (up to ~10 s when the noise is tiny, as for
    ``mobius``, where the grid stops at ``max_points`` and the image reads as not converged
    only if it still moves by more than ``rtol``).

    Returns
    -------
    DensityImage

    References
    ----------
    004 Figure 4 and Appendix I (true vs learned ``p_θ(x)``); 000 Figure 1C/D.
    """
    target = likelihood_target(source)
    k = target.latent_dim
    if k not in (1, 2):
        raise ValueError(f"latent_dim={k}: the density image integrates over a 1-D or 2-D latent space")
    d = target.noise_var.numel()
    if len(dims) not in (1, 2) or len(set(dims)) != len(dims) or not all(0 <= i < d for i in dims):
        raise ValueError(f"dims={dims!r}: expected one or two distinct coordinates in [0, {d})")
    if len(extent) != 2 * len(dims):
        raise ValueError(f"extent={extent!r}: expected {2 * len(dims)} numbers for dims={dims!r}")
    boxes = [check_range_pair("extent", extent[2 * i : 2 * i + 2]) for i in range(len(dims))]
    grid_size = check_positive_int("grid_size", grid_size, 2)
    m = num_points or (1001 if k == 1 else 201)
    max_points = max_points or (64001 if k == 1 else 801)
    edges = [torch.linspace(lo, hi, grid_size + 1, dtype=torch.float64) for lo, hi in boxes]
    sd = target.noise_var[list(dims)].double().cpu().sqrt()
    previous, change = None, float("inf")
    while True:
        nodes, log_w = latent_grid(k, m, target.prior, bound, dtype=torch.float64)
        with torch.no_grad():
            loc = torch.cat([target.f(c.to(target.dtype)).detach().double().cpu()[:, list(dims)]
                             for c in torch.split(nodes, _F_CHUNK)])
        keep = _useful_nodes(loc, log_w, edges, sd)
        mass = _cell_mass(edges, loc[keep], sd, log_w[keep].exp())
        if previous is not None:
            change = float((mass - previous).abs().max() / mass.max().clamp_min(1e-300))
        converged = change <= rtol
        if converged or 2 * m - 1 > max_points:
            break
        previous, m = mass, 2 * m - 1
    area = float(np.prod([(hi - lo) / grid_size for lo, hi in boxes]))
    density = (mass / area).numpy()
    centres = tuple(to_numpy(0.5 * (e[1:] + e[:-1])) for e in edges)
    return DensityImage(density.T if len(dims) == 2 else density, centres,
                        tuple(v for box in boxes for v in box), float(mass.sum()), converged, m)


def default_extent(dataset, dims: tuple[int, ...] = (0, 1), *, num_samples: int = 5000, pad: float = 0.1,
                   seed: int = 0) -> tuple[float, ...]:
    """A box holding the data: the range of ``num_samples`` draws, padded by ``pad`` of its width."""
    x = to_numpy(dataset.sample(num_samples, seed)[0])[:, list(dims)]
    lo, hi = x.min(0), x.max(0)
    width = np.maximum(hi - lo, 1e-3)
    return tuple(float(v) for pair in zip(lo - pad * width, hi + pad * width) for v in pair)


def _f_curve(target, z_range: tuple[float, float], k: int, num: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    """``(z, f(z))`` as NumPy arrays along a line (K = 1) or on a 21 × 21 grid (K = 2).

    For K = 1 the ``num`` points are spaced evenly in ``(z + arc length of f) / 2`` (measured
    on 20001 points), so steep stretches of f are drawn smoothly and flat ones keep their z colours.
    """
    if k == 1:
        fine = torch.linspace(*z_range, 20001, dtype=torch.float64)
        with torch.no_grad():
            xf = to_numpy(target.f(fine[:, None].to(target.dtype)))
        step = np.linalg.norm(np.diff(xf, axis=0), axis=-1)
        step = np.where(np.isfinite(step), step, 0.0)
        arc = np.concatenate([[0.0], np.cumsum(step)])
        zf = to_numpy(fine)
        u = (zf - zf[0]) / (zf[-1] - zf[0]) + (arc / arc[-1] if arc[-1] > 0 else 0.0)
        z = torch.as_tensor(np.interp(np.linspace(u[0], u[-1], num), u, zf))[:, None]
    else:
        axis = torch.linspace(*z_range, 21, dtype=torch.float64)
        a, b = torch.meshgrid(axis, axis, indexing="ij")
        z = torch.stack([a.reshape(-1), b.reshape(-1)], -1)
    with torch.no_grad():
        x = target.f(z.to(target.dtype)).detach()
    return to_numpy(z), to_numpy(x)


def _sources(dataset, models) -> dict:
    if hasattr(dataset, "label_dim"):
        raise ValueError(f"dataset {dataset.name!r} has labels (f(z, y)): draw it with m2_panel")
    sources = {"true": dataset}
    if models is None:
        return sources
    if not isinstance(models, Mapping):
        raise ValueError(f"models of type {type(models).__name__}: expected a dict {{name: VAEModel}}")
    for name, model in models.items():
        check_unbatched(f"models[{name!r}]", model)
        if getattr(model, "obs_dim", None) != dataset.obs_dim:
            raise ValueError(f"models[{name!r}].obs_dim={getattr(model, 'obs_dim', None)!r}: "
                             f"expected the data set's obs_dim={dataset.obs_dim}")
        if getattr(model, "latent_dim", None) not in (1, 2):
            raise ValueError(f"models[{name!r}].latent_dim={getattr(model, 'latent_dim', None)!r}: "
                             f"the density needs a 1-D or 2-D latent space")
        if str(name) == "true":
            raise ValueError("models: the name 'true' is reserved for the data set's ground truth")
        sources[str(name)] = model
    return sources


def density_panel(
    dataset,
    models: Mapping[str, object] | None = None,
    *,
    grid_size: int = 200,
    extent: tuple[float, ...] | None = None,
    z_range: tuple[float, float] | None = None,
    cmap: str = "Greys",
) -> Figure:
    """True and learned ``p(x)`` with ``f(z)`` overlaid and coloured by z (004 Figure 4, App. I (a)).

    For 2-D x (or the first two coordinates of higher-dimensional x, where the image is the
    exact marginal of ``(x_1, x_2)``), one column per source: the truth, then each model,
    sharing the box; each image is scaled to its own maximum (densities of very different
    peaks stay visible; compare values with :func:`density_image`). ``f`` is drawn over ``z_range`` as a curve coloured
    by z when K = 1, as points on a 21 × 21 z grid coloured by ``z_1`` when K = 2. For 1-D x,
    one axes with every source's density curve.

    Parameters
    ----------
    dataset : Dataset
        An unlabelled data set with K ≤ 2.
    models : dict of str to VAEModel, optional
        Unbatched learned models, by the name shown in their column.
    grid_size : int
        Pixels per coordinate (see :func:`density_image`).
    extent : tuple, optional
        ``(lo_1, hi_1, lo_2, hi_2)`` (or ``(lo, hi)`` for 1-D x); default from 5000 draws.
    z_range : pair of float, optional
        Latents along which ``f`` is drawn; default (−3, 3), or (0, 1) for a uniform prior.
    cmap : str
        Colour map of the density image.

    Returns
    -------
    matplotlib.figure.Figure

    References
    ----------
    004 Figure 4 and Figures 8-16 (a); 000 Figure 1C/D.
    """
    sources = _sources(dataset, models)
    if dataset.latent_dim not in (1, 2):
        raise ValueError(f"dataset {dataset.name!r} has latent_dim {dataset.latent_dim}: expected 1 or 2")
    dims = (0,) if dataset.obs_dim == 1 else (0, 1)
    extent = tuple(float(v) for v in extent) if extent is not None else default_extent(dataset, dims)
    if z_range is not None:
        z_range = check_range_pair("z_range", z_range)
    images = {name: density_image(src, extent, grid_size, dims=dims) for name, src in sources.items()}
    if len(dims) == 1:
        return _density_curves(dataset, images)

    fig, axes = new_figure(1, len(sources), width=4.0, height=3.6)
    for ax, (name, src) in zip(axes[0], sources.items()):
        img = images[name]
        ax.imshow(img.density, origin="lower", extent=img.extent, cmap=cmap, vmin=0.0,
                  vmax=1.25 * max(float(img.density.max()), 1e-300), aspect="auto", interpolation="nearest")
        target = likelihood_target(src)
        zr = z_range or ((0.0, 1.0) if target.prior == "uniform" else (-3.0, 3.0))
        z, fx = _f_curve(target, zr, target.latent_dim)
        norm = Normalize(*zr)
        if target.latent_dim == 1:
            mappable = colored_line(ax, fx[:, 0], fx[:, 1], z[:, 0], norm=norm, linewidth=1.2)
            label = "z"
        else:
            mappable = ax.scatter(fx[:, 0], fx[:, 1], c=z[:, 0], cmap="viridis", norm=norm, s=2, alpha=0.6,
                                  linewidths=0)
            label = "z₁"
        fig.colorbar(mappable, ax=ax, label=label, shrink=0.7)
        ax.set_xlim(img.extent[0], img.extent[1])
        ax.set_ylim(img.extent[2], img.extent[3])
        if _square_enough(img.extent):
            ax.set_aspect("equal")
        what = "true p(x)" if name == "true" else f"{name}: learned p(x)"
        if dataset.obs_dim > 2:
            what += f"\nexact marginal of x₁, x₂ (D = {dataset.obs_dim})"
        if not img.converged:
            what += " (quadrature not converged)"
        ax.set_title(what, fontsize=9)
        ax.set_xlabel("x₁")
        ax.set_ylabel("x₂")
    fig.suptitle(f"{dataset.name}: p(x) with f(z) coloured by z", fontsize=10)
    return fig


def _square_enough(extent) -> bool:
    ratio = (extent[1] - extent[0]) / (extent[3] - extent[2])
    return 1 / 3 <= ratio <= 3


def _density_curves(dataset, images: dict) -> Figure:
    fig, axes = new_figure(1, 1, width=5.0, height=3.6)
    ax = axes[0, 0]
    for name, img in images.items():
        style = {"color": "k", "linewidth": 2.0} if name == "true" else {"linewidth": 1.5, "linestyle": "--"}
        label = "true p(x)" if name == "true" else f"{name}: learned p(x)"
        if not img.converged:
            label += " (not converged)"
        ax.plot(img.centres[0], img.density, label=label, **style)
    ax.set_xlabel("x")
    ax.set_ylabel("density")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8)
    ax.set_title(f"{dataset.name}: p(x)", fontsize=10)
    return fig
