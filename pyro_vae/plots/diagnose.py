"""One-page summary of a diagnosis (``pyro-vae diagnose --plot FILE.png``).

Six panels from :class:`pyro_vae.diagnose.report.Report` (its ``arrays``): the data with the
learned manifold, points coloured by their posterior gap; the gaps' histogram; the PSIS k̂
histogram; the residuals' normal-space coordinates against N(0, 1); the held-out log-likelihood
over σ²; and the ELBO / log-likelihood over K (or the verdicts when no K was compared). The
verdict of every check is printed along the bottom.
"""

from __future__ import annotations

import math

import numpy as np
from matplotlib.figure import Figure

from pyro_vae.plots.common import new_figure

__all__ = ["diagnosis_figure"]

_COLOURS = {"alarm": "#c0392b", "inconclusive": "#d68910", "ok": "#1e8449", "skipped": "#7f8c8d"}


def _empty(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=9, color="0.4", wrap=True)
    ax.set_xticks([])
    ax.set_yticks([])


def _threshold(report, key: str) -> float | None:
    try:
        rule = report.by_key(key).threshold
    except KeyError:
        return None
    for token in rule.replace("[", " ").replace("]", " ").split():
        try:
            return float(token)
        except ValueError:
            continue
    return None


def diagnosis_figure(report) -> Figure:
    """The summary figure of ``report`` (a :class:`~pyro_vae.diagnose.report.Report`)."""
    arr = report.arrays
    fig, axes = new_figure(2, 3, width=4.0, height=3.4)
    ax = axes[0, 0]
    x = arr.get("x")
    if x is not None and x.shape[1] >= 2:
        gap = arr.get("gap")
        vmax = None if gap is None else max(0.2, float(np.quantile(gap, 0.95)))
        sc = ax.scatter(x[:, 0], x[:, 1], s=4, c="0.5" if gap is None else np.clip(gap, 0, vmax), cmap="magma_r",
                        vmin=None if gap is None else 0.0, vmax=vmax)
        man = arr.get("manifold")
        if man is not None:
            if len(man) == 600:  # K = 1: a curve
                ax.plot(man[:, 0], man[:, 1], color="tab:blue", lw=1.2, label="f(z), z ∈ [−3.5, 3.5]")
            else:
                ax.scatter(man[:, 0], man[:, 1], s=1, color="tab:blue", alpha=0.3, label="f(z), z ~ p(z)")
            ax.legend(fontsize=7, loc="upper right")
        if gap is not None:
            fig.colorbar(sc, ax=ax, label="log p(x) − ELBO")
        ax.set_xlabel("x1")
        ax.set_ylabel("x2")
        ax.set_title("data and learned manifold", fontsize=9)
    else:
        _empty(ax, "1-D data: no scatter")

    ax = axes[0, 1]
    if "gap" in arr:
        gap = np.asarray(arr["gap"])
        top = float(np.quantile(gap, 0.98))
        bins = np.linspace(min(0.0, float(gap.min())), max(top, 0.2), 40)
        ax.hist(np.clip(gap, None, bins[-1]), bins=bins, color="0.35", alpha=0.8, label="q (the guide)")
        if "floor" in arr:
            ax.hist(np.clip(arr["floor"], None, bins[-1]), bins=bins, histtype="step", color="tab:orange", lw=1.5,
                    label="best Gaussian per point")
        t = _threshold(report, "posterior_gap")
        if t is not None:
            ax.axvline(t, color="tab:red", ls="--", lw=1, label=f"threshold of the mean, {t:g}")
        ax.axvline(float(np.mean(gap)), color="tab:blue", lw=1, label=f"mean {float(np.mean(gap)):.3g}")
        ax.legend(fontsize=7)
        ax.set_xlabel("log p_θ(x) − ELBO per point (nats; last bin: ≥ 98th pct)")
        ax.set_title("posterior gap", fontsize=9)
    else:
        _empty(ax, "posterior gap not computed")

    ax = axes[0, 2]
    if "khat" in arr:
        k = np.clip(arr["khat"], -0.5, 2.0)
        ax.hist(k, bins=40, color="0.35")
        for v, ls in ((0.5, ":"), (0.7, "--")):
            ax.axvline(v, color="tab:red", ls=ls, lw=1)
        ax.set_xlabel("PSIS k̂ of q per point (clipped to [−0.5, 2])")
        ax.set_title("q as an importance proposal", fontsize=9)
    else:
        _empty(ax, "k̂ not computed")

    ax = axes[1, 0]
    if "residual_coords" in arr:
        r = np.asarray(arr["residual_coords"])[:, 0]
        ax.hist(r, bins=40, density=True, color="0.35")
        grid = np.linspace(min(r.min(), -4), max(r.max(), 4), 200)
        ax.plot(grid, np.exp(-grid**2 / 2) / math.sqrt(2 * math.pi), color="tab:blue", label="N(0, 1)")
        ax.legend(fontsize=7)
        ax.set_xlabel("whitened residual, first normal direction")
        ax.set_title("residuals x − f(ẑ)", fontsize=9)
    else:
        _empty(ax, "residuals not tested")

    ax = axes[1, 1]
    if "noise_profile" in arr:
        mult, ll, eq9 = arr["noise_profile"]
        ax.plot(mult, ll, "o-", ms=3, color="0.3")
        ax.set_xscale("log", base=2)
        ticks = [2.0**k for k in range(int(np.floor(np.log2(mult.min()))), int(np.ceil(np.log2(mult.max()))) + 1)]
        ax.set_xticks(ticks, [f"{t:g}" if t >= 1 else f"1/{1 / t:g}" for t in ticks])
        ax.minorticks_off()
        ax.axvline(1.0, color="tab:blue", lw=1, label="model's σ²")
        ax.axvline(eq9, color="tab:orange", lw=1, ls="--", label="Eq. 9 (ELBO-optimal)")
        ax.axvline(float(mult[int(np.argmax(ll))]), color="tab:green", lw=1, ls=":", label="held-out log-lik best")
        ax.legend(fontsize=7)
        ax.set_xlabel("σ² / model's σ²")
        ax.set_ylabel("held-out log p(x) per point")
        ax.set_title("noise variance", fontsize=9)
    else:
        _empty(ax, "σ² not profiled")

    ax = axes[1, 2]
    if "latent" in arr:
        ks, elbo, iwae, ll = (np.array(v) for v in zip(*arr["latent"]))
        ax.plot(ks, elbo, "o-", label="ELBO")
        ax.plot(ks, iwae, "s--", label="IWAE bound")
        ax.plot(ks, ll, "^:", label="log p(x)")
        ax.set_xticks(ks)
        ax.set_xlabel("latent dimension K")
        ax.set_ylabel("nats per point")
        ax.legend(fontsize=7)
        ax.set_title("latent dimension", fontsize=9)
    else:
        lines = [f"{c.key}: {c.verdict}" + ("" if c.value is None else f" ({c.value:.3g})") for c in report.checks]
        _empty(ax, "\n".join(lines) or "no checks")
    verdicts = "   ".join(f"{c.key}: {c.verdict.upper()}" for c in report.checks)
    title = "pyro-vae diagnose — " + (", ".join(report.alarms()) + " alarm(s)" if report.alarms() else "no alarm")
    title += f"; density problem (004 §5.1): {report.density_verdict().upper()}"
    fig.suptitle(title + "\n" + verdicts, fontsize=9, color=_COLOURS["alarm" if report.alarms() else "ok"])
    return fig
