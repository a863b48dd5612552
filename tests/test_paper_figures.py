"""The paper figures of ``pyro-vae figure`` (004 Figures 2, 3, 4, 6; 000 Figures 2-5) at tiny sizes:
each builder's panels, what they draw checked against closed forms, the training path against
the pipeline's, and the command's files and errors."""

import json
import math

import numpy as np
import pytest
import torch
from scipy.stats import norm

from common import assert_close
from pyro_vae.cli import main
from pyro_vae.datasets import get_dataset
from pyro_vae.models import VAEModel
from pyro_vae.reproduce import paper_figures as pf


def _panels(fig):
    """The figure's axes other than colour bars."""
    return [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]


def test_joint_density_is_prior_times_likelihood():
    ds = get_dataset("floor", noise_var=0.25)
    img = pf.joint_density(ds, (-2.0, 2.0), (-3.0, 3.0), 8)
    z = np.linspace(-2.0, 2.0, 9)[:-1] + 0.25  # cell midpoints
    x = np.linspace(-3.0, 3.0, 8)
    expected = norm.pdf(z)[None, :] * norm.pdf(x[:, None], loc=np.floor(z)[None, :], scale=0.5)
    assert_close(img, expected, rtol=1e-10, msg="floor joint")
    uniform = pf.joint_density(get_dataset("variant1"), (0.0, 1.0), (0.0, 0.3), 4)  # U(0, 1): p(z) = 1
    zu, xu = np.array([0.125, 0.375, 0.625, 0.875]), np.linspace(0.0, 0.3, 4)
    assert_close(uniform, norm.pdf(xu[:, None], loc=(zu[None, :] - 0.5) ** 2, scale=math.sqrt(1e-3)), rtol=1e-10)
    with pytest.raises(ValueError, match="K = D = 1"):
        pf.joint_density(get_dataset("figure8"), (-1, 1), (-1, 1))


def test_nonidentifiability_figure_panels_and_one_marginal():
    fig = pf.nonidentifiability_figure(x_marks=(0.1,), grid_size=40)
    assert len(fig.axes) == 7  # 3 joints, p(x), 3 posterior panels
    marginal = fig.axes[3]
    curves = [line.get_xdata() for line in marginal.get_lines()]
    assert len(curves) == 3
    for c in curves[1:]:  # the three variants have the same p(x) (004 §5.2)
        assert_close(c, curves[0], atol=1e-3 * curves[0].max(), rtol=0)
    # Variant 1's posterior at x = 0.1 has its two modes at z = 0.5 ± √0.1
    z, dens = (np.asarray(v) for v in fig.axes[4].get_lines()[0].get_data())
    left, right = z < 0.5, z > 0.5
    assert abs(z[left][dens[left].argmax()] - (0.5 - math.sqrt(0.1))) < 0.01
    assert abs(z[right][dens[right].argmax()] - (0.5 + math.sqrt(0.1))) < 0.01
    with pytest.raises(ValueError, match="x_marks"):
        pf.nonidentifiability_figure(x_marks=())
    with pytest.raises(ValueError, match="K = D = 1"):
        pf.nonidentifiability_figure([get_dataset("figure8")])


def test_rapid_change_figure_panels():
    assert len(pf.rapid_change_figure(grid_size=20).axes) == 4
    fig = pf.rapid_change_figure([get_dataset("floor", noise_var=0.25)], x_marks=(0.5,), grid_size=20)
    assert len(fig.axes) == 2
    z, dens = (np.asarray(v) for v in fig.axes[1].get_lines()[0].get_data())
    # at x = 0.5 the steps 0 and 1 are equally likely: p(z | x) ∝ φ(z) on [0, 2), jumps elsewhere
    inside = (z > 0.05) & (z < 0.95)
    ratio = dens[inside] / norm.pdf(z[inside])
    assert_close(ratio, np.full_like(ratio, ratio.mean()), rtol=1e-6, msg="p(z | x) / φ(z) on one step")


def test_benchmark_figures_panels():
    fig = pf.benchmark_figure(grid_size=20)
    assert len(_panels(fig)) == 4 and len(fig.axes) == 6  # 2 data sets × (density, posteriors) + 2 colour bars
    stars = [line for line in fig.axes[0].get_lines() if line.get_marker() == "*"]
    assert [tuple(s.get_xydata()[0]) for s in stars] == [tuple(p) for p in pf.BENCHMARK_POINTS["figure8"]]
    with pytest.raises(ValueError, match="no starred x"):
        pf.benchmark_figure([get_dataset("circle")])
    fig = pf.benchmark_samples_figure(("figure8", "clusters_5d", "discrete_semicircle", "continuous_semicircle"),
                                      num_samples=30)
    assert len(fig.axes) == 4  # a 2 × 3 grid with the two unused cells removed
    with pytest.raises(ValueError, match="unknown data set"):
        pf.benchmark_samples_figure(("no_such_set",))


def test_functional_collapse_figure_draws_the_true_f():
    from pyro_vae.pipeline_m2 import M2Config, build_m2

    ds = get_dataset("discrete_semicircle")
    assert len(pf.functional_collapse_figure(ds, {}, num_samples=10).axes) == 4
    model, _ = build_m2(M2Config(dataset="discrete_semicircle"), ds, [0.5, 0.5], None)
    fig = pf.functional_collapse_figure(ds, {"untrained": model}, num_samples=10, notes={"untrained": "note"})
    assert len(fig.axes) == 8
    z, angle = (np.asarray(v) for v in fig.axes[0].get_lines()[0].get_data())  # truth, y = 0: π √Φ(z) (Eq. 38)
    assert_close(angle, math.pi * np.sqrt(norm.cdf(z)), atol=1e-5, msg="angle of f(z, y = 0)")
    z1, angle1 = (np.asarray(v) for v in fig.axes[0].get_lines()[1].get_data())  # y = 1: π Φ(z)³
    assert_close(angle1, math.pi * norm.cdf(z1) ** 3, atol=1e-5, msg="angle of f(z, y = 1)")
    assert "note" in fig.axes[1].get_title()
    batched, _ = build_m2(M2Config(dataset="discrete_semicircle"), ds, [0.5, 0.5], 2)
    with pytest.raises(ValueError, match="restart-batched"):
        pf.functional_collapse_figure(ds, {"batched": batched})


def _true_model(ds) -> VAEModel:
    decoder = ds.decoder_family(None)
    decoder.set_ground_truth()
    return VAEModel(decoder, ds.latent_dim, ds.obs_dim, ds.obs_noise_var())


def test_posterior_means_match_the_closed_form_and_the_layout():
    from guides.mean_field import MeanFieldGuide

    ds = get_dataset("linear_jte")
    x, z = ds.sample(12, seed=3)[:2]
    guide = MeanFieldGuide(2, 2, (8,))
    means = pf.posterior_means(ds, x, gt_guide=guide, model=_true_model(ds), guide=guide)
    # E[z | x] = Lᵀ (L Lᵀ + Ψ)⁻¹ x for x = L z + ε, ε ~ N(0, Ψ) (the model at θ_GT is the truth)
    chol, psi = ds.chol, torch.diag(ds.obs_noise_var(dtype=torch.float64))
    exact = (chol.T @ torch.linalg.solve(chol @ chol.T + psi, x.double().T)).T
    assert_close(means.true, exact, atol=1e-4, rtol=0, msg="grid posterior mean vs closed form")
    assert means.distances()["learned_to_true"] < 1e-6
    assert len(pf.posterior_means_figure(ds, means).axes) == 4
    libi = pf.posterior_means(ds, x, gt_guide=guide, model=_true_model(ds), guide=guide, z=z, codes=z * 0.5)
    assert set(libi.distances()) >= {"codes_to_true"}
    assert len(pf.posterior_means_figure(ds, libi, method="LiBI").axes) == 6
    with pytest.raises(ValueError, match="both"):
        pf.posterior_means(ds, x, gt_guide=guide, model=_true_model(ds), guide=guide, z=z)
    with pytest.raises(ValueError, match="PosteriorMeans"):
        pf.posterior_means_figure(ds, {"q": 1})


def test_fit_jte_libi_trains_as_the_registered_method():
    """fit_jte keeps LiBI's code network but trains exactly what ``--method libi`` trains."""
    from pyro_vae.inference.methods import METHODS
    from pyro_vae.pipeline import RunConfig, prepare_run
    from pyro_vae.reproduce.figure_runs import fit_jte

    kw = dict(epochs=2, restarts=2, lr=0.01, batch_size=100)
    fit = fit_jte("linear_jte", "libi", evaluate=False, **kw)
    prepared = prepare_run(RunConfig(dataset="linear_jte", method="libi", **kw))
    result = METHODS["libi"].fit(prepared.model, prepared.guide, prepared.splits.train.x, prepared.splits.val.x,
                                 prepared.config, False)
    assert result.best_restart == fit.metrics["best_restart"]
    from pyro_vae.nets import select_restart

    ref = select_restart(prepared.model, result.best_restart).state_dict()
    for key, value in fit.model.state_dict().items():
        assert_close(value, ref[key], rtol=0, msg=key)
    assert fit.codes.shape == (500, 2) and fit.x.shape == (500, 2)
    with pytest.raises(ValueError, match="method="):
        fit_jte("linear_jte", "iwae")


def test_figure_command_writes_png_and_provenance(tmp_path, capsys):
    code = main(["figure", "004_fig3", "--out", str(tmp_path), "--dpi", "60"])
    assert code == 0
    assert (tmp_path / "004_fig3.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    record = json.loads((tmp_path / "provenance.json").read_text())["figures"]["004_fig3"]
    assert record["command"] == f"pyro-vae figure 004_fig3 --out {tmp_path} --dpi 60"
    assert record["files"] == ["004_fig3.png"] and record["wall_seconds"] >= 0
    assert {"torch", "pyro", "numpy"} <= set(record["packages"]) and "reductions" in record


def test_figure_command_errors_write_nothing(tmp_path, capsys):
    assert main(["figure", "004_fig9", "--out", str(tmp_path)]) == 2  # argparse's errors are one line, exit 2
    err = capsys.readouterr().err
    assert "invalid choice: '004_fig9'" in err and err.count("\n") == 1
    afile = tmp_path / "a.png"
    afile.write_bytes(b"x")
    assert main(["figure", "004_fig2", "--out", str(afile)]) == 2
    assert "expected a folder" in capsys.readouterr().err
    assert main(["figure", "004_fig2", "--out", str(tmp_path / "d"), "--dpi", "5"]) == 2
    assert "--dpi" in capsys.readouterr().err and not (tmp_path / "d").exists()


def test_source_commit_counts_changes_outside_the_figures_folder(tmp_path):
    from pyro_vae.cli.figures import source_commit
    from pyro_vae.reproduce.results import project_commit

    assert source_commit(tmp_path) == project_commit()  # a folder outside the repository: every change counts
