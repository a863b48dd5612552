"""Grouped sweeps record every config as its own run; shared artefacts are built once per key."""

import pytest
import torch

from pyro_vae.datasets import get_dataset
from pyro_vae.nets import MLP, slice_restarts, stack_restarts
from pyro_vae.pipeline import RunConfig, train_and_evaluate
from pyro_vae.reproduce.groups import make_groups, train_group
from pyro_vae.reproduce.sweep import run_sweep
from pyro_vae.runs import RunStore, load_run

TINY = dict(dataset="circle", restarts=2, epochs=2, eval_samples=50, hidden=(8,), batch_size=100)


def test_stack_then_slice_gives_back_each_module():
    torch.manual_seed(0)
    parts = [MLP(2, 3, (4,), num_restarts=r) for r in (2, 1, 3)]
    stacked = stack_restarts(parts)
    assert stacked.num_restarts == 6
    x = torch.randn(5, 2)
    out = stacked(x)
    start = 0
    for part in parts:
        back = slice_restarts(stacked, start, part.num_restarts)
        assert torch.equal(back(x), part(x))
        assert torch.equal(out[start : start + part.num_restarts], part(x))
        start += part.num_restarts


@pytest.mark.parametrize("name", ["linear_jte", "cubic_jte", "gaussian", "case1", "case2"])
def test_stacked_parametric_families_carry_every_restart(name):
    """000's likelihood families stack like the MLP: the noise variance too (it used to keep the
    first part's restart count, so a group of β-VAEs or data versions on these sets failed)."""
    torch.manual_seed(0)
    ds = get_dataset(name)
    parts = [ds.decoder_family(r) for r in (2, 3)]
    stacked = stack_restarts(parts)
    z = torch.randn(5, 4, ds.latent_dim)
    assert stacked.noise_var().shape[0] == 5
    back = [slice_restarts(stacked, 0, 2), slice_restarts(stacked, 2, 3)]
    for part, piece, rows in zip(parts, back, (slice(0, 2), slice(2, 5))):
        assert torch.equal(piece.noise_var(), part.noise_var())
        assert torch.equal(stacked.noise_var()[rows], part.noise_var())
        assert torch.equal(stacked(z)[rows], part(z[rows]))


def test_groups_hold_configs_differing_only_in_version_and_seed():
    a = [RunConfig(**TINY, data_seed=v, seed=s) for v in (0, 1) for s in (0, 1)]
    b = [RunConfig(**TINY, method="iwae", particles=3, data_seed=v) for v in (0, 1)]
    c = [RunConfig(**{**TINY, "epochs": 3}, data_seed=0)]
    groups = make_groups(a + b + c)
    assert [len(g) for g in groups] == [4, 2, 1]
    assert [len(g) for g in make_groups(a, max_restarts=4)] == [2, 2]


def test_lin_grid_points_share_a_group_but_not_other_options():
    lin = [RunConfig(**TINY, method="lin", options={"threshold": t, "window": w}, data_seed=v)
           for t in (0.05, 0.1) for w in (5, 10) for v in (0, 1)]
    other = [RunConfig(**TINY, method="lin", options={"max_inner_steps": 7}, data_seed=0)]
    assert [len(g) for g in make_groups(lin + other)] == [8, 1]
    betas = [RunConfig(**TINY, method="beta", beta=b, data_seed=v) for b in (0.5, 2.0) for v in (0, 1)]
    warmed = [RunConfig(**TINY, method="beta", beta=2.0, anneal_epochs=1, data_seed=0)]
    assert [len(g) for g in make_groups(betas + warmed)] == [4, 1]


def test_a_group_of_beta_runs_records_each_runs_own_beta(tmp_path):
    configs = [RunConfig(**TINY, method="beta", beta=b, data_seed=0) for b in (0.5, 5.0)]
    summaries = train_group(configs, tmp_path, progress=False)
    for cfg, summary in zip(configs, summaries):
        loaded = load_run(summary["run_dir"])
        assert loaded.config["beta"] == cfg.beta and loaded.metrics["group_size"] == 2


def test_group_records_each_run_with_its_own_data_and_selection(tmp_path):
    configs = [RunConfig(**TINY, data_seed=v) for v in (0, 1, 2)]
    summaries = train_group(configs, tmp_path)
    store = RunStore(tmp_path)
    for cfg, summary in zip(configs, summaries):
        record = store.finished(cfg.resolved().to_dict())
        assert record is not None and record.run_id == summary["run_id"]
        loaded = load_run(tmp_path / record.run_dir)
        assert loaded.metrics["group_size"] == 3
        assert {row["restart"] for row in loaded.history} == {0, 1}
        per_restart = loaded.metrics["val_objective_per_restart"]
        assert loaded.metrics["best_restart"] == max(range(2), key=per_restart.__getitem__)
    # three data versions: three different test sets, so three different truths
    truths = {round(s["metrics"]["true_loglik"], 6) for s in summaries}
    assert len(truths) == 3


def test_grouped_sweep_resumes_per_run(tmp_path):
    configs = [RunConfig(**TINY, data_seed=v) for v in (0, 1)]
    first = run_sweep(configs[:1], tmp_path, progress=False)
    again = run_sweep(configs, tmp_path, progress=False)
    assert (first.ran, again.skipped, again.ran) == (1, 1, 1)
    assert len(RunStore(tmp_path).list(status="finished")) == 2


def test_gt_initialisation_and_true_loglik_are_shared_artefacts(tmp_path):
    """The VAE and the IWAE run of one data version use the same GT initialisation and true
    test log-likelihood, built by the first run and reused by the second."""
    common = dict(TINY, init="mixed", gt_fit_steps=300)
    vae = train_and_evaluate(RunConfig(**common), tmp_path, progress=False)["metrics"]
    iwae = train_and_evaluate(RunConfig(**common, method="iwae", particles=2), tmp_path, progress=False)["metrics"]
    other_version = train_and_evaluate(RunConfig(**common, data_seed=1), tmp_path, progress=False)["metrics"]
    assert vae["artefacts"] == iwae["artefacts"]
    kinds = sorted(ref.split("/")[0] for ref in vae["artefacts"])
    assert kinds == ["gt_decoder", "gt_init", "true_test_loglik"]
    assert vae["true_loglik"] == iwae["true_loglik"] and vae["gt_decoder_mse"] == iwae["gt_decoder_mse"]
    # a new data version: a new φ_GT and test set, but the decoder fit (version-independent) is reused
    shared = set(vae["artefacts"]) & set(other_version["artefacts"])
    assert [ref.split("/")[0] for ref in shared] == ["gt_decoder"]
    for ref in vae["artefacts"]:
        assert (tmp_path / "artefacts" / f"{ref}.pt").is_file() and (tmp_path / "artefacts" / f"{ref}.json").is_file()
