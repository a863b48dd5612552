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

    ``status`` is read from the folder itself: "failed" (or "interrupted") if it has
    ``error.txt``, "finished" if it has ``metrics.json``, otherwise "running" (in progress,
    or killed before it could finish; the index tells which).
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
    except json.JSONDecodeError as err:
        raise RunDirError(f"{str(path)!r} is unreadable: not valid JSON ({err})") from err
    except UnicodeDecodeError as err:
        raise RunDirError(f"{str(path)!r} is unreadable: not UTF-8 text ({err.reason} at byte {err.start})") from err
    except OSError as err:
        raise RunDirError(f"{str(path)!r} is unreadable: {err.strerror or err}") from err
    if not isinstance(data, dict):
        raise RunDirError(f"{str(path)!r} is garbled: expected a JSON object, found {type(data).__name__}")
    return data


def _metrics(path: Path) -> dict | None:
    try:
        return _json(path / "metrics.json")
    except RunDirError as err:
        hint = "; delete it and run `pyro-vae evaluate` to rebuild it from params.pt" if (path / "params.pt").exists() else ""
        raise RunDirError(f"{err}{hint}") from None


def _status(path: Path) -> tuple[str, str | None]:
    error_file = path / "error.txt"
    if error_file.exists():
        text = error_file.read_text(encoding="utf-8", errors="replace").strip()
        first = text.splitlines()[0] if text else "unknown error"
        return ("interrupted" if first.startswith("interrupted") else "failed"), first
    return ("finished" if (path / "metrics.json").exists() else "running"), None


def _params_problem(err: Exception) -> str:
    """One line on why ``torch.load(weights_only=True)`` refused a parameters file."""
    text = str(err)
    if "Weights only load failed" in text or "weights_only" in text:
        return ("it holds Python objects other than tensors and numbers, which are not loaded "
                "(a parameters file of pyro-vae holds only tensors)")
    if isinstance(err, EOFError) or "invalid load key" in text or "PytorchStreamReader" in text \
            or "zip archive" in text or "Ran out of input" in text:
        return "not a PyTorch parameters file (truncated or corrupt)"
    first = text.strip().splitlines()[0] if text.strip() else type(err).__name__
    return f"{type(err).__name__}: {first[:200]}"


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
            raise RunDirError(f"{str(params_file)!r} is unreadable: {_params_problem(err)}") from err
        if not isinstance(state, dict):
            raise RunDirError(f"{str(params_file)!r} is unreadable: holds a {type(state).__name__}, "
                              "expected a dict of tensors")
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
        metrics=_metrics(path),
        history=history,
        params=state,
        provenance=_json(path / "provenance.json"),
        status=status,
        error=error,
    )


def evaluable_config(loaded: LoadedRun, config_class):
    """The config (``config_class.from_dict``) of a run whose parameters can be evaluated.

    A finished run, or one killed after saving ``params.pt`` but before ``metrics.json``
    (its metrics can be rebuilt from the parameters). Errors name the file and the problem.
    """
    where = str(loaded.run_dir)
    if loaded.params is None:
        raise RunDirError(f"{where!r}: params.pt was not loaded; the run is {loaded.status}")
    if loaded.status in ("failed", "interrupted"):
        raise RunDirError(f"run {where!r} {loaded.status} before it saved a usable model: {loaded.error}")
    stored = {k: v for k, v in loaded.config.items() if k != "resolved_device"}
    try:
        return config_class.from_dict(stored)
    except (TypeError, ValueError) as err:
        raise RunDirError(f"{str(loaded.run_dir / 'config.json')!r} is garbled: {err}") from None


def update_metrics(run_dir: str | Path, metrics: Mapping[str, Any], *, merge: bool = True,
                   rebuild: bool = False) -> dict:
    """Rewrite a finished run's ``metrics.json`` (e.g. after ``pyro-vae evaluate``).

    The file is replaced atomically, ``provenance.json`` records when, and the runs
    folder's index (if the run lies in one) gets the new metrics.

    With ``rebuild=True`` a run whose ``metrics.json`` is missing (its process was killed
    after saving ``params.pt``) gets ``metrics`` as its metrics and is marked finished in the
    index, unless the index says its owner is still running it.

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
    index = RunIndex(path.parent / INDEX_NAME) if (path.parent / INDEX_NAME).exists() else None
    rebuilding = rebuild and status == "running" and (path / "params.pt").is_file()
    if rebuilding and index is not None:
        rows = index.select("run_id = ?", (path.name,))
        if rows and rows[0].status == "running":
            raise RunDirError(f"run {str(path)!r} is still running (pid {(rows[0].owner or {}).get('pid')}): "
                              "nothing to update yet")
    if status != "finished" and not rebuilding:
        raise RunDirError(f"run {str(path)!r} is {status}" + (f" ({error})" if error else "") + ": nothing to update")
    old = {} if rebuilding else _json(path / "metrics.json", required=True)
    text = dumps_json({**old, **metrics} if merge else dict(metrics), nonfinite="null")
    new = json.loads(text)
    record = _json(path / "provenance.json") or {}
    record["metrics_updated" if not rebuilding else "metrics_rebuilt"] = utc_now()
    atomic_write_text(path / "metrics.json", text)
    write_json(path / "provenance.json", record)
    if index is not None:
        compact = json.dumps(new, sort_keys=True, separators=(",", ":"))
        fields = {"status": "finished", "finished": utc_now()} if rebuilding else {}
        index.update(path.name, metrics_json=compact, **fields)
    return new
