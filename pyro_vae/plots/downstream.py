"""Panels of the downstream-task experiments: 004 Figure 7 (projection onto a learned manifold)
and the OOD score histograms."""

from __future__ import annotations

import numpy as np
import torch
from matplotlib.figure import Figure

from pyro_vae.plots.common import new_figure, to_numpy

__all__ = ["projection_panels", "ood_panel"]


def projection_panels(dataset, models: dict, classifier, x: torch.Tensor, eps: float, *, labels,
                      lim: float = 1.6, grid: int = 13) -> Figure:
    """004 Figure 7: a uniform grid and one attacked point projected by ``M(x) = f_θ(μ_φ(x))``.

    One panel per model in ``models`` (name -> (model, guide)); the true manifold in blue, the
    learned classifier's boundary in orange, grey segments from each grid point to M(point),
    and a star perturbed by L∞ PGD of size ``eps`` (red) and then projected (black); ``labels``
    maps true z to classes.
    """
    from pyro_vae.downstream.adversarial import pgd_attack, projection, true_projection

    fig, axes = new_figure(1, len(models), width=4.2, height=4.0)
    z = torch.linspace(-4, 4, 800)[:, None]
    curve = to_numpy(dataset.f(z))
    g = torch.linspace(-lim, lim, grid)
    pts = torch.stack(torch.meshgrid(g, g, indexing="xy"), -1).reshape(-1, 2)
    fine = torch.linspace(-lim, lim, 200)
    mesh = torch.stack(torch.meshgrid(fine, fine, indexing="xy"), -1).reshape(-1, 2)
    with torch.no_grad():
        prob = torch.softmax(classifier(mesh), -1)[:, 1].reshape(200, 200).numpy()
        y = labels(true_projection(dataset.f, x)[1])
    adv_all = pgd_attack(classifier, x, y, eps)
    with torch.no_grad():
        fooled = (classifier(adv_all).argmax(-1) != y).nonzero()[:, 0]
    # the example: of the points the attack fools, the one deepest inside the first quadrant
    star = int(fooled[(x[fooled, 0] + x[fooled, 1]).argmax()]) if len(fooled) else 0
    for ax, (name, (model, guide)) in zip(axes[0], models.items()):
        project = projection(model, guide)
        with torch.no_grad():
            moved = project(pts)
            target = project(adv_all[star : star + 1])
        ax.plot(curve[:, 0], curve[:, 1], color="tab:blue", lw=2, label="true manifold")
        ax.contour(to_numpy(fine), to_numpy(fine), prob, levels=[0.5], colors="tab:orange", linewidths=1.5)
        for a, b in zip(to_numpy(pts), to_numpy(moved)):
            ax.plot([a[0], b[0]], [a[1], b[1]], color="0.6", lw=0.6)
        ax.scatter(to_numpy(moved)[:, 0], to_numpy(moved)[:, 1], s=4, color="0.3", zorder=3)
        p0, p1, p2 = to_numpy(x[star]), to_numpy(adv_all[star]), to_numpy(target[0])
        ax.annotate("", p1, p0, arrowprops=dict(arrowstyle="->", color="tab:red", lw=1.5))
        ax.annotate("", p2, p1, arrowprops=dict(arrowstyle="->", color="black", lw=1.5))
        ax.scatter([p0[0]], [p0[1]], marker="*", s=120, color="black", zorder=4)
        k = model.latent_dim
        var = model.noise_variance().detach().reshape(-1)
        ax.set_title(f"{name}: K = {k}, σ² = {float(var.mean()):.2g}", fontsize=9)
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_aspect("equal")
        ax.set_xlabel("x1")
    axes[0, 0].set_ylabel("x2")
    axes[0, 0].legend(fontsize=7, loc="lower left")
    fig.suptitle(f"grid points → M(x) = f_θ(μ_φ(x)); star: attacked by ε = {eps:g} (red), then projected (black); "
                 "orange: the learned classifier's boundary", fontsize=8)
    return fig


def ood_panel(scores: dict[str, tuple[np.ndarray, np.ndarray]], title: str) -> Figure:
    """Histograms of in-distribution vs shifted scores (log p(x)) for each scorer."""
    fig, axes = new_figure(1, len(scores), width=3.2, height=2.8)
    for ax, (name, (inside, outside)) in zip(axes[0], scores.items()):
        lo = float(np.quantile(np.concatenate([inside, outside]), 0.01))
        hi = float(max(inside.max(), outside.max()))
        bins = np.linspace(lo, hi, 40)
        ax.hist(np.clip(inside, lo, None), bins=bins, alpha=0.6, label="held-out", density=True)
        ax.hist(np.clip(outside, lo, None), bins=bins, alpha=0.6, label="shifted", density=True)
        ax.set_title(name, fontsize=8)
        ax.set_xlabel("log p(x)")
    axes[0, 0].legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    return fig
