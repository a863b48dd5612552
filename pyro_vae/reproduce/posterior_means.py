"""000 Figures 2-5: means of ``q(z | x)`` learned by the VAE and by LiBI against the exact posterior means.

:func:`posterior_means` computes the point clouds (guide means; ``E[z | x]`` under the true and
the learned θ by grid quadrature) and :func:`posterior_means_figure` lays them out as 000 App. B
does. Both are re-exported by :mod:`pyro_vae.reproduce.paper_figures`.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from matplotlib.figure import Figure

from pyro_vae.plots.common import new_figure, to_numpy
from pyro_vae.posterior.grid import grid_posterior

__all__ = ["PosteriorMeans", "posterior_means", "posterior_means_figure"]


def _normal_means(guide, x: torch.Tensor, name: str) -> np.ndarray:
    if not hasattr(guide, "distribution"):
        raise ValueError(f"{name} of type {type(guide).__name__}: expected a guide with .distribution(x)")
    if getattr(guide, "num_restarts", None):
        raise ValueError(f"{name} is restart-batched: select one restart first")
    with torch.no_grad():
        loc = to_numpy(guide.distribution(x).loc)
    if loc.shape != (x.shape[0], 2):
        raise ValueError(f"{name}.distribution(x).loc has shape {loc.shape}: expected ({x.shape[0]}, 2)")
    return loc


def _rms(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(((a - b) ** 2).sum(-1).mean()))


class PosteriorMeans(NamedTuple):
    """The point clouds of 000 Figures 2-5, each ``(N, 2)`` float64 arrays on the same x.

    ``q_gt``: means of ``q_φGT``; ``true``: ``E[z | x]`` under θ_GT; ``q``: means of the learned
    guide; ``learned``: ``E[z | x]`` under the learned θ; ``z``, ``codes``: the latents that drew
    x and LiBI's codes ``h(x)`` (None when not given).
    """

    q_gt: np.ndarray
    true: np.ndarray
    q: np.ndarray
    learned: np.ndarray
    z: np.ndarray | None = None
    codes: np.ndarray | None = None

    def distances(self) -> dict[str, float]:
        """RMS Euclidean distances between the clouds that 000 App. B compares."""
        out = {"q_gt_to_true": _rms(self.q_gt, self.true), "q_to_learned": _rms(self.q, self.learned),
               "q_to_true": _rms(self.q, self.true), "learned_to_true": _rms(self.learned, self.true)}
        if self.codes is not None:
            out["codes_to_true"] = _rms(self.codes, self.true)
        return out


def posterior_means(dataset, x: torch.Tensor, *, gt_guide, model, guide, z: torch.Tensor | None = None,
                    codes: torch.Tensor | None = None) -> PosteriorMeans:
    """Means of the guides and exact posterior means (grid quadrature) at ``x``, for :func:`posterior_means_figure`.

    Parameters
    ----------
    dataset : Dataset
        The ground truth, K = 2 (``linear_jte``, ``cubic_jte``).
    x : Tensor (N, D)
    gt_guide, guide : guide with ``distribution(x)`` (unbatched)
        φ_GT (fitted to the true θ) and the learned guide.
    model : VAEModel
        The learned model (unbatched, K = 2).
    z, codes : Tensor (N, 2), optional
        The true latents of ``x`` and LiBI's codes (both or neither).

    Returns
    -------
    PosteriorMeans

    References
    ----------
    000 App. B, Figures 2-5 (the paper estimates ``E[z | x]`` by Monte Carlo; here it is exact).
    """
    if getattr(dataset, "latent_dim", None) != 2:
        raise ValueError(f"dataset {getattr(dataset, 'name', dataset)!r}: expected K = 2")
    if not isinstance(x, torch.Tensor) or x.dim() != 2 or x.shape[0] < 1 or x.shape[1] != dataset.obs_dim:
        raise ValueError(f"x of shape {tuple(getattr(x, 'shape', ()))}: expected (N, {dataset.obs_dim})")
    if (z is None) != (codes is None):
        raise ValueError("z and codes: expected both (LiBI's layout) or neither")
    if getattr(model, "latent_dim", None) != 2 or getattr(model, "num_restarts", None):
        raise ValueError("model: expected an unbatched model with K = 2")
    extra = {}
    for name, t in (("z", z), ("codes", codes)):
        if t is not None:
            if not isinstance(t, torch.Tensor) or tuple(t.shape) != (x.shape[0], 2):
                raise ValueError(f"{name} of shape {tuple(getattr(t, 'shape', ()))}: expected ({x.shape[0]}, 2)")
            extra[name] = to_numpy(t)
    q_gt = _normal_means(gt_guide, x, "gt_guide")
    q = _normal_means(guide, x, "guide")
    true = to_numpy(grid_posterior(dataset, x, keep_density=False).mean)
    learned = to_numpy(grid_posterior(model, x, keep_density=False).mean)
    return PosteriorMeans(q_gt, true, q, learned, extra.get("z"), extra.get("codes"))


def posterior_means_figure(dataset, means: PosteriorMeans, *, method: str = "VAE") -> Figure:
    """000 Figures 2-5: means of ``q(z | x)`` against the means of the exact posteriors, laid out as there.

    Top-left: means of ``q_φGT`` (the guide fitted to the true θ); bottom-left: ``E[z | x]``
    under θ_GT. Middle (right when there is no third column): the learned guide's means above
    ``E[z | x]`` under the learned θ. With ``z`` and ``codes`` (LiBI): the z that drew the x
    above the codes ``h(x)`` of LiBI's step 1. Every point is coloured by the angle of its true
    posterior mean, so a point can be followed across panels; all panels share their limits.
    Panels state the RMS distance of their points to the ones they should match.

    Parameters
    ----------
    dataset : Dataset
        The ground truth (for the title).
    means : PosteriorMeans
        From :func:`posterior_means`.
    method : str
        The learned column's name.

    Returns
    -------
    matplotlib.figure.Figure
        2 × 2 panels, or 2 × 3 when ``means`` has ``z`` and ``codes``.

    References
    ----------
    000 App. B, Figures 2-5.
    """
    if not isinstance(means, PosteriorMeans):
        raise ValueError(f"means of type {type(means).__name__}: expected PosteriorMeans (see posterior_means)")
    d = means.distances()
    panels = {
        (0, 0): (means.q_gt, "means of q_φGT (φ fitted to θ_GT)", f"RMS to E_θGT[z|x]: {d['q_gt_to_true']:.3f}"),
        (1, 0): (means.true, "E[z | x] under θ_GT (exact)", ""),
        (0, 1): (means.q, f"{method}: learned means of q_φ",
                 f"RMS to E_θ[z|x]: {d['q_to_learned']:.3f}\nRMS to E_θGT[z|x]: {d['q_to_true']:.3f}"),
        (1, 1): (means.learned, f"{method}: E[z | x] under the learned θ (exact)",
                 f"RMS to E_θGT[z|x]: {d['learned_to_true']:.3f}"),
    }
    libi = means.z is not None and means.codes is not None
    if libi:
        panels[(0, 2)] = (means.z, "original z that drew x", "")
        panels[(1, 2)] = (means.codes, f"{method}: codes h(x) of step 1", f"RMS to E_θGT[z|x]: {d['codes_to_true']:.3f}")
    colour = np.arctan2(means.true[:, 1], means.true[:, 0])
    stacked = np.concatenate([p[0] for p in panels.values()])
    lo, hi = np.percentile(stacked, 0.5, axis=0), np.percentile(stacked, 99.5, axis=0)
    pad = 0.08 * np.maximum(hi - lo, 1e-6)
    fig, axes = new_figure(2, 3 if libi else 2, width=3.3, height=3.2)
    for (r, c), (pts, title, note) in panels.items():
        ax = axes[r, c]
        ax.scatter(pts[:, 0], pts[:, 1], c=colour, cmap="twilight", vmin=-np.pi, vmax=np.pi, s=5, linewidths=0)
        ax.set_xlim(lo[0] - pad[0], hi[0] + pad[0])
        ax.set_ylim(lo[1] - pad[1], hi[1] + pad[1])
        ax.set_title(title, fontsize=8)
        ax.set_xlabel("z₁")
        ax.set_ylabel("z₂")
        if note:
            ax.text(0.02, 0.98, note, transform=ax.transAxes, fontsize=7, va="top", ha="left")
    fig.suptitle(f"{getattr(dataset, 'name', dataset)}, {method}: posterior means on {len(means.true)} test points "
                 f"(colour: angle of the true posterior mean)", fontsize=9)
    return fig
