"""Every experiment config parses, validates, and runs in quick mode at tiny sizes (a smoke test)."""

from pathlib import Path

import pytest
import torch
from common import assert_close

from pyro_vae.datasets import get_dataset
from pyro_vae.reproduce.experiments import experiment_names, load_experiment
from pyro_vae.reproduce.report import build_rows, columns, metric_noise, to_markdown
from pyro_vae.reproduce.sweep import run_sweep

UCI = ("diabetic_retinopathy", "contraceptive", "titanic")
TINY = {"epochs": 2, "restarts": 2, "eval_samples": 50, "hidden": (8,), "gt_fit_steps": 20}


def test_there_is_a_config_per_table():
    names = set(experiment_names())
    assert {"004_table1", "004_table2", "004_spiral_noise", "000_table1"} <= names


@pytest.mark.parametrize("name", experiment_names())
def test_config_validates_and_carries_the_papers_numbers(name):
    exp = load_experiment(name)
    full, quick = exp.runs(), exp.runs(quick=True)
    assert 0 < len(quick) <= len(full)
    for cfg in full:
        cfg.validate()  # every method, option and data set exists
    if exp.reduced:  # the stated reduced protocol: fewer or shorter runs, every one valid, its reductions listed
        reduced = exp.protocol(reduced=True)
        assert reduced.reductions and 0 < len(reduced.search_runs()) <= reduced.planned_runs() <= len(full)

        def cost(runs):
            return sum(c.epochs * c.restarts for c in runs)

        assert reduced.planned_runs() < len(full) or cost(reduced.runs()) < cost(full)
        for cfg in reduced.runs():
            cfg.validate()
    # every paper value names a data set and a column of the report
    cols = set(columns(exp))
    for metric, per_dataset in exp.paper_values.items():
        assert metric in exp.metrics, metric
        for dataset, per_column in per_dataset.items():
            assert dataset in exp.datasets, dataset
            assert set(per_column) <= cols, (set(per_column) - cols)


@pytest.mark.slow
@pytest.mark.parametrize("name", experiment_names())
def test_quick_mode_runs_end_to_end_at_tiny_sizes(name, tmp_path):
    exp = load_experiment(name)
    overrides = dict(TINY)
    if any(d in ("diabetic_retinopathy", "contraceptive", "titanic") for d in exp.datasets):
        uci = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "uci"
        if not uci.is_dir():
            pytest.skip(f"the UCI files are not at {uci} (they are never committed; see shared/data/uci)")
        overrides["data_dir"] = str(uci)
    configs = exp.runs(quick=True, overrides=overrides)
    # one data set per config keeps the smoke test short; the others share the code path
    configs = [c for c in configs if c.dataset == exp.datasets[0]]
    result = run_sweep(configs, tmp_path / "runs", progress=False)
    assert result.failed == [] and result.ran == len(configs)
    rows = build_rows(exp, tmp_path / "runs", quick=True, overrides=overrides)
    first = [r for r in rows if r.dataset == exp.datasets[0]]
    assert first and all(r.runs >= 1 for r in first)  # (versions counts only the runs with a value)
    assert any(r.ours_mean is not None for r in first)
    assert exp.datasets[0] in to_markdown(exp, rows, quick=True)
    if exp.kind == "m2":  # the smooth kNN's own SE and repeats reach the report's noise table
        noise = metric_noise(exp, tmp_path / "runs", quick=True, overrides=overrides)
        assert any(r["metric"] == "smooth_knn.mean" and r["repeats"] == "1000" and r["within_run_se"] > 0
                   for r in noise), noise
    from pyro_vae.reproduce.figures import experiment_figures

    written = experiment_figures(exp, tmp_path, quick=True, overrides=overrides)
    if exp.datasets[0] not in UCI:  # the UCI tables have more than 2 columns: no panels
        assert written and all(p.read_bytes()[:4] == b"\x89PNG" for p in written)


def test_the_true_mean_field_posteriors_of_a_linear_truth_aggregate_to_the_prior():
    # 000 Figure 1E: the truth's aggregate posterior, beside the learned ones
    from pyro_vae.metrics import aggregate_posterior
    from pyro_vae.reproduce.figures import _true_mean_field

    ds = get_dataset("linear_jte")
    x = ds.splits(0).test.x
    loc, scale = _true_mean_field(ds, x)
    w = ds.chol  # x = W z + ε, ε ~ N(0, diag ψ)
    precision = torch.eye(2, dtype=torch.float64) + w.T @ torch.diag(1 / ds.obs_noise_var(dtype=torch.float64)) @ w
    assert_close(scale[0] ** 2, 1 / torch.diagonal(precision), rtol=1e-10)
    assert_close(loc, torch.linalg.solve(precision, w.T @ torch.diag(1 / ds.obs_noise_var(dtype=torch.float64))
                                         @ x.double().T).T, rtol=1e-8, atol=1e-10)
    # the moments of N = 500 encodings scatter around the prior's: E[KL] ≈ (K + K(K+1)/2) / (2N) = 0.005
    assert aggregate_posterior(loc, scale).prior_kl < 0.02
    assert _true_mean_field(get_dataset("figure8"), get_dataset("figure8").splits(0).test.x) is None
