"""Several processes writing to one runs folder, and a process killed mid-run."""

import multiprocessing
import os

from pyro_vae.runs import RunStore, load_run

RUNS_PER_WORKER = 20


def _record_runs(root, worker, barrier):
    store = RunStore(root)
    barrier.wait(timeout=60)
    for i in range(RUNS_PER_WORKER):
        # Both workers use the same configs, so they also race for the same folder names.
        with store.start({"dataset": "toy", "method": "vae", "i": i}) as run:
            run.finish({"worker": worker, "i": i})


def _start_then_die(root):
    run = RunStore(root).start({"dataset": "toy", "method": "vae"})
    run.save_params({})
    os._exit(1)  # killed: no finish, no fail, no __exit__


def _spawn(target, *args):
    return multiprocessing.get_context("spawn").Process(target=target, args=args)


def test_two_processes_record_runs_into_one_index(tmp_path):
    barrier = multiprocessing.get_context("spawn").Barrier(2)
    workers = [_spawn(_record_runs, str(tmp_path), w, barrier) for w in range(2)]
    for p in workers:
        p.start()
    for p in workers:
        p.join(timeout=120)
    assert [p.exitcode for p in workers] == [0, 0]
    records = RunStore(tmp_path).list()
    assert len(records) == 2 * RUNS_PER_WORKER == len({r.run_id for r in records})
    assert all(r.status == "finished" for r in records)
    pairs = {(r.metrics["worker"], r.metrics["i"]) for r in records}
    assert pairs == {(w, i) for w in range(2) for i in range(RUNS_PER_WORKER)}
    assert all((r.run_dir / "metrics.json").is_file() for r in records)


def test_killed_process_leaves_run_stale_not_finished(tmp_path):
    p = _spawn(_start_then_die, str(tmp_path))
    p.start()
    p.join(timeout=120)
    assert p.exitcode == 1
    store = RunStore(tmp_path)
    (record,) = store.list()
    assert record.status == "stale" and store.list("finished") == [] and store.list("running") == []
    assert record.owner["pid"] == p.pid
    assert store.finished({"dataset": "toy", "method": "vae"}) is None
    assert load_run(record.run_dir).status == "running"  # the folder cannot tell; the index can
