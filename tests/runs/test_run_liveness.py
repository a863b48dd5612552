"""Runs that die are never alive: owners, heartbeats, stale and interrupted runs, settle and prune."""

import json
import multiprocessing
import os
import sqlite3
import time

import pytest
import torch

from pyro_vae.runs import RunIndexError, RunStore, load_run
from pyro_vae.runs import owner as owner_mod
from pyro_vae.runs import progress
from pyro_vae.runs.index import RunIndex

CONFIG = {"dataset": "toy", "method": "vae", "seed": 0}
OTHER = {"dataset": "toy", "method": "iwae", "seed": 0}


def _start_and_exit(root: str, config: dict, save: bool) -> None:
    run = RunStore(root).start(config)
    if save:  # killed after the parameters and metrics were written, before the index said finished
        run.save_params({"w": torch.ones(1)})
        (run.run_dir / "metrics.json").write_text('{"loglik": -1.0}')
    os._exit(1)


def _dead_run(root, config=CONFIG, save=False) -> None:
    p = multiprocessing.get_context("fork").Process(target=_start_and_exit, args=(str(root), config, save))
    p.start()
    p.join(60)
    assert p.exitcode == 1


def test_owner_is_recorded_and_this_process_is_alive(tmp_path):
    store = RunStore(tmp_path)
    run = store.start(CONFIG)
    (record,) = store.list()
    assert record.status == "running" and record.owner["pid"] == os.getpid()
    assert record.heartbeat == record.created and record.step is None
    assert owner_mod.owner_alive(**{k: record.owner[k] for k in ("host", "pid", "token")}) is True
    run.fail("done")


def test_dead_owner_reads_stale_and_other_hosts_go_by_heartbeat(tmp_path):
    _dead_run(tmp_path)
    store = RunStore(tmp_path)
    (record,) = store.list()
    assert record.status == "stale" and store.list("stale") == [record] and store.list("running") == []
    # a pid reused by another process is not the owner: same pid, different start token
    assert owner_mod.owner_alive(record.owner["host"], os.getpid(), "x:1") is False
    # another host cannot be asked: a fresh heartbeat is alive, an old one is stale
    from pyro_vae.provenance import utc_now

    assert owner_mod.is_stale("elsewhere", 1, "", utc_now()) is False
    assert owner_mod.is_stale("elsewhere", 1, "", "2000-01-01T00:00:00+00:00") is True


def test_heartbeat_writes_time_and_step(tmp_path):
    store = RunStore(tmp_path, heartbeat_seconds=0.05)
    run = store.start(CONFIG)
    progress.report(step=7, epoch=2)
    first = store.get(run.run_id).heartbeat
    deadline = time.time() + 10
    while time.time() < deadline and (store.get(run.run_id).step != 7 or store.get(run.run_id).heartbeat == first):
        time.sleep(0.05)
    record = store.get(run.run_id)
    assert record.step == 7 and record.heartbeat > first
    run.finish({"loglik": 0.0})
    beat = store.get(run.run_id).heartbeat
    time.sleep(0.3)
    assert store.get(run.run_id).heartbeat == beat and store.get(run.run_id).status == "finished"


def test_keyboard_interrupt_marks_the_run_interrupted_with_the_step(tmp_path):
    store = RunStore(tmp_path)
    with pytest.raises(progress.Interrupted):
        with store.start(CONFIG) as run:
            progress.report(step=120, epoch=3)
            raise progress.Interrupted(15)
    (record,) = store.list()
    assert record.status == "interrupted" and record.step == 120
    assert record.error == "interrupted by SIGTERM at step 120 (epoch 3)"
    assert load_run(run.run_dir, params=False).status == "interrupted"
    assert progress.last_interrupted() == (run.run_id, record.error)
    assert store.finished(CONFIG) is None


def test_settle_recovers_finished_work_and_replaces_dead_rows(tmp_path):
    _dead_run(tmp_path, CONFIG, save=True)  # stale, but its metrics and params are whole
    _dead_run(tmp_path, OTHER)  # stale, nothing finished
    store = RunStore(tmp_path)
    with store.start(OTHER) as failed:
        failed.fail("NaN")
    before = {r.run_id: r.status for r in store.list()}
    assert sorted(before.values()) == ["failed", "stale", "stale"]
    store.settle([CONFIG, OTHER])
    after = store.list()
    assert [(r.config_hash, r.status) for r in after] == [(store.find(CONFIG)[0].config_hash, "finished")]
    assert after[0].metrics == {"loglik": -1.0}
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([after[0].run_id, "index.sqlite"])


def test_settle_leaves_live_runs_and_other_configs_alone(tmp_path):
    store = RunStore(tmp_path)
    alive = store.start(CONFIG)
    _dead_run(tmp_path, OTHER)
    store.settle([CONFIG])
    assert {r.status for r in store.list()} == {"running", "stale"}
    alive.fail("done")


def test_prune_removes_dead_runs_and_orphan_folders(tmp_path):
    store = RunStore(tmp_path)
    with store.start(CONFIG) as run:
        run.finish({"loglik": 0.0})
    with store.start(OTHER) as bad:
        bad.fail("NaN")
    _dead_run(tmp_path, OTHER)
    orphan = tmp_path / "toy-vae-orphan-1"
    orphan.mkdir()
    (orphan / "config.json").write_text("{}")
    (orphan / "provenance.json").write_text(json.dumps({"run_id": orphan.name, "start_time": "2000-01-01T00:00:00+00:00"}))
    stale = [r.run_id for r in store.list("stale")]
    assert len(stale) == 1
    removed = store.prune()
    assert sorted(removed) == sorted([bad.run_id, orphan.name, *stale])
    assert [r.status for r in store.list()] == ["finished"] and not orphan.exists() and not bad.run_dir.exists()
    with pytest.raises(ValueError, match="only"):
        store.prune(["finished"])


def test_version_1_index_is_read_and_migrated(tmp_path):
    con = sqlite3.connect(tmp_path / "index.sqlite")
    con.executescript(
        """
        CREATE TABLE runs (run_id TEXT PRIMARY KEY, run_dir TEXT NOT NULL, config_hash TEXT NOT NULL,
            config_json TEXT NOT NULL, status TEXT NOT NULL CHECK (status IN ('running', 'finished', 'failed')),
            created TEXT NOT NULL, finished TEXT, metrics_json TEXT, error TEXT);
        INSERT INTO runs VALUES ('old-1', 'old-1', 'abc', '{}', 'finished', '2024-01-01', NULL, '{"a": 1}', NULL);
        PRAGMA user_version = 1;
        """
    )
    con.close()
    store = RunStore(tmp_path)
    assert [(r.run_id, r.status, r.owner) for r in store.list()] == [("old-1", "finished", None)]
    with pytest.raises(progress.Interrupted):
        with store.start(CONFIG):  # the first write migrates; "interrupted" is a valid status now
            raise progress.Interrupted(2)
    assert [r.status for r in store.list()] == ["finished", "interrupted"]


def test_corrupt_index_file_and_rows_get_their_own_message(tmp_path):
    store = RunStore(tmp_path)
    with store.start(CONFIG) as run:
        run.finish({"loglik": 0.0})
    con = sqlite3.connect(tmp_path / "index.sqlite")
    con.execute("UPDATE runs SET config_json = '{broken' WHERE run_id = ?", (run.run_id,))
    con.commit()
    con.close()
    (record,) = store.list()
    assert record.status == "corrupt" and "index.sqlite" in record.error and run.run_id in record.error
    assert "config_json is not valid JSON" in record.error and store.finished(CONFIG) is None
    (tmp_path / "index.sqlite").write_bytes(b"this is not a database" * 100)
    with pytest.raises(RunIndexError, match="index.sqlite' is not a readable run index"):
        store.list()


def test_index_rejects_unknown_statuses():
    index = RunIndex("unused.sqlite")
    with pytest.raises(ValueError, match="status='stale'"):
        index.update("x", status="stale")  # stale is read back, never stored
