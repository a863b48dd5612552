"""The papers' illustrative figures that no experiment config draws: 004 Figures 2, 3, 4 and 6,
and 000 Figures 2-5.

Each builder returns a :class:`matplotlib.figure.Figure` and writes nothing; the caller saves it
(:func:`pyro_vae.plots.save_png`). Builders take data sets and trained models; the training
behind 004 Figure 6 and 000 Figures 2-5 is in :mod:`pyro_vae.reproduce.figure_runs`, and
``pyro-vae figure NAME`` puts the two together.

- :func:`nonidentifiability_figure`: 004 Figure 2, three models with one ``p(x)``.
- :func:`rapid_change_figure`: 004 Figure 3, ``f(z) = ⌊z⌋`` and its multi-modal posteriors.
- :func:`benchmark_figure`: 004 Figure 4, ``p(x)`` with ``f(z)`` and the posteriors at starred x.
- :func:`benchmark_samples_figure`: draws of every 004 benchmark (a companion to Figure 4).
- :func:`functional_collapse_figure`: 004 Figure 6, ``f(z, y)`` and ``p(x | y)``, truth vs M2 models.
- :func:`posterior_means_figure`: 000 Figures 2-5, means of ``q(z | x)`` against the true posterior's
  (the point clouds from :func:`posterior_means`).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import torch
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from pyro_vae.datasets import get_dataset
from pyro_vae.plots import default_extent, density_image
from pyro_vae.plots.common import check_positive_int, check_range_pair, colored_line, format_point, new_figure, to_numpy
from pyro_vae.posterior.grid import grid_posterior
from pyro_vae.posterior.target import posterior_target
from pyro_vae.reproduce.posterior_means import PosteriorMeans, posterior_means, posterior_means_figure

__all__ = [
    "BENCHMARK_POINTS",
    "PosteriorMeans",
    "benchmark_figure",
    "benchmark_samples_figure",
    "functional_collapse_figure",
    "joint_density",
    "nonidentifiability_figure",
    "posterior_means",
    "posterior_means_figure",
    "rapid_change_figure",
]

#: The starred x of 004 Figure 4 (our choice: the paper does not list them): points whose
#: exact posterior under the true f has two or more modes.
BENCHMARK_POINTS = {"figure8": ((0.0, 0.2), (0.3, 0.3)), "clusters": ((1.0, 0.0), (-1.0, 0.0), (0.0, 1.0))}
#: The paper's captions of the Figure 2 variants.
_VARIANT_TITLES = {
    "variant1": "(a) Variant 1: f(z) = (z − 0.5)²",
    "variant2": "(b) Variant 2: f(z) = 0.25 z²",
    "variant3": "(c) Variant 3: f(z) = (2z − 0.5)² (z < 0.5),\n(2z − 1.5)² (z ≥ 0.5)",
}
_SAMPLE_SETS = ("figure8", "circle", "absolute_value", "clusters", "spiral_dots", "figure8_5d", "clusters_5d",
                "discrete_semicircle", "continuous_semicircle")


def _z_range(target) -> tuple[float, float]:
    return (0.0, 1.0) if target.prior == "uniform" else (-3.0, 3.0)


def _marks(name: str, values, dim: int) -> torch.Tensor:
    x = torch.as_tensor(np.asarray(values, dtype=float), dtype=torch.float64)
    x = x.reshape(-1, dim) if x.dim() < 2 else x
    if x.dim() != 2 or x.shape[0] < 1 or x.shape[1] != dim or not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name}={values!r}: expected at least one finite point of dimension {dim}")
    return x


def _check_1d(dataset) -> None:
    if getattr(dataset, "latent_dim", None) != 1 or getattr(dataset, "obs_dim", None) != 1:
        raise ValueError(f"dataset {getattr(dataset, 'name', dataset)!r}: expected K = D = 1 "
                         f"(got K = {getattr(dataset, 'latent_dim', None)}, D = {getattr(dataset, 'obs_dim', None)})")


def joint_density(source, z_range: tuple[float, float], x_range: tuple[float, float],
                  grid_size: int = 200) -> np.ndarray:
    """``p(x, z) = p(z) N(x; f(z), σ²)`` on a ``grid_size²`` grid (K = D = 1), rows along x.

    Parameters
    ----------
    source : Dataset or VAEModel
        Anything :func:`pyro_vae.posterior.target.posterior_target` accepts, with K = D = 1.
    z_range, x_range : pair of float
    grid_size : int

    Returns
    -------
    ndarray (grid_size, grid_size)
        Ready for ``imshow(origin="lower", extent=(*z_range, *x_range))``.

    References
    ----------
    004 Figures 2 (top row) and 3 (left).
    """
    target = posterior_target(source)
    if target.latent_dim != 1 or target.obs_dim != 1:
        raise ValueError(f"source: expected K = D = 1 (got K = {target.latent_dim}, D = {target.obs_dim})")
    z_lo, z_hi = check_range_pair("z_range", z_range)
    x_lo, x_hi = check_range_pair("x_range", x_range)
    n = check_positive_int("grid_size", grid_size, 2)
    dz = (z_hi - z_lo) / n
    z = torch.linspace(z_lo + dz / 2, z_hi - dz / 2, n, dtype=torch.float64)  # cell midpoints (U(0, 1): inside)
    x = torch.linspace(x_lo, x_hi, n, dtype=torch.float64)
    with torch.no_grad():
        log_p = target.log_joint(x[:, None, None], z[None, :, None])
    return to_numpy(log_p.exp())


def _draw_posteriors(ax, post, labels: Sequence[str], colours: Sequence[str], *, converged_note: bool = True) -> None:
    for i, (label, colour) in enumerate(zip(labels, colours)):
        z = to_numpy(post.axes[i, 0])
        dens = np.exp(to_numpy(post.log_density[i]))
        note = "" if bool(post.converged[i]) or not converged_note else " (grid not converged)"
        ax.plot(z, dens, color=colour, label=label + note)
    ax.set_xlabel("z")
    ax.set_ylabel("p(z | x)")
    ax.set_ylim(bottom=0)


# ---------------------------------------------------------------------------- 004 Figure 2
def nonidentifiability_figure(datasets: Sequence | None = None, *, x_marks: Sequence[float] = (0.02, 0.1, 0.2),
                              grid_size: int = 200) -> Figure:
    """004 Figure 2: three models with the same ``p(x)`` and ``p(z)`` but different posteriors.

    Top row: the joint ``p(x, z)`` of each model (z across, x up) with dotted cross-sections at
    ``x_marks``; top right: ``p(x)`` of every model (exact, pixel-averaged), with the largest
    difference between them in its title. Bottom row: the exact posteriors ``p(z | x)`` (grid
    quadrature) at the marked x, coloured as their cross-sections.

    Parameters
    ----------
    datasets : sequence of Dataset, optional
        K = D = 1 models (default: ``variant1``, ``variant2``, ``variant3``).
    x_marks : sequence of float
        The cross-sections.
    grid_size : int
        Pixels per axis of the joint images and points of ``p(x)``.

    Returns
    -------
    matplotlib.figure.Figure
        ``len(datasets)`` joint panels, one ``p(x)`` panel and ``len(datasets)`` posterior panels.

    References
    ----------
    004 §5.2 and Figure 2.
    """
    datasets = list(datasets) if datasets is not None else [get_dataset(n) for n in ("variant1", "variant2", "variant3")]
    if not datasets:
        raise ValueError("datasets: expected at least one data set")
    for ds in datasets:
        _check_1d(ds)
    x = _marks("x_marks", x_marks, 1)
    grid_size = check_positive_int("grid_size", grid_size, 2)
    boxes = [default_extent(ds, (0,)) for ds in datasets]
    x_range = (min(b[0] for b in boxes), max(b[1] for b in boxes))
    colours = [f"C{i + 1}" for i in range(x.shape[0])]
    labels = [f"x = {float(v):g}" for v in x[:, 0]]

    n = len(datasets)
    fig, axes = new_figure(2, n + 1, width=3.0, height=2.8)
    marginals = []
    for j, ds in enumerate(datasets):
        target = posterior_target(ds)
        zr = _z_range(target)
        ax = axes[0, j]
        ax.imshow(joint_density(ds, zr, x_range, grid_size), origin="lower", extent=(*zr, *x_range), aspect="auto",
                  cmap="Greys", interpolation="nearest")
        for v, c in zip(x[:, 0].tolist(), colours):
            ax.axhline(v, color=c, linestyle=":", linewidth=1.5)
        ax.set_title(_VARIANT_TITLES.get(ds.name, ds.name) + "\np(x, z)", fontsize=8)
        ax.set_xlabel("z")
        ax.set_ylabel("x")
        _draw_posteriors(axes[1, j], grid_posterior(ds, x), labels, colours)
        axes[1, j].set_xlim(*zr)
        axes[1, j].set_title(f"{ds.name}: posteriors p(z | x)", fontsize=8)
        marginals.append(density_image(ds, x_range, grid_size, dims=(0,)))
    ax = axes[0, -1]
    for j, (ds, img) in enumerate(zip(datasets, marginals)):
        ax.plot(img.density, img.centres[0], linestyle=("-", "--", ":", "-.")[j % 4], linewidth=2.0 - 0.4 * (j % 3),
                label=ds.name)
    gap = max(float(np.abs(a.density - marginals[0].density).max()) for a in marginals)
    ax.set_ylim(*x_range)
    ax.set_xlabel("p(x)")
    ax.set_ylabel("x")
    ax.set_title(f"p(x) of every model\n(largest difference {gap:.1e})", fontsize=8)
    ax.legend(fontsize=7)
    axes[1, 0].legend(fontsize=7)
    fig.delaxes(axes[1, -1])
    fig.suptitle("004 Figure 2: three models with the same p(x) and p(z) but different posteriors", fontsize=10)
    return fig


# ---------------------------------------------------------------------------- 004 Figure 3
def rapid_change_figure(datasets: Sequence | None = None, *, x_marks: Sequence[float] = (-1.8, 0.0, 0.8, 1.8),
                        z_range: tuple[float, float] = (-3.0, 3.0), grid_size: int = 300) -> Figure:
    """004 Figure 3: rapid changes in f give multi-modal posteriors (``f(z) = ⌊z⌋``, Eq. 7).

    One row per data set. Left: the joint ``p(x, z)`` with dotted cross-sections at
    ``x_marks``. Right: the exact posteriors ``p(z | x)`` at those x (grid quadrature), coloured
    as their cross-sections. Within a step the posterior follows the prior; it jumps where z
    crosses to a step whose level is nearer x, so when σ is comparable to the step height a
    cross-section passes several steps and the posterior has several modes.

    Parameters
    ----------
    datasets : sequence of Dataset, optional
        K = D = 1 models (default: ``floor`` at its σ² = 0.01 and at σ² = 0.25; the paper
        gives no σ²).
    x_marks : sequence of float
    z_range : pair of float
        The z shown.
    grid_size : int
        Pixels per axis of the joint image.

    Returns
    -------
    matplotlib.figure.Figure
        Two panels per data set.

    References
    ----------
    004 §5.3, Eq. 7 and Figure 3.
    """
    datasets = list(datasets) if datasets is not None else [get_dataset("floor"), get_dataset("floor", noise_var=0.25)]
    if not datasets:
        raise ValueError("datasets: expected at least one data set")
    for ds in datasets:
        _check_1d(ds)
    x = _marks("x_marks", x_marks, 1)
    zr = check_range_pair("z_range", z_range)
    grid_size = check_positive_int("grid_size", grid_size, 2)
    colours = [f"C{i + 1}" for i in range(x.shape[0])]
    labels = [f"x = {float(v):g}" for v in x[:, 0]]
    fig, axes = new_figure(len(datasets), 2, width=4.2, height=3.2)
    for r, ds in enumerate(datasets):
        box = default_extent(ds, (0,))
        x_range = (min(box[0], float(x.min()) - 0.5), max(box[1], float(x.max()) + 0.5))
        ax = axes[r, 0]
        ax.imshow(joint_density(ds, zr, x_range, grid_size), origin="lower", extent=(*zr, *x_range), aspect="auto",
                  cmap="Greys", interpolation="nearest")
        for v, c in zip(x[:, 0].tolist(), colours):
            ax.axhline(v, color=c, linestyle=":", linewidth=1.5)
        ax.set_xlabel("z")
        ax.set_ylabel("x")
        ax.set_title(f"{ds.name}, σ² = {ds.noise_var:g}: joint p(x, z)", fontsize=9)
        _draw_posteriors(axes[r, 1], grid_posterior(ds, x), labels, colours, converged_note=False)
        axes[r, 1].set_xlim(*zr)
        axes[r, 1].legend(fontsize=7)
        axes[r, 1].set_title(f"σ² = {ds.noise_var:g}: posteriors p(z | x) at the dotted x", fontsize=9)
    fig.suptitle("004 Figure 3: f(z) = ⌊z⌋ (Eq. 7); rapid changes in f give multi-modal posteriors", fontsize=10)
    return fig


# ---------------------------------------------------------------------------- 004 Figure 4
def _f_in_x(ax, dataset, z_range=(-3.0, 3.0), num: int = 3000):
    z = torch.linspace(*z_range, num, dtype=torch.float64)[:, None]
    with torch.no_grad():
        fx = to_numpy(dataset.f(z))
    return colored_line(ax, fx[:, 0], fx[:, 1], to_numpy(z[:, 0]), norm=Normalize(*z_range), linewidth=1.6)


def benchmark_figure(datasets: Sequence | None = None, points: Mapping[str, Sequence] | None = None, *,
                     grid_size: int = 150) -> Figure:
    """004 Figure 4: the benchmarks' ``p(x)`` with ``f(z)`` coloured by z, and the posteriors at starred x.

    One row per data set. Left: the exact ``p(x)`` (pixel-averaged) with ``f(z)``, z in
    [−3, 3], and the starred points. Right: the exact posteriors ``p(z | x)`` at the stars (grid
    quadrature), in the stars' colours.

    Parameters
    ----------
    datasets : sequence of Dataset, optional
        Unlabelled sets with K = 1, D = 2 (default ``figure8`` and ``clusters``).
    points : dict of name to sequence of (x1, x2), optional
        The starred x per data set (default :data:`BENCHMARK_POINTS`).
    grid_size : int
        Pixels per axis of the density image.

    Returns
    -------
    matplotlib.figure.Figure
        Two panels per data set, and a colour bar (z) per density panel.

    References
    ----------
    004 §5.3 and Figure 4.
    """
    datasets = list(datasets) if datasets is not None else [get_dataset(n) for n in ("figure8", "clusters")]
    if not datasets:
        raise ValueError("datasets: expected at least one data set")
    points = dict(BENCHMARK_POINTS if points is None else points)
    grid_size = check_positive_int("grid_size", grid_size, 2)
    for ds in datasets:
        if getattr(ds, "latent_dim", None) != 1 or getattr(ds, "obs_dim", None) != 2 or hasattr(ds, "label_dim"):
            raise ValueError(f"dataset {getattr(ds, 'name', ds)!r}: expected an unlabelled set with K = 1, D = 2")
        if ds.name not in points:
            raise ValueError(f"points: no starred x for data set {ds.name!r}; expected a key {ds.name!r}")
    fig, axes = new_figure(len(datasets), 2, width=4.2, height=3.6)
    for r, ds in enumerate(datasets):
        x = _marks(f"points[{ds.name!r}]", points[ds.name], 2)
        colours = [f"C{i + 1}" for i in range(x.shape[0])]
        extent = default_extent(ds)
        img = density_image(ds, extent, grid_size)
        ax = axes[r, 0]
        ax.imshow(img.density, origin="lower", extent=img.extent, cmap="Greys", vmin=0.0,
                  vmax=1.25 * float(img.density.max()), aspect="equal", interpolation="nearest")
        fig.colorbar(_f_in_x(ax, ds), ax=ax, label="z (colour of f)", shrink=0.7)
        for p, c in zip(x.tolist(), colours):
            ax.plot(*p, "*", color=c, markersize=15, markeredgecolor="w")
        ax.set_xlim(img.extent[0], img.extent[1])
        ax.set_ylim(img.extent[2], img.extent[3])
        ax.set_xlabel("x₁")
        ax.set_ylabel("x₂")
        ax.set_title(f"{ds.name}: p(x) with f(z) coloured by z", fontsize=9)
        post = grid_posterior(ds, x)
        _draw_posteriors(axes[r, 1], post, [f"x = {format_point(p)}" for p in x.tolist()], colours)
        seen = [to_numpy(post.axes[i, 0])[np.exp(to_numpy(post.log_density[i])) > 1e-3 * np.exp(
            to_numpy(post.log_density[i])).max()] for i in range(x.shape[0])]
        lo, hi = min(s.min() for s in seen), max(s.max() for s in seen)
        axes[r, 1].set_xlim(lo - 0.05 * (hi - lo), hi + 0.05 * (hi - lo))
        axes[r, 1].legend(fontsize=7)
        axes[r, 1].set_title(f"{ds.name}: exact posteriors at the starred x", fontsize=9)
    fig.suptitle("004 Figure 4: benchmarks whose true posteriors are multi-modal", fontsize=10)
    return fig


def benchmark_samples_figure(names: Sequence[str] = _SAMPLE_SETS, *, num_samples: int = 1000, seed: int = 0) -> Figure:
    """Draws of x from each benchmark (first two coordinates), labelled sets coloured by y.

    A companion to 004 Figure 4: every unsupervised benchmark of 004 App. G and the two
    semi-circles of App. H in one grid, three panels a row.

    Parameters
    ----------
    names : sequence of str
        Data set names (D ≥ 2).
    num_samples : int
        Draws per data set.
    seed : int

    Returns
    -------
    matplotlib.figure.Figure
        One panel per data set (unused cells of the last row removed).

    References
    ----------
    004 Appendices G and H.
    """
    names = list(names)
    if not names:
        raise ValueError("names: expected at least one data set name")
    datasets = [get_dataset(n) for n in names]  # unknown names raise here, before any drawing
    for ds in datasets:
        if ds.obs_dim < 2:
            raise ValueError(f"names: data set {ds.name!r} has D = {ds.obs_dim}; expected D >= 2")
    num_samples = check_positive_int("num_samples", num_samples)
    cols = min(3, len(datasets))
    rows = -(-len(datasets) // cols)
    fig, axes = new_figure(rows, cols, width=3.2, height=3.0)
    for i, ds in enumerate(datasets):
        ax = axes[i // cols, i % cols]
        x, *rest = ds.sample(num_samples, seed)
        x = to_numpy(x)
        kind = getattr(ds, "label_kind", "")
        if kind == "discrete":
            y = to_numpy(rest[1]).argmax(-1)
            for c in range(ds.label_dim):
                ax.scatter(x[y == c, 0], x[y == c, 1], s=2, alpha=0.5, color=f"C{c}", label=f"y = {c}")
            ax.legend(fontsize=7, markerscale=4)
        elif kind == "continuous":
            ax.scatter(x[:, 0], x[:, 1], s=2, alpha=0.6, c=to_numpy(rest[1])[:, 0], cmap="coolwarm", vmin=-2.5, vmax=2.5)
        else:
            ax.scatter(x[:, 0], x[:, 1], s=2, alpha=0.4, color="k")
        note = f"first 2 of D = {ds.obs_dim}" if ds.obs_dim > 2 else "D = 2"
        extra = {"continuous": "\ncolour: y (blue < 0 < red)", "discrete": ""}.get(kind, "")
        ax.set_title(f"{ds.name} (K = {ds.latent_dim}, {note}, σ² = {ds.noise_var:g}){extra}", fontsize=7)
        ax.set_xlabel("x₁")
        ax.set_ylabel("x₂")
    for j in range(len(datasets), rows * cols):
        fig.delaxes(axes[j // cols, j % cols])
    fig.suptitle(f"004 benchmarks: {num_samples} draws each (seed {seed})", fontsize=10)
    return fig


# ---------------------------------------------------------------------------- 004 Figure 6
def _label_rows(dataset) -> list[tuple[str, torch.Tensor]]:
    from pyro_vae.pipeline_m2 import cohorts

    return cohorts(dataset)


def _draw_x(f, noise_sd: torch.Tensor, y: torch.Tensor | None, label_rows, n: int, gen: torch.Generator) -> np.ndarray:
    """``n`` draws ``x = f(z, y) + σ ε``, ``z ~ N(0, 1)``; ``y`` a label row, or None for a uniform class."""
    z = torch.randn(n, 1, generator=gen)
    if y is None:
        idx = torch.randint(len(label_rows), (n,), generator=gen)
        labels = torch.stack([row for _, row in label_rows])[idx]
    else:
        labels = y.reshape(1, -1).float().expand(n, -1)
    eps = torch.randn(n, noise_sd.numel(), generator=gen)
    with torch.no_grad():
        return to_numpy(f(z, labels).reshape(n, -1).cpu() + eps * noise_sd.reshape(1, -1).cpu())


def functional_collapse_figure(dataset, models: Mapping[str, object], *, num_samples: int = 1000, seed: int = 0,
                               notes: Mapping[str, str] | None = None) -> Figure:
    """004 Figure 6: ``f(z, y)`` per class and ``p(x | y)``, the truth beside each M2 model.

    One column for the truth, then one per model. Rows: (1) the angle of ``f(z, y)`` (in
    [−π/2, 3π/2), so the upper half-plane is continuous) against z for each class (functional
    collapse: the classes' curves coincide, although the truth's differ); (2) ``f(z, y)`` in x-space with dots at z = −2, …, 2 (both classes trace the same
    semi-circle at different speeds); (3) draws of ``p(x | y)`` per class; (4) draws of ``p(x)``
    (y from its uniform prior; the learned model's own ``p(y)`` is uniform on this set too).

    Parameters
    ----------
    dataset : Dataset
        A discrete labelled set with K = 1, D = 2 (``discrete_semicircle``).
    models : dict of str to M2Model
        Unbatched learned models by column name (may be empty: the truth only).
    num_samples : int
        Draws per panel of rows 3 and 4.
    seed : int
    notes : dict of str to str, optional
        A line added to a column's title (e.g. the model's function gap), by column name
        (``"truth"`` for the first).

    Returns
    -------
    matplotlib.figure.Figure
        ``4 × (1 + len(models))`` panels.

    References
    ----------
    004 §7, Figure 6 and App. H.1 (Figures 17-19).
    """
    if getattr(dataset, "label_kind", "") != "discrete" or dataset.latent_dim != 1 or dataset.obs_dim != 2:
        raise ValueError(f"dataset {getattr(dataset, 'name', dataset)!r}: expected a discrete labelled set with "
                         f"K = 1, D = 2 (discrete_semicircle)")
    if not isinstance(models, Mapping):
        raise ValueError(f"models of type {type(models).__name__}: expected a dict {{name: M2Model}}")
    for name, m in models.items():
        if getattr(m, "num_restarts", None):
            raise ValueError(f"models[{name!r}] is restart-batched: select one restart first")
        if getattr(m, "latent_dim", None) != 1 or getattr(m, "obs_dim", None) != 2 or not callable(getattr(m, "f", None)):
            raise ValueError(f"models[{name!r}]: expected an M2 model with f(z, y), K = 1, D = 2")
    num_samples = check_positive_int("num_samples", num_samples)
    notes = dict(notes or {})
    labels = _label_rows(dataset)
    columns = {"truth": (dataset.f, dataset.obs_noise_var().double().sqrt())}
    for name, m in models.items():
        with torch.no_grad():
            columns[str(name)] = (m.f, m.noise_variance().detach().double().reshape(-1).sqrt().cpu())
    z = torch.linspace(-3, 3, 601)[:, None]
    marks = torch.arange(-2, 3, dtype=z.dtype)[:, None]
    fig, axes = new_figure(4, len(columns), width=3.3, height=3.0)
    for j, (name, (f, sd)) in enumerate(columns.items()):
        gen = torch.Generator().manual_seed(seed)
        head = name + (f"\n{notes[name]}" if name in notes else "")
        for c, (label, y) in enumerate(labels):
            with torch.no_grad():
                fz = to_numpy(f(z, y.reshape(1, -1).expand(len(z), -1)))
                fm = to_numpy(f(marks, y.reshape(1, -1).expand(len(marks), -1)))
            angle = np.mod(np.arctan2(fz[:, 1], fz[:, 0]) + np.pi / 2, 2 * np.pi) - np.pi / 2  # in [−π/2, 3π/2)
            axes[0, j].plot(to_numpy(z[:, 0]), angle, color=f"C{c}", label=label)
            axes[1, j].plot(fz[:, 0], fz[:, 1], color=f"C{c}", label=label)
            axes[1, j].plot(fm[:, 0], fm[:, 1], "o", color=f"C{c}", markersize=4)
            xs = _draw_x(f, sd, y, labels, num_samples, gen)
            axes[2, j].scatter(xs[:, 0], xs[:, 1], s=2, alpha=0.4, color=f"C{c}", label=label)
        xs = _draw_x(f, sd, None, labels, num_samples, gen)
        axes[3, j].scatter(xs[:, 0], xs[:, 1], s=2, alpha=0.4, color="k")
        axes[0, j].set_title(f"{head}\nangle of f(z, y) against z", fontsize=8)
        axes[0, j].set_xlabel("z")
        axes[0, j].set_ylabel("angle of f(z, y) (radians)")
        axes[1, j].set_title("f(z, y) in x-space (dots: z = −2, …, 2)", fontsize=8)
        axes[2, j].set_title("p(x | y): draws per class", fontsize=8)
        axes[3, j].set_title("p(x): draws", fontsize=8)
        for r in (1, 2, 3):
            axes[r, j].set_xlabel("x₁")
            axes[r, j].set_ylabel("x₂")
            axes[r, j].set_xlim(-1.6, 1.6)
            axes[r, j].set_ylim(-0.6, 1.6)
        for r in (0, 1, 2):
            axes[r, j].legend(fontsize=7, markerscale=3)
    fig.suptitle(f"004 Figure 6: {dataset.name}, f(z, y) and p(x | y) of the truth and the learned M2 models",
                 fontsize=10)
    return fig
