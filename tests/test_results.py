"""Committed results: every report parses and states its protocol; `report --results` writes the same columns."""

import csv
import json
from pathlib import Path

import pytest

from pyro_vae.cli import main

RESULTS = Path(__file__).resolve().parents[1] / "experiments" / "results"
PROVENANCE_KEYS = {"experiment", "command", "commit", "packages", "machine", "wall_seconds", "runs", "protocol", "reductions"}
CSV_HEADER = ["experiment", "dataset", "method", "metric", "selected", "ours_mean", "ours_std", "versions",
              "paper_mean", "paper_std", "diff_in_paper_std"]


def _kind(folder: Path) -> str:
    """``sweep`` (written by ``reproduce --results``), ``figures`` (one record per figure) or ``study``."""
    prov = json.loads((folder / "provenance.json").read_text())
    return "figures" if "figures" in prov else "sweep" if "experiment" in prov else "study"


def committed(kind: str = "sweep"):
    return sorted(p.parent for p in RESULTS.glob("*/provenance.json") if _kind(p.parent) == kind)


STUDY_KEYS = {"command", "commit", "versions", "machine_start", "wall_seconds", "config"}


@pytest.mark.parametrize("folder", committed("study"), ids=lambda p: p.name)
def test_committed_study_names_its_command_packages_and_machine(folder):
    """The diagnose calibration, Appendix F and OOD studies: their command regenerates the folder."""
    prov = json.loads((folder / "provenance.json").read_text())
    assert STUDY_KEYS <= set(prov), f"{folder.name}: provenance lacks {STUDY_KEYS - set(prov)}"
    assert f"experiments/results/{folder.name}" in prov["command"]  # the command regenerates this folder
    assert {"torch", "pyro", "numpy"} <= set(prov["versions"]) and prov["machine_start"]["cpus"] >= 1
    report = (folder / "report.md").read_text()
    assert report.startswith("# ") and "|---|" in report


FIGURE_KEYS = {"command", "commit", "packages", "machine", "files", "reductions"}


def test_committed_figures_name_their_command_files_and_reductions():
    prov = json.loads((RESULTS / "figures" / "provenance.json").read_text())["figures"]
    assert prov, "no figure recorded"
    for name, record in prov.items():
        assert FIGURE_KEYS <= set(record), f"{name}: provenance lacks {FIGURE_KEYS - set(record)}"
        assert record["command"].startswith(f"pyro-vae figure {name} ")
        for file in record["files"]:
            assert (RESULTS / "figures" / file).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", file


@pytest.mark.parametrize("folder", committed(), ids=lambda p: p.name)
def test_committed_report_parses_and_names_its_protocol(folder):
    prov = json.loads((folder / "provenance.json").read_text())
    assert PROVENANCE_KEYS <= set(prov), f"{folder.name}: provenance lacks {PROVENANCE_KEYS - set(prov)}"
    assert prov["protocol"] in ("paper", "reduced")
    assert (prov["protocol"] == "reduced") == bool(prov["reductions"])
    report = (folder / "report.md").read_text()
    assert report.startswith("# ") and "|---|" in report
    assert ("**Protocol reductions:**" in report) == (prov["protocol"] == "reduced")
    if (folder / "report.csv").is_file():
        with open(folder / "report.csv") as f:
            rows = list(csv.reader(f))
        assert rows[0] == CSV_HEADER and len(rows) > 1


def test_report_results_on_a_tiny_quick_sweep_writes_the_committed_columns(tmp_path):
    toml = tmp_path / "tiny.toml"
    toml.write_text(
        'name = "tiny"\ntitle = "tiny"\npaper = "004"\nreference = "test"\n'
        '[data]\ndatasets = ["circle"]\nversions = [0, 1]\n'
        '[train]\nrestarts = 2\nepochs = 1\neval_samples = 50\nhidden = [8]\n'
        '[[methods]]\nname = "vae"\n[select]\nmetric = "val_objective"\n[report]\nmetrics = ["test_loglik"]\n'
        '[quick]\nversions = [0]\n'
    )
    out, dest = tmp_path / "out", tmp_path / "results"
    assert main(["reproduce", str(toml), "--quick", "--out", str(out), "--no-figures", "--quiet", "--workers", "1"]) == 0
    assert main(["report", str(out / "tiny-quick"), "--results", str(dest), "--no-figures"]) == 0
    prov = json.loads((dest / "provenance.json").read_text())
    assert PROVENANCE_KEYS <= set(prov) and prov["protocol"] == "reduced" and prov["runs"]["finished"] == 1
    [run] = [json.loads(p.read_text()) for p in (out / "tiny-quick" / "runs").glob("*/metrics.json")]
    assert prov["run_seconds"] == {"train": round(run["train_seconds"], 1), "evaluate": round(run["eval_seconds"], 1)}
    assert prov["run_seconds"]["train"] > 0 and "report_commit" in prov
    with open(dest / "report.csv") as f:
        assert next(csv.reader(f)) == CSV_HEADER
    noise = (dest / "report.md").read_text().split("## Metric noise", 1)[1]  # the metric's own SE beside the spread
    assert "| circle | vae | test_loglik | — |" in noise
