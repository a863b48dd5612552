"""``pyro-vae runs [DIR]``: what a runs folder holds, with dead runs shown as such.

    pyro-vae runs runs                 # status, method, data set, key metrics, age of every run
    pyro-vae runs runs --prune         # remove failed, interrupted, stale and corrupt runs

A run whose process was killed reads ``stale`` (its owner process is gone, or on another host
its heartbeat stopped), never ``running``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pyro_vae.cli.common import add_command, flags_of, print_json

KEY_METRICS = ("test_loglik", "smooth_knn", "val_objective")


def _metric_value(value):
    if isinstance(value, dict):
        value = value.get("mean")
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{max(seconds, 0):.0f}s"


def run_rows(folder: Path) -> list[dict]:
    """One dict per run of the index: id, status, method, dataset, key metrics, age, step, error."""
    from pyro_vae.runs import RunStore
    from pyro_vae.runs.owner import seconds_since

    rows = []
    for r in RunStore(folder).list():
        config = r.config or {}
        method = config.get("method", "?")
        if method == "m2":
            method = f"m2/{'lin' if config.get('lagging') else config.get('objective', '?')}"
        metrics = {k: _metric_value((r.metrics or {}).get(k)) for k in KEY_METRICS}
        rows.append({
            "run_id": r.run_id, "status": r.status, "method": method, "dataset": config.get("dataset", "?"),
            "metrics": {k: v for k, v in metrics.items() if v is not None}, "created": r.created,
            "age_seconds": seconds_since(r.created), "heartbeat": r.heartbeat, "step": r.step,
            "owner": r.owner, "error": r.error,
        })
    return rows


def cmd_runs(args: argparse.Namespace) -> int:
    from pyro_vae import checks
    from pyro_vae.runs import INDEX_NAME, RunStore

    folder = Path(args.folder)
    if not folder.is_dir():
        raise ValueError(f"folder {args.folder!r}: " + ("does not exist" if not folder.exists() else "is not a folder"))
    if not (folder / INDEX_NAME).is_file():
        raise ValueError(f"folder {args.folder!r}: not a runs folder (it has no {INDEX_NAME})")
    pruned = []
    if args.prune:
        checks.output_dir("folder", folder)
        pruned = RunStore(folder).prune()
    rows = run_rows(folder)
    if args.json:
        print_json({"runs": rows, "pruned": pruned})
        return 0
    if args.prune:
        print(f"pruned {len(pruned)} run(s)" + (f": {', '.join(pruned)}" if pruned else ""))
    header = ("run", "status", "method", "data set", "metrics", "age", "note")
    table = []
    for r in rows:
        metrics = "  ".join(f"{k}={v:.4g}" for k, v in r["metrics"].items()) or "-"
        note = ""
        if r["status"] in ("running", "stale", "interrupted") and r["step"] is not None:
            note = f"step {r['step']}"
        if r["status"] == "stale":
            note = ", ".join(filter(None, [note, f"owner pid {(r['owner'] or {}).get('pid')} is gone"]))
        elif r["status"] in ("failed", "interrupted", "corrupt") and r["error"]:
            note = r["error"][:80]
        table.append((r["run_id"], r["status"], r["method"], r["dataset"], metrics, _age(r["age_seconds"]), note))
    if not table:
        print(f"no runs in {folder}")
        return 0
    widths = [max(len(str(row[i])) for row in [header, *table]) for i in range(len(header) - 1)]
    for row in [header, *table]:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths)) + "  " + row[-1])
    return 0


def add_parsers(sub) -> None:
    p = add_command(sub, "runs", "list the runs of a runs folder (stale = its process is gone)")
    p.add_argument("folder", nargs="?", default="runs", help="a runs folder (with index.sqlite)")
    p.add_argument("--prune", action="store_true",
                   help="remove failed, interrupted, stale and corrupt runs (rows and folders) first")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_runs, flag_names=flags_of(p))
