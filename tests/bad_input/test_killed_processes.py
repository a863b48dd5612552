"""Real ``train`` and ``reproduce`` processes killed at random moments: no dead run looks alive.

kill -9 leaves no chance to clean up, so the run store must tell by itself (the owner process
is gone: "stale"); SIGTERM and SIGINT are caught: the run is marked "interrupted" with the step
reached and the command exits 143 / 130 with one line on stderr. A reproduce killed mid-sweep
and started again leaves one row per config and loses nothing finished.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from pyro_vae.cli import main

ROOT = Path(__file__).resolve().parents[2]
TRAIN = ["train", "circle", "--epochs", "40", "--hidden", "4", "--eval-samples", "20", "--quiet"]
TINY = textwrap.dedent(
    """
    name = "tiny"
    [data]
    datasets = ["circle"]
    versions = [0]
    [train]
    epochs = 2
    eval_samples = 20
    hidden = [4]
    [[methods]]
    name = "vae"
    [[methods]]
    name = "iwae"
    grid = { particles = [2, 3] }
    """
)


def _spawn(args: list[str], cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PYRO_VAE_HEARTBEAT_SECONDS": "0.2"}
    return subprocess.Popen([sys.executable, "-m", "pyro_vae.cli", *args], cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def _rows(index: Path) -> list[tuple]:
    if not index.exists():
        return []
    con = sqlite3.connect(index, timeout=30)
    try:
        return con.execute("SELECT run_id, status, step FROM runs").fetchall()
    except sqlite3.OperationalError:
        return []
    finally:
        con.close()


def _wait(predicate, what: str, proc: subprocess.Popen, timeout: float = 240.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        if proc.poll() is not None:
            pytest.fail(f"the process ended (code {proc.returncode}) before {what}: {proc.stderr.read()}")
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    pytest.fail(f"timed out waiting for {what}")


def _listing(runs: Path, capsys) -> list[dict]:
    capsys.readouterr()
    assert main(["runs", str(runs), "--json"]) == 0
    return json.loads(capsys.readouterr().out)["runs"]


def test_train_killed_at_random_moments_never_looks_alive(tmp_path, capsys):
    rng = random.Random(13)
    runs = tmp_path / "runs"
    for _ in range(2):
        proc = _spawn([*TRAIN, "--out", str(runs)], tmp_path)
        known = {r[0] for r in _rows(runs / "index.sqlite")}
        _wait(lambda: {r[0] for r in _rows(runs / "index.sqlite")} - known, "its run row", proc)
        time.sleep(rng.uniform(0.0, 2.0))
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    rows = _listing(runs, capsys)
    assert len(rows) == 2 and {r["status"] for r in rows} == {"stale"}
    assert all(r["owner"]["pid"] for r in rows)
    capsys.readouterr()
    assert main(["runs", str(runs), "--prune"]) == 0
    assert "pruned 2 run(s)" in capsys.readouterr().out
    assert _listing(runs, capsys) == []
    assert sorted(p.name for p in runs.iterdir() if p.name != "artefacts") == ["index.sqlite"]


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_sigterm_and_sigint_mark_the_run_interrupted_at_its_step(tmp_path, capsys, sig, code):
    runs = tmp_path / "runs"
    proc = _spawn([*TRAIN, "--out", str(runs)], tmp_path)
    _wait(lambda: any(r[2] for r in _rows(runs / "index.sqlite")), "a training step in the heartbeat", proc)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    name = signal.Signals(sig).name
    assert proc.returncode == code, err
    assert err.count("\n") == 1 and "Traceback" not in err and f"interrupted by {name}" in err, err
    (row,) = _listing(runs, capsys)
    assert row["status"] == "interrupted" and row["step"] >= 1
    assert row["error"].startswith(f"interrupted by {name} at step ") and row["run_id"] in err
    assert (runs / row["run_id"] / "error.txt").read_text().startswith(f"interrupted by {name}")


@pytest.mark.slow
def test_sigterm_to_a_reproduce_with_workers_stops_them_and_marks_their_runs(tmp_path, capsys):
    """The pool's workers are signalled too (not left to finish their runs): the command exits
    within the workers' grace period, no process of its group is left, and no run looks alive."""
    config = tmp_path / "long.toml"
    config.write_text(TINY.replace("epochs = 2", "epochs = 5000"))
    out = tmp_path / "out"
    runs = out / "tiny" / "runs"
    proc = _spawn(["reproduce", str(config), "--out", str(out), "--no-figures", "--quiet", "--workers", "2"], tmp_path)
    _wait(lambda: sum(1 for r in _rows(runs / "index.sqlite") if r[1] == "running" and r[2]) == 2,
          "two runs training in two workers", proc)
    start = time.time()
    proc.send_signal(signal.SIGTERM)  # the parent only, as a scheduler or `kill PID` would
    try:
        _, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail("reproduce did not exit within 60 s of SIGTERM: its workers kept training")
    assert proc.returncode == 143, err
    assert time.time() - start < 30
    time.sleep(0.5)
    with pytest.raises(ProcessLookupError):  # no worker outlived the command
        os.killpg(proc.pid, 0)
    statuses = {r["status"] for r in _listing(runs, capsys)}
    assert "running" not in statuses and "interrupted" in statuses, statuses


@pytest.mark.slow
def test_reproduce_killed_and_resumed_keeps_one_row_per_config(tmp_path, capsys):
    config = tmp_path / "tiny.toml"
    config.write_text(TINY)
    out = tmp_path / "out"
    runs = out / "tiny" / "runs"
    proc = _spawn(["reproduce", str(config), "--out", str(out), "--no-figures", "--quiet", "--workers", "1"], tmp_path)
    _wait(lambda: any(r[1] == "finished" for r in _rows(runs / "index.sqlite")), "a finished run", proc)
    time.sleep(random.Random(7).uniform(0.0, 3.0))
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = {r["run_id"]: r for r in _listing(runs, capsys)}
    assert "running" not in {r["status"] for r in before.values()}
    finished = {k: r["metrics"] for k, r in before.items() if r["status"] == "finished"}
    assert finished

    capsys.readouterr()
    assert main(["reproduce", str(config), "--out", str(out), "--no-figures", "--quiet", "--workers", "1"]) == 0
    after = _listing(runs, capsys)
    assert len(after) == 3 and {r["status"] for r in after} == {"finished"}
    from pyro_vae.runs import RunStore

    records = RunStore(runs).list()
    assert len({r.config_hash for r in records}) == 3  # one row per config
    kept = {r["run_id"]: r["metrics"] for r in after}
    assert all(kept.get(run_id) == metrics for run_id, metrics in finished.items())  # nothing finished lost
    left = sorted(p.name for p in runs.iterdir() if p.name not in ("artefacts", ".sweep.lock"))  # not runs
    assert left == sorted([*kept, "index.sqlite"])  # no dead folder beside
