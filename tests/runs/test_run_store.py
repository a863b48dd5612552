"""RunStore and Run: lifecycle, statuses in the index, lookups by config hash."""

import json
import socket
import sqlite3

import numpy as np
import pytest
import torch

from pyro_vae.runs import RunStore, config_hash, load_run
from pyro_vae.runs.index import RunIndex

CONFIG = {"dataset": "figure8", "method": "iwae", "seed": 3, "train": {"lr": 1e-3, "steps": 10}}


def _finished_run(store, config=CONFIG, metrics=None):
    with store.start(config) as run:
        run.write_history([{"step": 0, "loss": 2.0}, {"step": 1, "loss": 1.5}])
        run.save_params({"w": torch.ones(2)})
        run.finish(metrics or {"loglik": -1.25})
    return run


def test_config_hash_is_canonical():
    digest = config_hash(CONFIG)
    assert len(digest) == 16 and int(digest, 16) >= 0
    reordered = {"train": {"steps": 10, "lr": 1e-3}, "seed": np.int64(3), "method": "iwae", "dataset": "figure8"}
    assert config_hash(reordered) == digest
    assert config_hash({**CONFIG, "seed": 4}) != digest
    with pytest.raises(ValueError, match="expected a dict"):
        config_hash([1, 2])
    with pytest.raises(ValueError, match=r"config\['lr'\] is nan"):
        config_hash({"lr": float("nan")})


def test_store_creates_nothing_until_first_start(tmp_path):
    store = RunStore(tmp_path / "runs")
    assert store.list() == [] and store.finished(CONFIG) is None
    assert not (tmp_path / "runs").exists()
    store.start(CONFIG)
    assert (tmp_path / "runs" / "index.sqlite").is_file()


def test_bad_root_raises_before_any_write(tmp_path):
    (tmp_path / "file").write_text("x")
    for root in (tmp_path / "file", tmp_path / "file" / "runs"):
        with pytest.raises(ValueError, match="is not a directory"):
            RunStore(root)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_finished_run_is_listed_with_metrics_and_files(tmp_path):
    store = RunStore(tmp_path)
    run = _finished_run(store)
    assert run.run_id.startswith("figure8-iwae-" + config_hash(CONFIG)[:8])
    (record,) = store.list()
    assert record.status == "finished" and record.metrics == {"loglik": -1.25}
    assert record.run_id == run.run_id and record.run_dir == run.run_dir and record.error is None
    assert record.config == CONFIG and record.created <= record.finished
    assert store.list("finished") == [record] and store.list("running") == []
    names = sorted(p.name for p in run.run_dir.iterdir())
    assert names == ["config.json", "history.csv", "metrics.json", "params.pt", "provenance.json"]
    con = sqlite3.connect(tmp_path / "index.sqlite")
    try:
        stored = con.execute("SELECT run_dir FROM runs").fetchall()
    finally:
        con.close()
    assert stored == [(run.run_id,)]  # relative to the runs folder


def test_provenance_records_versions_seed_and_times_but_no_hostname(tmp_path):
    run = _finished_run(RunStore(tmp_path))
    text = run.path("provenance.json").read_text()
    record = json.loads(text)
    assert record["versions"]["torch"] == torch.__version__
    assert set(record["versions"]) == {"python", "pyro_vae", "torch", "pyro", "numpy"}
    assert record["seed"] == 3 and record["config_hash"] == config_hash(CONFIG)
    assert record["start_time"] <= record["end_time"]
    assert socket.gethostname() not in text


def test_exception_in_with_block_marks_failed_and_reraises(tmp_path):
    store = RunStore(tmp_path)
    with pytest.raises(RuntimeError, match="boom"):
        with store.start(CONFIG) as run:
            run.save_params({"w": torch.zeros(1)})
            raise RuntimeError("boom")
    (record,) = store.list()
    assert record.status == "failed" and record.error == "RuntimeError: boom" and record.metrics is None
    assert not run.path("metrics.json").exists()
    assert "Traceback" in run.path("error.txt").read_text()
    assert store.finished(CONFIG) is None


def test_index_failure_during_finish_leaves_no_finished_looking_folder(tmp_path, monkeypatch):
    store = RunStore(tmp_path)
    original, calls = RunIndex.update, []

    def flaky_update(self, run_id, **fields):
        calls.append(fields.get("status"))
        if len(calls) == 1:
            raise OSError("index unavailable")
        return original(self, run_id, **fields)

    monkeypatch.setattr(RunIndex, "update", flaky_update)
    with pytest.raises(OSError, match="index unavailable"):
        with store.start(CONFIG) as run:
            run.finish({"loglik": 0.0})
    assert calls == ["finished", "failed"]
    assert store.list()[0].status == "failed"
    assert not run.path("metrics.json").exists() and load_run(run.run_dir, params=False).status == "failed"


def test_leaving_with_block_without_finish_fails_the_run(tmp_path):
    store = RunStore(tmp_path)
    with store.start(CONFIG):
        pass
    assert store.list()[0].status == "failed" and "without run.finish()" in store.list()[0].error


def test_run_started_but_never_finished_is_not_reported_finished(tmp_path):
    store = RunStore(tmp_path)
    run = store.start(CONFIG)
    run.save_params({"w": torch.ones(1)})  # then the process "dies": no finish, no fail
    assert [r.status for r in store.list()] == ["running"]
    assert store.list("finished") == [] and store.finished(CONFIG) is None
    assert load_run(run.run_dir).status == "running"


def test_finished_finds_by_hash_and_ignores_failed_runs(tmp_path):
    store = RunStore(tmp_path)
    with pytest.raises(ValueError):
        with store.start(CONFIG):
            raise ValueError("diverged")
    assert store.finished(CONFIG) is None
    first = _finished_run(store, metrics={"loglik": -2.0})
    second = _finished_run(store, metrics={"loglik": -1.0})
    _finished_run(store, config={**CONFIG, "seed": 4})
    reordered = dict(reversed(list(CONFIG.items())))
    assert store.finished(reordered).run_id == second.run_id
    assert [r.run_id for r in store.find(CONFIG)][1:] == [first.run_id, second.run_id]
    assert [r.status for r in store.find(CONFIG)] == ["failed", "finished", "finished"]
    assert store.finished({**CONFIG, "seed": 5}) is None
    assert store.get(first.run_id).metrics == {"loglik": -2.0} and store.get("nope") is None


def test_same_config_gets_distinct_folders(tmp_path):
    store = RunStore(tmp_path)
    a, b = store.start(CONFIG), store.start(CONFIG)
    assert a.run_dir != b.run_dir and a.run_dir.is_dir() and b.run_dir.is_dir()
    assert a.run_id.endswith("-1") and b.run_id.endswith("-2")
    assert len(store.find(CONFIG)) == 2


def test_name_replaces_dataset_and_method_and_is_validated(tmp_path):
    store = RunStore(tmp_path / "runs")
    with pytest.raises(ValueError, match="name='../evil'"):
        store.start(CONFIG, name="../evil")
    assert not (tmp_path / "runs").exists()
    assert store.start(CONFIG, name="fig3").run_id == f"fig3-{config_hash(CONFIG)[:8]}-1"
    assert store.start({"x": 1}).run_id == f"{config_hash({'x': 1})[:8]}-1"


def test_bad_metrics_raise_before_writing_and_run_can_still_fail(tmp_path):
    store = RunStore(tmp_path)
    run = store.start(CONFIG)
    with pytest.raises(ValueError, match="has type object"):
        run.finish({"bad": object()})
    assert not run.path("metrics.json").exists() and store.list()[0].status == "running"
    run.fail("gave up")
    assert store.list()[0].status == "failed" and store.list()[0].error == "gave up"


def test_nonfinite_metrics_are_stored_as_null(tmp_path):
    run = _finished_run(RunStore(tmp_path), metrics={"mi": float("nan"), "loglik": -1.0})
    assert json.loads(run.path("metrics.json").read_text()) == {"loglik": -1.0, "mi": None}


def test_finished_run_is_read_only(tmp_path):
    store = RunStore(tmp_path)
    with pytest.raises(KeyError):
        with store.start(CONFIG) as run:
            run.finish({"loglik": 1.0})
            raise KeyError("after finish")
    assert store.list()[0].status == "finished"  # an error after finish() does not undo it
    for action in (lambda: run.save_params({}), lambda: run.fail("late"), lambda: run.finish({})):
        with pytest.raises(RuntimeError, match="already finished"):
            action()


def test_failed_start_removes_its_folder(tmp_path, monkeypatch):
    store = RunStore(tmp_path)

    def broken_insert(self, **row):
        raise OSError("index unavailable")

    monkeypatch.setattr(RunIndex, "insert", broken_insert)
    with pytest.raises(OSError):
        store.start(CONFIG)
    assert [p.name for p in tmp_path.iterdir()] == ["index.sqlite"]
    monkeypatch.undo()

    def broken_write(path, obj, **kw):
        raise OSError("disk full")

    monkeypatch.setattr("pyro_vae.runs.store.write_json", broken_write)
    with pytest.raises(OSError, match="disk full"):
        store.start(CONFIG)
    assert [p.name for p in tmp_path.iterdir()] == ["index.sqlite"] and store.list() == []


def test_list_rejects_unknown_status(tmp_path):
    with pytest.raises(ValueError, match="status='done'"):
        RunStore(tmp_path).list("done")
