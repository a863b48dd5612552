"""Reading a run folder back, and rewriting its metrics after re-evaluation."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Mapping, NamedTuple

from pyro_vae.io import atomic_write_text, dumps_json, load_state, read_csv, read_json, write_json
from pyro_vae.runs.index import INDEX_NAME, RunIndex
from pyro_vae.provenance import utc_now

RUN_FILES = ("config.json", "provenance.json", "history.csv", "params.pt", "metrics.json")


class RunDirError(ValueError):
    """A run folder that is missing, incomplete or unreadable."""


class LoadedRun(NamedTuple):
    """The contents of a run folder.

    ``status`` is read from the folder itself: "failed" if it has ``error.txt``,
    "finished" if it has ``metrics.json``, otherwise "running" (in progress, or
    killed before it could finish).
    """

    run_dir: Path
    run_id: str
    config: dict
    metrics: dict | None
    history: list[dict]
    params: dict | None
    provenance: dict | None
    status: str
    error: str | None


def _check_dir(run_dir: str | Path) -> Path:
    path = Path(run_dir)
    if not path.exists():
        raise RunDirError(f"run directory {str(path)!r} does not exist")
    if not path.is_dir():
        raise RunDirError(f"run directory {str(path)!r} is not a directory")
    if not (path / "config.json").is_file():
        present = sorted(p.name for p in path.iterdir())
        raise RunDirError(
            f"{str(path)!r} is not a run directory: config.json is missing "
            f"(a run folder holds {', '.join(RUN_FILES)}; found {present or 'nothing'})"
        )
    return path


def _json(path: Path, required: bool = False) -> Any:
    if not path.exists():
        if required:
            raise RunDirError(f"{str(path)!r} is missing")
        return None
    try:
        data = read_json(path)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise RunDirError(f"{str(path)!r} is unreadable: {err}") from err
    if not isinstance(data, dict):
        raise RunDirError(f"{str(path)!r} is garbled: expected a JSON object, found {type(data).__name__}")
    return data


def _status(path: Path) -> tuple[str, str | None]:
    error_file = path / "error.txt"
    if error_file.exists():
        text = error_file.read_text(encoding="utf-8", errors="replace").strip()
        return "failed", text.splitlines()[0] if text else "unknown error"
    return ("finished" if (path / "metrics.json").exists() else "running"), None


def load_run(run_dir: str | Path, *, params: bool = True) -> LoadedRun:
    """Read a run folder written by :class:`pyro_vae.runs.RunStore`.

    Parameters
    ----------
    run_dir : str or PathLike
        The run's folder.
    params : bool
        Load ``params.pt`` (with ``weights_only=True``) and require it; with False,
        ``params`` is None.

    Returns
    -------
    LoadedRun

    Raises
    ------
    RunDirError
        If the folder or ``config.json`` is missing, a file is unreadable, or
        ``params.pt`` is missing while ``params=True``; the message names the path.
    """
    path = _check_dir(run_dir)
    config = _json(path / "config.json", required=True)
    status, error = _status(path)
    state = None
    if params:
        params_file = path / "params.pt"
        if not params_file.exists():
            why = f"; the run {status}" + (f": {error}" if error else "")
            raise RunDirError(f"{str(params_file)!r} is missing{why}")
        try:
            state = load_state(params_file)
        except Exception as err:  # torch raises several types for corrupt or unsafe files
            raise RunDirError(f"{str(params_file)!r} is unreadable: {err}") from err
    history: list[dict] = []
    if (path / "history.csv").exists():
        try:
            history = read_csv(path / "history.csv")
        except (OSError, UnicodeDecodeError, csv.Error) as err:
            raise RunDirError(f"{str(path / 'history.csv')!r} is unreadable: {err}") from err
    return LoadedRun(
        run_dir=path,
        run_id=path.name,
        config=config,
        metrics=_json(path / "metrics.json"),
        history=history,
        params=state,
        provenance=_json(path / "provenance.json"),
        status=status,
        error=error,
    )


def update_metrics(run_dir: str | Path, metrics: Mapping[str, Any], *, merge: bool = True) -> dict:
    """Rewrite a finished run's ``metrics.json`` (e.g. after ``pyro-vae evaluate``).

    The file is replaced atomically, ``provenance.json`` records when, and the runs
    folder's index (if the run lies in one) gets the new metrics.

    Parameters
    ----------
    run_dir : str or PathLike
        A finished run's folder.
    metrics : dict
        New values; non-finite numbers are stored as null.
    merge : bool
        Keep existing metrics that ``metrics`` does not replace (default) or drop them.

    Returns
    -------
    dict
        The metrics now stored.
    """
    path = _check_dir(run_dir)
    if not isinstance(metrics, Mapping):
        raise ValueError(f"metrics has type {type(metrics).__name__}: expected a dict")
    status, error = _status(path)
    if status != "finished":
        raise RunDirError(f"run {str(path)!r} is {status}" + (f" ({error})" if error else "") + ": nothing to update")
    old = _json(path / "metrics.json", required=True)
    text = dumps_json({**old, **metrics} if merge else dict(metrics), nonfinite="null")
    new = json.loads(text)
    record = _json(path / "provenance.json") or {}
    record["metrics_updated"] = utc_now()
    atomic_write_text(path / "metrics.json", text)
    write_json(path / "provenance.json", record)
    index = path.parent / INDEX_NAME
    if index.exists():
        compact = json.dumps(new, sort_keys=True, separators=(",", ":"))
        RunIndex(index).update(path.name, metrics_json=compact)
    return new
