"""Figure panels: what they draw (checked against closed forms), PNG writing and input errors."""

import math
import os
import subprocess
import sys

import numpy as np
import pytest
import pyro
import pyro.distributions as dist
import torch
from matplotlib.collections import LineCollection, PathCollection, QuadMesh
from matplotlib.figure import Figure

from common import assert_close
from pyro_vae import plots
from pyro_vae.datasets import get_dataset
from pyro_vae.metrics import aggregate_posterior
from pyro_vae.metrics import linear_gaussian as lg
from pyro_vae.models import build_vae_model
from pyro_vae.posterior.quadrature import log_marginal_quadrature

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _panels(fig):
    """The figure's axes other than colour bars."""
    return [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]


class _FixedGuide:
    """A guide with ``q(z | x) = N(a x[:, :k] + b, s)``, for exact expectations."""

    def __init__(self, a, b, s, k=None):
        self.a, self.b, self.s, self.k = a, b, s, k

    def distribution(self, x):
        loc = self.a * x[:, : self.k] + self.b
        return torch.distributions.Normal(loc, torch.full_like(loc, self.s))

    def __call__(self, x):  # the Pyro guide: z in the plate "data"
        with pyro.plate("data", x.shape[0]):
            return pyro.sample("z", dist.Normal(*self._params(x)).to_event(1))

    def _params(self, x):
        q = self.distribution(x)
        return q.loc, q.scale


# ----------------------------------------------------------------------------- save_png
def test_save_png_writes_a_png_atomically(tmp_path):
    fig = plots.landscape_panel(np.arange(4.0).reshape(2, 2), [0.1, 0.2], [0.1, 0.2], title="t")
    path = plots.save_png(fig, tmp_path / "sub" / "a.png")
    assert path == tmp_path / "sub" / "a.png"
    assert path.read_bytes()[:8] == PNG_MAGIC
    assert os.listdir(tmp_path / "sub") == ["a.png"]  # no temporary file left behind


@pytest.mark.parametrize("name", ["a.pdf", "a.png.txt", "a"])
def test_save_png_rejects_other_extensions_before_writing(tmp_path, name):
    fig = plots.landscape_panel(np.ones((2, 2)), [0.1, 0.2], [0.1, 0.2], title="t")
    with pytest.raises(ValueError, match="path=.*expected a file name ending in .png"):
        plots.save_png(fig, tmp_path / name)
    assert os.listdir(tmp_path) == []


def test_save_png_leaves_an_existing_file_alone_when_given_no_figure(tmp_path):
    target = tmp_path / "keep.png"
    target.write_bytes(b"old")
    with pytest.raises(ValueError, match="expected a matplotlib.figure.Figure"):
        plots.save_png("not a figure", target)
    assert target.read_bytes() == b"old" and os.listdir(tmp_path) == ["keep.png"]


def test_panels_never_touch_pyplot():
    code = ("import sys, pyro_vae.plots as p; "
            "p.figure_png_bytes(p.landscape_panel([[1.0, 2.0], [3.0, 4.0]], [0.1, 0.2], [0.1, 0.2], title='t')); "
            "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot imported'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


# ----------------------------------------------------------------------------- density
def test_density_panel_circle_image_is_the_exact_marginal():
    ds = get_dataset("circle")
    model = build_vae_model(1, 2, 0.01, hidden=(8,))
    fig = plots.density_panel(ds, {"learned": model}, grid_size=120)
    assert isinstance(fig, Figure)
    true_ax, learned_ax = _panels(fig)
    assert len(true_ax.images) == 1 and len(learned_ax.images) == 1
    assert "true p(x)" in true_ax.get_title() and "learned: learned p(x)" in learned_ax.get_title()

    image = true_ax.images[0]
    dens = np.asarray(image.get_array())
    x0, x1, y0, y1 = image.get_extent()
    cell = (x1 - x0) / dens.shape[1] * (y1 - y0) / dens.shape[0]
    # Each pixel holds the exact mass of its square; the box leaves out < 1e-6 of p(x)
    # (6 noise sd beyond the ring), and the latent grid is refined to 1e-3 of the peak.
    assert abs(dens.sum() * cell - 1.0) < 2e-3

    # Pixel averages match log_marginal_quadrature at the pixel centres to within the
    # curvature of p over a pixel (h = 0.023, σ = 0.1: about h²/(12σ²) ≈ 0.5%).
    rows, cols = np.unravel_index(np.argsort(dens, axis=None)[-200::40], dens.shape)
    centres = torch.tensor(np.stack([x0 + (cols + 0.5) * (x1 - x0) / dens.shape[1],
                                     y0 + (rows + 0.5) * (y1 - y0) / dens.shape[0]], -1))
    ref = log_marginal_quadrature(ds.f, ds.obs_noise_var(), centres, 1).log_marginal.exp()
    assert_close(dens[rows, cols], ref, rtol=1e-2, msg="pixel density vs quadrature")

    # f(z) is overlaid as a curve coloured by z, on the unit circle.
    [curve] = [c for c in true_ax.collections if isinstance(c, LineCollection)]
    segments = np.concatenate(curve.get_segments())
    assert_close(np.linalg.norm(segments, axis=-1), np.ones(len(segments)), rtol=1e-5, msg="f on the circle")
    assert curve.get_array().min() < -2.9 and curve.get_array().max() > 2.9


def test_density_panel_one_dimensional_x_is_the_closed_form():
    ds = get_dataset("case1")  # p(x) = N(0, σ² = 1) for every θ (000 App. C.1)
    fig = plots.density_panel(ds, grid_size=300)
    [ax] = _panels(fig)
    [line] = ax.get_lines()
    x, y = line.get_xdata(), line.get_ydata()
    h = x[1] - x[0]
    # pixel average of N(0, 1) = (Φ(x + h/2) − Φ(x − h/2)) / h
    expected = np.array([0.5 * (math.erf((v + h / 2) / math.sqrt(2)) - math.erf((v - h / 2) / math.sqrt(2))) / h
                         for v in x])
    assert_close(y, expected, atol=1e-6, rtol=1e-4, msg="case1 density")


def test_density_image_linear_jte_matches_the_gaussian_marginal():
    ds = get_dataset("linear_jte")
    extent = (-3.0, 3.0, -6.0, 6.0)
    img = plots.density_image(ds, extent, 80)
    assert img.converged and img.density.shape == (80, 80)
    a, b = np.meshgrid(*img.centres)  # rows along x2
    pts = torch.tensor(np.stack([a.ravel(), b.ravel()], -1))
    exact = ds.marginal().log_prob(pts).exp().numpy().reshape(80, 80)
    # pixels of 0.075 × 0.15 against marginal sds ≥ 0.6: pixel averaging moves values < 1% of the peak
    assert np.abs(img.density - exact).max() < 1e-2 * exact.max()


def test_density_panel_five_d_shows_the_exact_two_d_marginal():
    extent = (-1.5, 1.5, -1.2, 1.2)
    fig = plots.density_panel(get_dataset("figure8_5d"), grid_size=60, extent=extent)
    [ax] = _panels(fig)
    assert "marginal of x₁, x₂" in ax.get_title()
    flat = plots.density_image(get_dataset("figure8"), extent, 60)  # the embedding keeps x1, x2
    assert_close(np.asarray(ax.images[0].get_array()), flat.density, atol=1e-6 * flat.density.max(), rtol=1e-4)


def test_density_panel_bad_input():
    ds = get_dataset("circle")
    with pytest.raises(ValueError, match="labels"):
        plots.density_panel(get_dataset("discrete_semicircle"))
    with pytest.raises(ValueError, match="obs_dim"):
        plots.density_panel(ds, {"m": build_vae_model(1, 3, 0.01, hidden=(4,))})
    with pytest.raises(ValueError, match="restart-batched"):
        plots.density_panel(ds, {"m": build_vae_model(1, 2, 0.01, hidden=(4,), num_restarts=2)})
    with pytest.raises(ValueError, match="grid_size"):
        plots.density_panel(ds, grid_size=1)
    with pytest.raises(ValueError, match="extent"):
        plots.density_panel(ds, extent=(1.0, -1.0, 0.0, 1.0))


# ----------------------------------------------------------------------------- posteriors
def test_posterior_panel_rows_for_truth_and_learned_model():
    ds = get_dataset("circle")
    model = build_vae_model(1, 2, 0.01, hidden=(8,))
    guide = _FixedGuide(0.5, 0.1, 0.7, k=1)
    points = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    fig = plots.posterior_panel(ds, points, model=model, guide=guide)
    axes = _panels(fig)
    assert len(axes) == 4  # 2 rows (true f, learned f) × 2 points
    for ax in axes[:2]:
        [line] = ax.get_lines()  # the true posterior only: no guide on the truth's row
        z, p = line.get_xdata(), line.get_ydata()
        assert abs(np.trapezoid(p, z) - 1.0) < 1e-3  # the normalised p(z | x)
    assert "true f" in axes[0].get_title() and "learned f" in axes[2].get_title()
    for ax, x in zip(axes[2:], points):
        learned, q = ax.get_lines()
        assert abs(np.trapezoid(learned.get_ydata(), learned.get_xdata()) - 1.0) < 1e-3
        loc = float(0.5 * x[0] + 0.1)  # the guide's q for this x, first coordinate
        assert_close(q.get_ydata().max(), 1 / (0.7 * math.sqrt(2 * math.pi)), rtol=1e-3)
        assert abs(q.get_xdata()[np.argmax(q.get_ydata())] - loc) < 0.05


def test_posterior_panel_two_dimensional_latents_frame_the_closed_form_posterior():
    ds = get_dataset("linear_jte")
    points = torch.tensor([[0.5, 0.5], [-1.0, 1.0]])
    guide = _FixedGuide(0.0, 0.0, 1.0)  # q = N(0, I) for every x
    fig = plots.posterior_panel(ds, points, guide=guide)
    axes = _panels(fig)
    assert len(axes) == 2
    exact = lg.posterior(lg.linear_gaussian_params(ds), points)
    for ax, mean in zip(axes, exact.mean.numpy()):
        assert ax.collections  # filled contours of p(z | x)
        assert len([ln for ln in ax.get_lines() if ln.get_label() != "_nolegend_"]) >= 2  # q's ellipses
        (lo1, hi1), (lo2, hi2) = ax.get_xlim(), ax.get_ylim()
        assert lo1 < mean[0] < hi1 and lo2 < mean[1] < hi2
        assert lo1 < -2 and hi1 > 2  # q's 2-sd ellipse is in view


def test_posterior_panel_nuts_draws():
    ds = get_dataset("circle")
    fig = plots.posterior_panel(ds, torch.tensor([[0.0, 1.0]]), method="nuts",
                                nuts_kwargs={"num_chains": 1, "num_warmup": 30, "num_samples": 40})
    [ax] = _panels(fig)
    bars = [p for p in ax.patches if not p.get_hatch()]
    assert len(bars) == 60  # the histogram of NUTS draws
    # one short chain fails its diagnostics: the panel is hatched and says so
    assert [p.get_hatch() for p in ax.patches if p.get_hatch()] == ["///"] and "NOT OK" in ax.get_title()
    assert not ax.get_lines()  # no grid posterior was asked for


def test_posterior_panel_bad_input():
    ds = get_dataset("circle")
    with pytest.raises(ValueError, match="method='mcmc'"):
        plots.posterior_panel(ds, torch.zeros(1, 2), method="mcmc")
    with pytest.raises(ValueError, match="points of shape"):
        plots.posterior_panel(ds, torch.zeros(1, 3))
    with pytest.raises(ValueError, match="labels"):
        plots.posterior_panel(get_dataset("discrete_semicircle"), torch.zeros(1, 2))
    with pytest.raises(ValueError, match="guide has latent_dim 2"):
        plots.posterior_panel(ds, torch.zeros(1, 2), guide=_FixedGuide(1.0, 0.0, 1.0, k=2))


# ----------------------------------------------------------------------------- aggregate posterior
def test_aggregate_posterior_panel_one_dimension():
    x = torch.randn(800, 1, generator=torch.Generator().manual_seed(1))
    guide = _FixedGuide(0.6, 0.0, 0.8)  # q(z) = N(0, 0.36 + 0.64) = the prior
    fig = plots.aggregate_posterior_panel(guide, x, seed=3)
    [ax] = _panels(fig)
    assert len(ax.patches) == 60 and len(ax.get_lines()) == 1
    expected = aggregate_posterior(0.6 * x, torch.full_like(x, 0.8), None, 3)
    assert f"p = {expected.hz_p_value:.3g}" in ax.get_title()
    prior = ax.get_lines()[0]
    assert_close(prior.get_ydata().max(), 1 / math.sqrt(2 * math.pi), rtol=1e-3)


def test_aggregate_posterior_panel_two_guides_two_dimensions():
    x = torch.randn(300, 2, generator=torch.Generator().manual_seed(2))
    guides = {"matched": _FixedGuide(0.6, 0.0, 0.8), "shifted": _FixedGuide(0.1, 2.0, 0.2)}
    fig = plots.aggregate_posterior_panel(guides, x, num_samples=200)
    axes = _panels(fig)
    assert [ax.get_title().split(":")[0] for ax in axes] == ["matched", "shifted"]
    for ax in axes:
        [dots] = [c for c in ax.collections if isinstance(c, PathCollection)]
        assert len(dots.get_offsets()) == 200 and len(ax.get_lines()) == 3  # prior's 1, 2, 3 sd circles
    m = (2.0 + 0.1 * x.mean(0)).tolist()  # the mixture's exact mean
    assert f"mean ({m[0]:.2f}, {m[1]:.2f})\nvar (0.05, 0.05)" in axes[1].texts[0].get_text()
    # the shifted aggregate's distance from the prior (a lower bound on its KL), from its moments
    shifted = aggregate_posterior(0.1 * x + 2.0, torch.full_like(x, 0.2), 200, 0)
    assert f"KL(N(mean, cov) ‖ p(z)) = {shifted.prior_kl:.3f}" in axes[1].texts[0].get_text()
    assert shifted.prior_kl > 3.0  # |mean|² / 2 ≈ 4 nats, and shrunken variances add more


def test_aggregate_posterior_panel_takes_encodings_in_place_of_a_guide():
    x = torch.randn(300, 2, generator=torch.Generator().manual_seed(4))
    guide = _FixedGuide(0.1, 2.0, 0.2)
    loc, scale = 0.1 * x + 2.0, torch.full_like(x, 0.2)
    fig = plots.aggregate_posterior_panel({"guide": guide, "pair": (loc, scale)}, x, num_samples=200)
    texts = [ax.texts[0].get_text() for ax in _panels(fig)]
    assert texts[0] == texts[1]  # the same encodings, the same moments and KL
    with pytest.raises(ValueError, match=r"guide\['pair'\]: loc .* must both be \(N, K\) with N = 300"):
        plots.aggregate_posterior_panel({"pair": (loc[:10], scale[:10])}, x)
    with pytest.raises(ValueError, match="a tuple must be \\(loc, scale\\)"):
        plots.aggregate_posterior_panel({"a": guide, "pair": (loc,)}, x)


# ----------------------------------------------------------------------------- M2
def test_m2_panel_discrete_semicircle_true_f_and_cohorts():
    ds = get_dataset("discrete_semicircle")
    x, _, y = ds.sample(400, seed=0)
    fig = plots.m2_panel(ds.f, label_values=[[1.0, 0.0], [0.0, 1.0]],
                         samples={"y = 0": x[y[:, 0] == 1], "y = 1": x[y[:, 1] == 1]})
    curves, against_z, cohorts = _panels(fig)
    lines = [ln for ln in curves.get_lines() if ln.get_label() in ("y = 0", "y = 1")]
    assert len(lines) == 2
    for line, label in zip(lines, ([1.0, 0.0], [0.0, 1.0])):
        end = ds.f(torch.tensor([[3.0]]), torch.tensor([label]))[0].numpy()
        assert_close([line.get_xdata()[-1], line.get_ydata()[-1]], end, atol=1e-6)
    # as functions of z the two labels differ (their angles π√Φ(z) vs πΦ(z)³), same curve in x-space
    assert len(against_z.get_lines()) == 4
    assert sum(len(c.get_offsets()) for c in cohorts.collections) == 400
    assert lines[0].get_color() != lines[1].get_color()


def test_m2_panel_continuous_labels_get_a_colour_scale():
    ds = get_dataset("continuous_semicircle")
    fig = plots.m2_panel(ds.f, label_values=[[-1.0], [0.0], [1.0]], z_range=(-2, 2))
    assert len(_panels(fig)) == 2 and len(fig.axes) == 3  # curves, f against z, and the y colour bar
    with pytest.raises(ValueError, match="label vectors of one length"):
        plots.m2_panel(ds.f, label_values=[[0.0], [0.0, 1.0]])
    with pytest.raises(ValueError, match="callable"):
        plots.m2_panel("f", label_values=[[0.0]])


# ----------------------------------------------------------------------------- 000 Figure 1A/B
def test_linear_jte_landscape_reproduces_000_section_1():
    land = plots.linear_jte_landscape(9)
    i, j = np.unravel_index(np.argmin(land.pmo), land.pmo.shape)
    # "L(θ, φ) prefers high value in the upper diagonal of B and low value in the lower diagonal"
    assert (i, j) == (8, 0) and land.b1[i] > land.b2[j]
    # "the I(X; Z) corresponding to the preferred B is not highest or lowest"
    assert land.mutual_info.min() < land.mutual_info[i, j] < land.mutual_info.max()
    # the MLE objective is 0 for every B: −ELBO − PMO is the same data entropy everywhere
    assert np.ptp(land.neg_elbo - land.pmo) < 1e-9
    [[at_truth]] = plots.linear_jte_landscape(b_values=[0.006]).pmo
    assert abs(at_truth - 0.532) < 5e-4  # L(θ_GT, φ_GT) = 0.532 (000 Section 1)


def test_landscape_panel_marks_the_minimum():
    land = plots.linear_jte_landscape(5)
    fig = plots.landscape_panel(land.pmo, land.b1, land.b2, title="L", points={"truth": (0.006, 0.006)})
    [ax] = _panels(fig)
    assert any(isinstance(c, QuadMesh) for c in ax.collections)
    [star] = [ln for ln in ax.get_lines() if ln.get_marker() == "*"]
    i, j = np.unravel_index(np.argmin(land.pmo), land.pmo.shape)
    assert (star.get_xdata()[0], star.get_ydata()[0]) == (land.b2[j], land.b1[i])  # b1 runs up the vertical axis
    with pytest.raises(ValueError, match="values of shape"):
        plots.landscape_panel(land.pmo[:, :2], land.b1, land.b2, title="L")
    with pytest.raises(ValueError, match="b_diag"):
        plots.linear_jte_landscape(b_values=[0.01])
