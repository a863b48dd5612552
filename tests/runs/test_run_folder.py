"""load_run and update_metrics: reading run folders back, and the errors for bad ones."""

import json

import pytest
import torch

from pyro_vae.runs import RunDirError, RunStore, load_run, update_metrics

CONFIG = {"dataset": "circle", "method": "vae", "seed": 0}


@pytest.fixture
def store(tmp_path):
    return RunStore(tmp_path / "runs")


@pytest.fixture
def finished(store):
    with store.start(CONFIG) as run:
        run.write_history([{"step": 0, "loss": 3.5, "note": "warmup"}, {"step": 1, "loss": 2.25, "note": ""}])
        run.save_params({"decoder.weight": torch.arange(6.0).reshape(2, 3), "step": 2})
        run.finish({"loglik": -1.5, "mi": 0.25})
    return run


def test_load_run_round_trip(finished):
    loaded = load_run(str(finished.run_dir))
    assert loaded.run_id == finished.run_id and loaded.run_dir == finished.run_dir
    assert loaded.config == CONFIG and loaded.metrics == {"loglik": -1.5, "mi": 0.25}
    assert loaded.history == [{"step": 0, "loss": 3.5, "note": "warmup"}, {"step": 1, "loss": 2.25, "note": None}]
    assert torch.equal(loaded.params["decoder.weight"], torch.arange(6.0).reshape(2, 3))
    assert loaded.params["step"] == 2
    assert loaded.status == "finished" and loaded.error is None
    assert loaded.provenance["seed"] == 0


def test_missing_dir_raises_run_dir_error_naming_path(tmp_path):
    missing = tmp_path / "no-such-run"
    with pytest.raises(RunDirError, match="does not exist") as info:
        load_run(missing)
    assert isinstance(info.value, ValueError) and str(missing) in str(info.value)
    (tmp_path / "plain-file").write_text("x")
    with pytest.raises(RunDirError, match="is not a directory"):
        load_run(tmp_path / "plain-file")


def test_dir_without_config_raises_naming_path_and_file(tmp_path):
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "params.pt").write_bytes(b"")
    with pytest.raises(RunDirError) as info:
        load_run(tmp_path / "half")
    message = str(info.value)
    assert str(tmp_path / "half") in message and "config.json is missing" in message and "params.pt" in message


def test_garbled_config_raises_naming_file(finished):
    (finished.run_dir / "config.json").write_text('{"dataset": ')
    with pytest.raises(RunDirError, match="config.json' is unreadable"):
        load_run(finished.run_dir)
    (finished.run_dir / "config.json").write_text("[1, 2]")
    with pytest.raises(RunDirError, match="config.json' is garbled"):
        load_run(finished.run_dir)


def test_corrupt_or_unsafe_params_raise(finished):
    params = finished.run_dir / "params.pt"
    params.write_bytes(b"not a checkpoint")
    with pytest.raises(RunDirError, match="params.pt' is unreadable"):
        load_run(finished.run_dir)
    torch.save({"obj": _Unsafe()}, params)
    with pytest.raises(RunDirError, match="params.pt' is unreadable"):
        load_run(finished.run_dir)


class _Unsafe:
    pass


def test_failed_run_without_params(store):
    with pytest.raises(FloatingPointError):
        with store.start(CONFIG) as run:
            raise FloatingPointError("loss is NaN at step 17")
    with pytest.raises(RunDirError, match=r"params.pt' is missing; the run failed: FloatingPointError: loss is NaN"):
        load_run(run.run_dir)
    loaded = load_run(run.run_dir, params=False)
    assert loaded.status == "failed" and loaded.params is None and loaded.metrics is None
    assert loaded.error == "FloatingPointError: loss is NaN at step 17" and loaded.history == []


def test_update_metrics_merges_and_updates_index(store, finished):
    new = update_metrics(finished.run_dir, {"mi": 0.5, "knn": float("inf")})
    assert new == {"loglik": -1.5, "mi": 0.5, "knn": None}
    assert json.loads((finished.run_dir / "metrics.json").read_text()) == new
    assert store.get(finished.run_id).metrics == new and store.get(finished.run_id).status == "finished"
    assert "metrics_updated" in load_run(finished.run_dir).provenance
    assert update_metrics(finished.run_dir, {"knn": 1.0}, merge=False) == {"knn": 1.0}
    assert store.get(finished.run_id).metrics == {"knn": 1.0}


def test_update_metrics_refuses_unfinished_runs_and_bad_input(store, finished):
    running = store.start(CONFIG)
    with pytest.raises(RunDirError, match="is running"):
        update_metrics(running.run_dir, {"loglik": 0.0})
    assert not (running.run_dir / "metrics.json").exists()
    with pytest.raises(ValueError, match="has type object"):
        update_metrics(finished.run_dir, {"bad": object()})
    assert load_run(finished.run_dir).metrics == {"loglik": -1.5, "mi": 0.25}
