"""Posterior panels: ``p(z | x)`` under the true and the learned f at marked points
(004 Figures 4 right, 8-16 (c)/(d), 24), and the aggregate posterior against the prior
(000 Figure 1E/F)."""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import torch
from matplotlib.figure import Figure

from pyro_vae.plots.common import check_unbatched, format_point, new_figure, to_numpy

__all__ = ["posterior_panel", "aggregate_posterior_panel"]

METHODS = ("quadrature", "nuts")
_TRUE, _LEARNED, _GUIDE, _NUTS = "k", "tab:blue", "tab:red", "tab:orange"
_VISIBLE = 1e-4  # axis limits hold the grid density above this fraction of its peak


def _guide_q(guide, x: torch.Tensor, name: str = "guide"):
    """A guide's ``q(z | x)`` for the rows of ``x``: ``(loc, scale)`` NumPy arrays (N, K) for a diagonal
    Normal, else the distribution itself (batch (N,), event (K,)), drawn from its density or draws."""
    from pyro_vae.traces import diagonal_normal, guide_distribution

    check_unbatched(name, guide)
    try:
        q = guide_distribution(guide, x)
    except ValueError as err:
        raise ValueError(f"{name}: {err}") from None
    if q.batch_shape != (x.shape[0],):
        raise ValueError(f"{name} gives q(z|x) of batch shape {tuple(q.batch_shape)}: expected ({x.shape[0]},)")
    normal = diagonal_normal(q)
    if normal is None:
        return q
    loc, scale = to_numpy(normal[0]), to_numpy(normal[1])
    return loc, np.broadcast_to(scale, loc.shape)


def _guide_normal(guide, x: torch.Tensor, name: str = "guide") -> tuple[np.ndarray, np.ndarray]:
    """``(loc, scale)`` (N, K) of a diagonal-Normal guide's q(z | x); any other q raises ValueError."""
    q = _guide_q(guide, x, name)
    if not isinstance(q, tuple):
        raise ValueError(f"{name}'s q(z|x) is a {type(q).__name__}: expected a diagonal Normal")
    return q


def _encodings(pair: tuple, x: torch.Tensor, name: str) -> tuple[np.ndarray, np.ndarray]:
    """A ``(loc, scale)`` pair given in place of a guide, checked against ``x``."""
    if len(pair) != 2:
        raise ValueError(f"{name}: a tuple must be (loc, scale); got {len(pair)} items")
    loc, scale = (np.asarray(torch.as_tensor(v).detach().cpu(), dtype=np.float64) for v in pair)
    if loc.ndim != 2 or loc.shape != scale.shape or loc.shape[0] != x.shape[0]:
        raise ValueError(f"{name}: loc {loc.shape} and scale {scale.shape} must both be (N, K) with N = {x.shape[0]}")
    return loc, scale


def _q_dtype(q) -> torch.dtype:
    for value in vars(q).values():
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            return value.dtype
    base = getattr(q, "base_dist", None)
    return _q_dtype(base) if base is not None else torch.get_default_dtype()


def _q_latent_dim(q) -> int:
    return q[0].shape[1] if isinstance(q, tuple) else q.event_shape[0]


def _check_points(dataset, points) -> torch.Tensor:
    if not isinstance(points, torch.Tensor) or points.dim() != 2 or points.shape[0] < 1:
        raise ValueError(f"points of shape {tuple(getattr(points, 'shape', ()))}: expected a tensor (P, D), P >= 1")
    if points.shape[1] != dataset.obs_dim:
        raise ValueError(f"points of shape {tuple(points.shape)}: expected D = obs_dim = {dataset.obs_dim}")
    if not bool(torch.isfinite(points).all()):
        raise ValueError("points: expected finite values")
    return points


def posterior_panel(
    dataset,
    points: torch.Tensor,
    *,
    model=None,
    guide=None,
    method: str = "quadrature",
    nuts_kwargs: Mapping | None = None,
    grid=None,
    nuts: Sequence | None = None,
    seed: int = 0,
) -> Figure:
    """Posteriors at marked observations: one column per point.

    The first row holds the true posterior ``p(z | x)`` under the data set's ``f`` (grid
    density and/or NUTS draws). With ``model``, a second row holds the posterior under the
    learned ``f`` (grid quadrature); the rows are separate because a learned latent space
    need not be aligned with the true one (nor have the same dimension, 004 Figure 24). The
    guide's ``q(z | x)`` is drawn on the last row: against the learned posterior when there is
    a model, against the truth otherwise. K = 1: densities; K = 2: contours (``q`` as its
    1- and 2-sd ellipses), NUTS draws as dots.

    Parameters
    ----------
    dataset : Dataset
        The ground truth (K ≤ 2 for quadrature; NUTS draws are drawn for any K, first two dims).
    points : Tensor (P, D)
        The marked observations.
    model : VAEModel, optional
        An unbatched learned model with K ≤ 2.
    guide : Pyro guide, optional
        An unbatched guide; a diagonal-Normal q is drawn as its density (K = 1) or 1- and
        2-sd ellipses (K = 2), any other q as its density (K = 1) or draws (K = 2).
    method : {"quadrature", "nuts"}
        How the true posterior is computed when ``grid`` / ``nuts`` are not given.
    nuts_kwargs : dict, optional
        Passed to :func:`pyro_vae.posterior.nuts.nuts_posteriors`.
    grid : GridPosterior, optional
        A precomputed true grid posterior at ``points`` (drawn whatever ``method`` is).
    nuts : list of NUTSResult, optional
        Precomputed true NUTS results at ``points`` (drawn whatever ``method`` is).
    seed : int
        Seed of the NUTS chains.

    Returns
    -------
    matplotlib.figure.Figure

    References
    ----------
    004 Figure 4 (right column), Appendix I Figures 8-16 (c, d) and Figure 24.
    """
    if method not in METHODS:
        raise ValueError(f"method={method!r}: expected one of {METHODS}")
    points = _check_points(dataset, points)
    if hasattr(dataset, "label_dim"):
        raise ValueError(f"dataset {dataset.name!r} has labels: p(z | x) needs y as well; "
                         f"expected an unlabelled data set")
    if model is not None:
        check_unbatched("model", model)
        if getattr(model, "latent_dim", None) not in (1, 2):
            raise ValueError(f"model.latent_dim={getattr(model, 'latent_dim', None)!r}: "
                             f"expected 1 or 2 (grid posterior)")
    if method == "quadrature" and grid is None and dataset.latent_dim > 2:
        raise ValueError(f"method='quadrature': dataset {dataset.name!r} has latent_dim {dataset.latent_dim}; "
                         f"allowed up to 2 (use method='nuts')")
    if grid is None and nuts is None:
        if method == "quadrature":
            from pyro_vae.posterior.grid import grid_posterior

            grid = grid_posterior(dataset, points)
        else:
            from pyro_vae.posterior.nuts import nuts_posteriors

            nuts = nuts_posteriors(dataset, points, seed=seed, **dict(nuts_kwargs or {}))
    if nuts is not None and len(nuts) != points.shape[0]:
        raise ValueError(f"nuts has {len(nuts)} results: expected one per point ({points.shape[0]})")
    learned = None
    if model is not None:
        from pyro_vae.posterior.grid import grid_posterior

        learned = grid_posterior(model, points)
    q = _guide_q(guide, points) if guide is not None else None
    rows = [("true f", dataset.latent_dim, grid, nuts)]
    if model is not None:
        rows.append(("learned f", model.latent_dim, learned, None))
    if q is not None and _q_latent_dim(q) != rows[-1][1]:
        raise ValueError(f"guide has latent_dim {_q_latent_dim(q)}: expected {rows[-1][1]}, that of the "
                         f"{'model' if model is not None else 'data set'}")

    n = points.shape[0]
    fig, axes = new_figure(len(rows), n, width=3.4, height=3.0)
    for r, (label, k, post, draws) in enumerate(rows):
        q_row = q if r == len(rows) - 1 else None
        colour = _TRUE if r == 0 else _LEARNED
        for i in range(n):
            ax = axes[r, i]
            if k == 1:
                _draw_1d(ax, i, post, draws, q_row, colour, label)
            else:
                _draw_2d(ax, i, post, draws, q_row, colour, label)
            ax.set_title(f"{label}: x = {format_point(points[i].tolist())}", fontsize=8)
            if draws is not None and not draws[i].ok:
                mark_failed(ax, draws[i].reasons)
        axes[r, 0].legend(fontsize=7, loc="best")
    fig.suptitle(f"{dataset.name}: posteriors p(z | x)", fontsize=10)
    return fig


def mark_failed(ax, reasons) -> None:
    """Hatch a panel whose reference failed its diagnostics and say why, in red."""
    from matplotlib.patches import Rectangle

    ax.add_patch(Rectangle((0, 0), 1, 1, transform=ax.transAxes, fill=False, hatch="///", edgecolor="red",
                           linewidth=0, alpha=0.35, zorder=5))
    ax.text(0.5, 0.5, "FAILED DIAGNOSTICS\n" + "\n".join(reasons[:3]), transform=ax.transAxes, ha="center",
            va="center", fontsize=7, color="red", weight="bold", zorder=6,
            bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "red"})
    ax.set_title(ax.get_title() + " [NOT OK]", fontsize=8, color="red")


def _draw_1d(ax, i, post, draws, q, colour, label) -> None:
    lo, hi = np.inf, -np.inf
    if post is not None:
        z, dens = to_numpy(post.axes[i, 0]), np.exp(to_numpy(post.log_density[i]))
        ax.plot(z, dens, color=colour, label=f"p(z|x), {label}")
        seen = z[dens >= _VISIBLE * dens.max()]
        pad = 0.05 * (seen[-1] - seen[0]) + (z[1] - z[0])
        lo, hi = min(lo, seen[0] - pad), max(hi, seen[-1] + pad)
    if draws is not None:
        d = to_numpy(draws[i].flat()[:, 0])
        ax.hist(d, bins=60, density=True, alpha=0.4, color=_NUTS, label="NUTS draws")
        lo, hi = min(lo, d.min()), max(hi, d.max())
    if isinstance(q, tuple):
        m, s = float(q[0][i, 0]), float(q[1][i, 0])
        lo, hi = min(lo, m - 4 * s), max(hi, m + 4 * s)
        z = np.linspace(lo, hi, 400)
        ax.plot(z, np.exp(-0.5 * ((z - m) / s) ** 2) / (s * np.sqrt(2 * np.pi)), color=_GUIDE,
                linestyle="--", label="q(z|x)")
    elif q is not None:  # any family: its own density along z
        if not np.isfinite(lo):
            with torch.no_grad():
                d = to_numpy(q.sample((2000,))[:, i, 0])
            lo, hi = np.quantile(d, 0.005), np.quantile(d, 0.995)
        z = np.linspace(lo, hi, 400)
        zt = torch.as_tensor(z).reshape(-1, 1, 1).expand(-1, q.batch_shape[0], 1)
        with torch.no_grad():
            dens = to_numpy(q.log_prob(zt.to(_q_dtype(q)))[:, i].exp())
        ax.plot(z, dens, color=_GUIDE, linestyle="--", label="q(z|x)")
    ax.set_xlim(lo, hi)
    ax.set_ylim(bottom=0)
    ax.set_xlabel("z")


def _draw_2d(ax, i, post, draws, q, colour, label) -> None:
    boxes = []  # (lo, hi) corners of what must be in view
    if post is not None:
        m = post.num_points
        a, b = to_numpy(post.axes[i, 0]), to_numpy(post.axes[i, 1])
        dens = np.exp(to_numpy(post.log_density[i])).reshape(m, m).T  # rows along z2
        top = dens.max()
        ax.contourf(a, b, dens, levels=top * np.array([0.01, 0.1, 0.25, 0.4, 0.55, 0.7, 0.85, 1.0]),
                    cmap="Greys" if colour == _TRUE else "Blues")
        ax.plot([], [], color=colour, label=f"p(z|x), {label}")
        rows, cols = np.nonzero(dens >= _VISIBLE * top)
        boxes.append((np.array([a[cols.min()], b[rows.min()]]), np.array([a[cols.max()], b[rows.max()]])))
    if draws is not None:
        d = to_numpy(draws[i].flat())[:, :2]
        ax.scatter(d[:, 0], d[:, 1], s=2, alpha=0.3, color=_NUTS, label="NUTS draws")
        boxes.append((d.min(0), d.max(0)))
    if q is not None and not isinstance(q, tuple):  # any family: its draws
        with torch.no_grad():
            d = to_numpy(q.sample((500,))[:, i, :2])
        ax.scatter(d[:, 0], d[:, 1], s=2, alpha=0.4, color=_GUIDE, label="q(z|x) draws")
        boxes.append((np.quantile(d, 0.01, axis=0), np.quantile(d, 0.99, axis=0)))
    elif q is not None:
        mu, s = q[0][i, :2], q[1][i, :2]
        t = np.linspace(0, 2 * np.pi, 200)
        for r, style in ((1, "-"), (2, "--")):
            ax.plot(mu[0] + r * s[0] * np.cos(t), mu[1] + r * s[1] * np.sin(t), color=_GUIDE, linestyle=style,
                    label="q(z|x): 1, 2 sd" if r == 1 else None)
        boxes.append((mu - 2 * s, mu + 2 * s))
    lo = np.min([bx[0] for bx in boxes], axis=0)
    hi = np.max([bx[1] for bx in boxes], axis=0)
    pad = 0.08 * np.maximum(hi - lo, 1e-6)
    ax.set_xlim(lo[0] - pad[0], hi[0] + pad[0])
    ax.set_ylim(lo[1] - pad[1], hi[1] + pad[1])
    ax.set_xlabel("z₁")
    ax.set_ylabel("z₂")


def aggregate_posterior_panel(guide, x: torch.Tensor, *, num_samples: int | None = None, seed: int = 0) -> Figure:
    """Draws from the aggregate posterior ``q(z) = mean_n q(z | x_n)`` against the prior N(0, I).

    K = 1: a histogram with the N(0, 1) density; K ≥ 2: the draws' first two coordinates with
    the prior's 1-, 2- and 3-sd circles. The title gives the Henze-Zirkler p-value of the
    draws (:func:`pyro_vae.metrics.aggregate_posterior`; a small one says ``q(z)`` is not
    Gaussian, hence not the prior) and the corner the mixture's exact mean, variances,
    covariance and ``KL(N(mean, cov) ‖ N(0, I))``, a lower bound on ``KL(q(z) ‖ p(z))`` (a
    Gaussian ``q(z)`` can still differ from N(0, I) in these).

    Parameters
    ----------
    guide : guide or dict of str to guide
        Unbatched diagonal-Normal guide(s) (Pyro programs); a dict gives one column per guide
        (e.g. ``{"true (φ_GT)": ..., "learned": ...}`` for 000 Figure 1E/F). A dict value may
        also be a ``(loc, scale)`` pair of arrays (N, K): the encodings of ``x`` themselves
        (e.g. the true model's best mean-field posteriors, for 000 Figure 1E).
    x : Tensor (N, D)
        The data whose encodings are pooled.
    num_samples, seed :
        As :func:`pyro_vae.metrics.aggregate_posterior` (default: one draw per x).

    Returns
    -------
    matplotlib.figure.Figure

    References
    ----------
    000 Eq. 4 and Figure 1E/F; 004 Eq. 8.
    """
    from pyro_vae.metrics import aggregate_posterior

    if not isinstance(x, torch.Tensor) or x.dim() != 2:
        raise ValueError(f"x of shape {tuple(getattr(x, 'shape', ()))}: expected a tensor (N, D)")
    guides = dict(guide) if isinstance(guide, Mapping) else {"q(z)": guide}
    if not guides:
        raise ValueError("guide: expected a guide or a non-empty dict of guides")
    results = {}
    for name, g in guides.items():
        label = f"guide[{name!r}]" if isinstance(guide, Mapping) else "guide"
        if isinstance(g, tuple):
            loc, scale = _encodings(g, x, label)
        else:
            loc, scale = _guide_normal(g, x, label)
        results[name] = aggregate_posterior(loc, scale, num_samples, seed)
    fig, axes = new_figure(1, len(results), width=3.8, height=3.6)
    for ax, (name, agg) in zip(axes[0], results.items()):
        s = agg.samples
        if s.shape[1] == 1:
            ax.hist(s[:, 0], bins=60, density=True, alpha=0.5, color=_LEARNED, label="q(z) draws")
            lim = max(4.0, float(np.abs(s).max()))
            z = np.linspace(-lim, lim, 400)
            ax.plot(z, np.exp(-0.5 * z**2) / np.sqrt(2 * np.pi), color="k", label="prior N(0, 1)")
            ax.set_xlabel("z")
        else:
            ax.scatter(s[:, 0], s[:, 1], s=3, alpha=0.4, color=_LEARNED, label="q(z) draws")
            t = np.linspace(0, 2 * np.pi, 200)
            for r in (1, 2, 3):
                ax.plot(r * np.cos(t), r * np.sin(t), color="k", linewidth=1,
                        label="prior N(0, I): 1, 2, 3 sd" if r == 1 else None)
            ax.set_aspect("equal", adjustable="datalim")
            ax.set_xlabel("z₁")
            ax.set_ylabel("z₂" if s.shape[1] == 2 else f"z₂ (of K = {s.shape[1]})")
        head = "" if name == "q(z)" and len(results) == 1 else f"{name}: "
        ax.set_title(f"{head}aggregate q(z) vs prior\nHenze-Zirkler normality p = {agg.hz_p_value:.3g}", fontsize=9)
        moments = f"mean {format_point(agg.mean[:2])}\nvar {format_point(np.diag(agg.cov)[:2])}"
        if agg.cov.shape[0] >= 2:
            moments += f"\ncov₁₂ {agg.cov[0, 1]:.2f}"
        moments += f"\nKL(N(mean, cov) ‖ p(z)) = {agg.prior_kl:.3f}"
        ax.text(0.02, 0.98, moments, transform=ax.transAxes, fontsize=7, va="top", ha="left",
                bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "none", "pad": 1.5})
        ax.legend(fontsize=7, loc="upper right")
    return fig
