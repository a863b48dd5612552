"""Committed results: a sweep's report, panels and provenance copied into ``experiments/results/NAME``.

``publish_results(sweep_folder, dest)`` writes ``report.md``, ``report.csv``, the figure
panels (PNG) and ``provenance.json``: the exact command, the project commit (of the sweep and
of the code that wrote the report), package versions, the machine, the sweep's wall time (of
its last invocation) and its runs' summed training and evaluation seconds, the number of runs
(finished, failed) and the protocol reductions (none when the paper's protocol was run). The
run store itself stays out.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from pathlib import Path
from typing import Any, Sequence

from pyro_vae.io import atomic_write_bytes, read_json, write_json
from pyro_vae.provenance import package_versions, utc_now
from pyro_vae.runs import RunStore


def project_commit() -> str | None:
    """The git commit of the source tree this package is imported from, or None."""
    root = Path(__file__).resolve().parents[2]
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() + ("+local-changes" if dirty.stdout.strip() else "")


def machine() -> dict[str, Any]:
    """What the numbers ran on (no hostname)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count()
    return {"platform": platform.platform(), "machine": platform.machine(), "processor": platform.processor() or None,
            "cores": cores}


def protocol_reductions(sweep: dict) -> list[str]:
    """The reductions a sweep ran under: quick mode's and any stated in ``sweep.json``."""
    out = list(sweep.get("reductions", []))
    if sweep.get("quick"):
        out.insert(0, "quick mode (the config's [quick] section: fewer versions, restarts, epochs, samples)")
    return out


def publish_results(sweep_folder: str | Path, dest: str | Path, *, command: str | None = None,
                    extra: dict | None = None) -> list[Path]:
    """Copy a sweep's report and panels to ``dest`` and write its ``provenance.json``."""
    folder, dest = Path(sweep_folder), Path(dest)
    if not (folder / "report.md").is_file() or not (folder / "sweep.json").is_file():
        raise ValueError(f"{str(folder)!r}: not a sweep folder with a report (run `pyro-vae reproduce` first)")
    sweep = read_json(folder / "sweep.json")
    written = []
    for name in ("report.md", "report.csv", "pairs.csv"):
        if (folder / name).is_file():
            written.append(atomic_write_bytes(dest / name, (folder / name).read_bytes()))
    figures = sorted((folder / "figures").glob("*.png")) if (folder / "figures").is_dir() else []
    for png in figures:
        written.append(atomic_write_bytes(dest / "figures" / png.name, png.read_bytes()))
    store = RunStore(folder / "runs")
    records = store.list() if (folder / "runs" / "index.sqlite").is_file() else []
    statuses: dict[str, int] = {}
    seconds = {"train": 0.0, "evaluate": 0.0}
    for r in records:
        statuses[r.status] = statuses.get(r.status, 0) + 1
        for key, field in (("train", "train_seconds"), ("evaluate", "eval_seconds")):
            value = (r.metrics or {}).get(field) if r.status == "finished" else None
            seconds[key] += value if isinstance(value, (int, float)) else 0.0
    here = project_commit()
    record = {
        "experiment": sweep.get("experiment"),
        "command": command or sweep.get("command"),
        "commit": sweep.get("commit") or here,  # of the sweep's last invocation
        "report_commit": here,  # the code that wrote the report and panels (`report` redraws them)
        "packages": package_versions(),
        "machine": sweep.get("machine") or machine(),
        "wall_seconds": sweep.get("wall_seconds"),  # of the last invocation: a resumed sweep's skips cost nothing
        "run_seconds": {key: round(value, 1) for key, value in seconds.items()},  # summed over finished runs
        "runs": {"configs": sweep.get("configs"), **statuses},
        "protocol": "reduced" if protocol_reductions(sweep) else "paper",
        "reductions": protocol_reductions(sweep),
        "published": utc_now(),
        **(extra or {}),
    }
    written.append(write_json(dest / "provenance.json", record))
    return written


def sweep_record(experiment: str, *, quick: bool, source: str, configs: int, command: Sequence[str] | None,
                 reductions: Sequence[str] = ()) -> dict[str, Any]:
    """What ``sweep.json`` holds at the start of a sweep (wall time is added at its end)."""
    return {"experiment": experiment, "quick": quick, "source": source, "configs": configs,
            "command": " ".join(command) if command else None, "commit": project_commit(), "machine": machine(),
            "reductions": list(reductions), "started": utc_now()}


def copy_tree_pngs(src: Path, dest: Path) -> list[Path]:  # pragma: no cover - convenience for figure scripts
    dest.mkdir(parents=True, exist_ok=True)
    return [Path(shutil.copy2(p, dest / p.name)) for p in sorted(src.glob("*.png"))]
