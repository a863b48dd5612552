"""``pyro-vae train-m2`` and ``train_and_evaluate_m2``: runs recorded, metrics, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from pyro_vae.cli import main
from pyro_vae.pipeline_m2 import M2Config, load_trained_m2, train_and_evaluate_m2
from pyro_vae.runs import RunStore

SHARED_UCI = (Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "uci").resolve()
needs_shared = pytest.mark.skipif(not (SHARED_UCI / "titanic.dat").is_file(),
                                  reason=f"the shared UCI copies are not at {SHARED_UCI}")
QUICK = ["--epochs", "1", "--batch-size", "500", "--hidden", "16", "16", "--eval-samples", "300", "--quiet"]


def _run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_train_m2_discrete_semicircle_json(tmp_path, capsys):
    runs = tmp_path / "runs"
    code, out, err = _run(capsys, "train-m2", "discrete_semicircle", "--guide", "relaxed", "--method", "iwae",
                          "--particles", "3", "--alpha", "1", "--gamma", "2", "--restarts", "2", *QUICK,
                          "--out", str(runs), "--json")
    assert code == 0, err
    summary = json.loads(out)
    m = summary["metrics"]
    assert summary["best_restart"] in (0, 1) and len(m["val_objective_per_restart"]) == 2
    for key in ("smooth_knn", "classifier_accuracy", "majority_accuracy", "function_gap", "function_gap_true",
                "cohort_separation", "cohort_separation_true", "counterfactual_rmse", "test_objective",
                "test_log_px_bound", "seconds_per_epoch"):
        assert m[key] is not None, key
    assert [c["cohort"] for c in m["cohorts"]] == ["y=0", "y=1"]
    assert all(c["smooth_knn"]["n"] == 100 for c in m["cohorts"])
    # 1 000 repeats of 100 vs 100 on fresh draws (the SE's size is checked in the metric's own tests)
    for knn in [m["smooth_knn"], *(c["smooth_knn"] for c in m["cohorts"])]:
        assert knn["repeats"] == 1000 and 0 < knn["se"] < 0.01 * abs(knn["mean"]) + 0.1, knn
    assert m["function_gap_true"] > 1.0  # the truth's two branches differ (004 App. H.1)
    assert 0 <= m["classifier_accuracy"] <= 1 and len(m["counterfactuals"]) == 5
    cf = m["counterfactuals"][0]
    assert cf["y_flipped"] == 1 - cf["y"] and len(cf["x_counterfactual"]) == 2 and len(cf["x_counterfactual_true"]) == 2
    run_dir = Path(summary["run_dir"])
    assert run_dir.name.startswith("discrete_semicircle-m2-")
    config = json.loads((run_dir / "config.json").read_text())
    assert (config["guide"], config["objective"], config["alpha"], config["gamma"]) == ("relaxed", "iwae", 1.0, 2.0)
    assert config["resolved_guide"] == "relaxed" and config["label_probs"] == [0.5, 0.5]
    [record] = RunStore(runs).list("finished")
    assert record.run_id == summary["run_id"]
    # the stored restart reloads into the same q(y|x)
    config_obj, dataset, model, guide, metrics = load_trained_m2(run_dir)
    x = dataset.splits(0).test.x[:50]
    acc = (guide.label_distribution(dataset.splits(0).test.x).probs.argmax(-1)
           == dataset.splits(0).test.y.argmax(-1)).float().mean()
    assert abs(float(acc) - m["classifier_accuracy"]) < 1e-6 and torch.isfinite(model.f(torch.zeros(50, 1), guide.label_distribution(x).probs)).all()


def test_train_m2_continuous_semicircle_table(tmp_path, capsys):
    runs = tmp_path / "runs"
    code, out, err = _run(capsys, "train-m2", "continuous_semicircle", "--z-encoder", "x", *QUICK, "--out", str(runs))
    assert code == 0, err
    assert "p(x|y=-3.5)" in out and "p(x|y=3.5)" in out and "RMSE" in out and "functional collapse" in out
    [record] = RunStore(runs).list("finished")
    config = json.loads((runs / record.run_dir / "config.json").read_text())
    assert config["z_given_y"] is False and config["resolved_guide"] == "gaussian"


@needs_shared
def test_train_m2_on_a_uci_split(tmp_path):
    config = M2Config("contraceptive", guide="enum", split=2, data_dir=str(SHARED_UCI), epochs=1, batch_size=100,
                      hidden=(16,), eval_samples=300, latent_dim=2, noise_var=0.5)
    summary = train_and_evaluate_m2(config, tmp_path / "runs", progress=False)
    m = summary["metrics"]
    assert [c["cohort"] for c in m["cohorts"]] == ["y=0 (no-use)", "y=1 (long-term)", "y=2 (short-term)"]
    assert m["function_gap_true"] is None and m["counterfactual_rmse"] is None
    assert m["labelled_train_points"] == 49 and len(m["counterfactuals"]) == 5
    assert m["counterfactuals"][0]["y_flipped"] == (m["counterfactuals"][0]["y"] + 1) % 3
    assert abs(m["majority_accuracy"] - 0.43) < 0.05


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["figure8"], "dataset 'figure8' has no labels"),
        (["nope"], "dataset 'nope'"),
        (["discrete_semicircle", "--guide", "mfg"], "--guide 'mfg'"),
        (["discrete_semicircle", "--guide", "gaussian"], "--guide 'gaussian'"),
        (["continuous_semicircle", "--guide", "enum"], "--guide 'enum'"),
        (["discrete_semicircle", "--method", "renyi"], "--method 'renyi'"),
        (["discrete_semicircle", "--objective", "renyi"], "--objective: invalid choice: 'renyi'"),
        (["discrete_semicircle", "--alpha", "-0.1"], "--alpha: invalid value '-0.1'"),
        (["discrete_semicircle", "--gamma", "0"], "--gamma: invalid value '0'"),
        (["discrete_semicircle", "--labelled-fraction", "1.5"], "--labelled-fraction: invalid value '1.5'"),
        (["discrete_semicircle", "--temperature", "0"], "--temperature: invalid value '0'"),
        (["discrete_semicircle", "--straight-through"], "--straight-through True"),
        (["discrete_semicircle", "--epochs", "0"], "--epochs: invalid value '0'"),
        (["discrete_semicircle", "--restarts", "0"], "--restarts: invalid value '0'"),
        (["discrete_semicircle", "--particles", "0"], "--particles: invalid value '0'"),
        (["discrete_semicircle", "--batch-size", "5001"], "--batch-size 5001"),
        (["discrete_semicircle", "--split", "2"], "--split 2"),
        (["discrete_semicircle", "--data-dir", "/tmp"], "--data-dir '/tmp'"),
        (["discrete_semicircle", "--device", "tpu"], "--device 'tpu'"),
        (["discrete_semicircle", "--z-encoder", "z"], "--z-encoder 'z'"),
        (["discrete_semicircle", "--method", "lin", "--option", "threshold=-1"], "--option threshold=-1"),
        (["discrete_semicircle", "--method", "lin", "--option", "max_inner_steps=3"], "--option max_inner_steps=3"),
        (["discrete_semicircle", "--option", "window=3"], "--option window=3"),
        (["discrete_semicircle", "--noise", "0"], "--noise '0'"),
        (["titanic", "--split", "5"], "--split 5"),
        (["titanic", "--data-seed", "1"], "--data-seed 1"),
        (["titanic", "--data-dir", "/nonexistent-uci"], "has no titanic.dat"),
    ],
)
def test_bad_input_exits_2_and_writes_nothing(tmp_path, capsys, argv, needle):
    runs = tmp_path / "runs"
    code, out, err = _run(capsys, "train-m2", *argv, "--out", str(runs), "--quiet")
    assert code == 2, err
    assert needle in err and err.count("\n") == 1, err
    assert not runs.exists()


def test_plain_train_points_to_train_m2(tmp_path, capsys):
    code, _, err = _run(capsys, "train", "discrete_semicircle", "--method", "vae", "--out", str(tmp_path / "r"))
    assert code == 2 and "M2 model" in err
    assert not (tmp_path / "r").exists()
    # `train DATASET --method m2 ...` is `train-m2 DATASET ...`, with every M2 option
    code, out, _ = _run(capsys, "train", "discrete_semicircle", "--method", "m2", "--guide", "relaxed",
                        "--alpha", "0.5", *QUICK, "--json", "--out", str(tmp_path / "r"))
    summary = json.loads(out)
    config = json.loads((Path(summary["run_dir"]) / "config.json").read_text())
    assert code == 0 and (config["guide"], config["alpha"], config["method"]) == ("relaxed", 0.5, "m2")
    code, _, err = _run(capsys, "train", "figure8", "--method=m2", "--out", str(tmp_path / "r2"))
    assert code == 2 and "figure8" in err and not (tmp_path / "r2").exists()
    code, out, _ = _run(capsys, "methods", "--json")
    assert code == 0 and any(row["name"] == "m2" and "train-m2" in row["description"] for row in json.loads(out))
