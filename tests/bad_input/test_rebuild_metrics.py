"""``evaluate`` rebuilds the metrics of a run killed after it saved its parameters."""

import json
import sqlite3
import subprocess
import sys

from pyro_vae.cli import main
from pyro_vae.runs import RunStore


def test_evaluate_rebuilds_missing_metrics_from_intact_parameters(tmp_path, capsys):
    runs = tmp_path / "runs"
    assert main(["train", "circle", "--epochs", "1", "--hidden", "4", "--eval-samples", "20", "--quiet",
                 "--out", str(runs), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    run_dir = runs / summary["run_id"]
    # as if killed between params.pt and metrics.json: no metrics, the row running, its owner gone
    (run_dir / "metrics.json").unlink()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    con = sqlite3.connect(runs / "index.sqlite")
    con.execute("UPDATE runs SET status = 'running', finished = NULL, metrics_json = NULL, owner_pid = ?", (dead.pid,))
    con.commit()
    con.close()
    assert RunStore(runs).get(summary["run_id"]).status == "stale"

    assert main(["evaluate", str(run_dir), "--json", "--eval-samples", "20"]) == 0
    rebuilt = json.loads(capsys.readouterr().out)
    assert rebuilt["best_restart"] is None and rebuilt["metrics"]["test_loglik"] == summary["metrics"]["test_loglik"]
    assert json.loads((run_dir / "metrics.json").read_text())["test_loglik"] == summary["metrics"]["test_loglik"]
    record = RunStore(runs).get(summary["run_id"])
    assert record.status == "finished" and record.metrics["test_loglik"] == summary["metrics"]["test_loglik"]
    assert "metrics_rebuilt" in json.loads((run_dir / "provenance.json").read_text())
