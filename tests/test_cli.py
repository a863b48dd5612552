"""The pyro-vae command line: JSON contracts, files written, and clear errors with exit code 2."""

import json

import numpy as np
import pytest

from pyro_vae.cli import main
from pyro_vae.runs import RunStore


def _run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_datasets_json_lists_every_set(capsys):
    code, out, _ = _run(capsys, "datasets", "--json")
    rows = json.loads(out)
    assert code == 0
    names = {r["name"] for r in rows}
    assert {"figure8", "clusters", "linear_jte", "mobius", "case1"} <= names
    fig8 = next(r for r in rows if r["name"] == "figure8")
    assert (fig8["latent_dim"], fig8["obs_dim"], fig8["noise_var"]) == (1, 2, 0.02)


def test_datasets_table(capsys):
    code, out, _ = _run(capsys, "datasets")
    assert code == 0 and "figure8" in out and "σ²" in out


@pytest.mark.parametrize("ext", [".csv", ".npz"])
def test_sample_writes_x_and_z(tmp_path, capsys, ext):
    path = tmp_path / f"s{ext}"
    code, out, _ = _run(capsys, "sample", "circle", "-n", "7", "--seed", "3", "--out", str(path))
    assert code == 0 and path.exists()
    if ext == ".npz":
        data = np.load(path)
        assert data["x"].shape == (7, 2) and data["z"].shape == (7, 1)
        assert np.allclose(np.hypot(*data["x"].T), 1.0, atol=0.5)
    else:
        header = path.read_text().splitlines()[0]
        assert header == "x1,x2,z1" and len(path.read_text().splitlines()) == 8


def test_train_and_evaluate_json(tmp_path, capsys):
    runs = tmp_path / "runs"
    code, out, _ = _run(
        capsys, "train", "figure8", "--epochs", "1", "--restarts", "2", "--eval-samples", "50",
        "--hidden", "8", "--out", str(runs), "--json", "--quiet",
    )
    assert code == 0
    summary = json.loads(out)
    assert set(summary) >= {"run_dir", "best_restart", "metrics"}
    m = summary["metrics"]
    for key in ("test_loglik", "test_loglik_se", "test_loglik_exact", "true_loglik"):
        assert key in m
    assert m["test_loglik"] < m["true_loglik"]  # one epoch is far from the truth
    assert abs(m["test_loglik_exact"] - m["test_loglik"]) < 0.5
    assert summary["best_restart"] in (0, 1)
    [record] = RunStore(runs).list()
    assert record.status == "finished"

    code, out, _ = _run(capsys, "evaluate", summary["run_dir"], "--json", "--eval-samples", "50")
    again = json.loads(out)
    assert code == 0 and again["best_restart"] == summary["best_restart"]
    assert abs(again["metrics"]["test_loglik"] - m["test_loglik"]) < 1e-6  # same seed, same numbers


@pytest.mark.parametrize(
    "argv,needle",
    [
        (["train", "nope"], "dataset 'nope'"),
        (["train", "figure8", "--method", "gan"], "--method 'gan'"),
        (["train", "figure8", "--epochs", "0"], "--epochs: invalid value '0'"),
        (["train", "figure8", "--restarts", "-1"], "--restarts: invalid value '-1'"),
        (["train", "figure8", "--batch-size", "5001"], "--batch-size 5001"),
        (["train", "figure8", "--device", "tpu"], "--device 'tpu'"),
        (["train", "discrete_semicircle"], "semi-supervised"),
        (["train", "mobius", "--decoder", "family"], "no parametric family"),
    ],
)
def test_bad_train_input_exits_2_and_writes_nothing(tmp_path, capsys, argv, needle):
    runs = tmp_path / "runs"
    code, out, err = _run(capsys, *argv, "--out", str(runs), "--quiet")
    assert code == 2
    assert needle in err and err.count("\n") == 1
    assert not runs.exists()


def test_cuda_request_without_cuda_is_a_clear_error(tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is present")
    code, _, err = _run(capsys, "train", "figure8", "--device", "cuda", "--out", str(tmp_path / "r"))
    assert code == 2 and "CUDA is not available" in err


def test_evaluate_unreadable_run_dir(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code, _, err = _run(capsys, "evaluate", str(tmp_path / "empty"))
    assert code == 2 and "empty" in err
    code, _, err = _run(capsys, "evaluate", str(tmp_path / "missing"))
    assert code == 2 and "missing" in err


def test_sample_bad_extension_writes_nothing(tmp_path, capsys):
    code, _, err = _run(capsys, "sample", "circle", "-n", "3", "--out", str(tmp_path / "a.txt"))
    assert code == 2 and ".npz" in err and not (tmp_path / "a.txt").exists()


def test_argparse_rejects_non_integer_sizes(capsys):
    code, _, err = _run(capsys, "sample", "circle", "-n", "zero", "--out", "x.csv")
    assert code == 2 and "argument -n: invalid value 'zero'" in err and err.count("\n") == 1
