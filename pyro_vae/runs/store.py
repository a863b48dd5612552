"""The run store: a runs folder with ``index.sqlite`` and one sub-folder per run.

A run folder holds ``config.json``, ``provenance.json``, ``history.csv``, ``params.pt``
and, once finished, ``metrics.json`` (or ``error.txt`` if it failed or was interrupted).
Every file is written atomically, and ``metrics.json`` is written before the index says
"finished", so a run is never reported finished without its metrics.

A run that dies is never reported alive: the index records each run's owner process and a
heartbeat (:mod:`pyro_vae.runs.owner`), and a "running" run whose owner is gone reads back as
"stale". A run stopped by SIGINT/SIGTERM (a ``KeyboardInterrupt`` in its ``with`` block) is
marked "interrupted" with the step reached. :meth:`RunStore.settle` clears the dead runs of
the configs a sweep is about to run again, so the index keeps one row per config, and
:meth:`RunStore.prune` removes failed, interrupted, stale and corrupt runs.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import sqlite3
import traceback
import warnings
from pathlib import Path
from typing import Any, Iterable, Mapping

from pyro_vae.io import atomic_write_text, dumps_json, read_json, save_state, to_jsonable, write_csv, write_json
from pyro_vae.runs import progress
from pyro_vae.runs.index import INDEX_NAME, STATUSES, RunIndex, RunRecord
from pyro_vae.runs.owner import HEARTBEAT_SECONDS, Heartbeat, current_owner, seconds_since
from pyro_vae.provenance import provenance_record, utc_now

DEAD = ("failed", "interrupted", "stale", "corrupt")  # what settle() and prune() clear
ORPHAN_AGE_SECONDS = 60.0  # a folder without an index row younger than this may be a run starting now

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def _canonical(config: Mapping[str, Any]) -> str:
    if not isinstance(config, Mapping):
        raise ValueError(f"config has type {type(config).__name__}: expected a dict")
    data = to_jsonable(config, where="config")
    return json.dumps(data, sort_keys=True, separators=(",", ":"), allow_nan=False)


def config_hash(config: Mapping[str, Any]) -> str:
    """First 16 hex digits of the SHA-256 of the config's canonical JSON (sorted keys)."""
    return hashlib.sha256(_canonical(config).encode("utf-8")).hexdigest()[:16]


def _label(value: Any) -> str | None:
    if isinstance(value, Mapping):
        value = next((value[k] for k in ("name", "kind", "type") if isinstance(value.get(k), str)), None)
    if not isinstance(value, str) or not value:
        return None
    return re.sub(r"[^A-Za-z0-9_.]+", "_", value)[:40]


def _find(config: Mapping[str, Any], key: str) -> Any:
    """``config[key]``, or the first ``key`` found in a nested table."""
    if key in config:
        return config[key]
    for value in config.values():
        if isinstance(value, Mapping) and (found := _find(value, key)) is not None:
            return found
    return None


def _prefix(config: Mapping[str, Any], digest: str) -> str:
    dataset = next((lab for k in ("dataset", "data") if (lab := _label(config.get(k)))), None)
    method = next((lab for k in ("method", "inference", "objective") if (lab := _label(config.get(k)))), None)
    return "-".join(part for part in (dataset, method, digest[:8]) if part)


class Run:
    """A run in progress: write its files, then :meth:`finish` or :meth:`fail` it.

    Used as a context manager, an exception inside the ``with`` block marks the run
    failed (and is re-raised); leaving the block without :meth:`finish` also fails it.
    """

    def __init__(self, store: RunStore, run_id: str, config_hash: str, provenance: dict):
        self.store = store
        self.run_id = run_id
        self.config_hash = config_hash
        self.status = "running"
        self._provenance = provenance
        self._heartbeat = Heartbeat(self, Run._beat, store.heartbeat_seconds)

    def _beat(self) -> None:
        self.store.index.update(self.run_id, only_if_status="running", heartbeat=utc_now(),
                                step=progress.current_step())

    @property
    def run_dir(self) -> Path:
        """The run's folder."""
        return self.store.root / self.run_id

    def path(self, name: str) -> Path:
        """Path of a file inside the run's folder (for extra artifacts)."""
        return self.run_dir / name

    def _require_running(self, action: str) -> None:
        if self.status != "running":
            raise RuntimeError(f"cannot {action}: run {self.run_id!r} is already {self.status}")

    def write_config(self, config: Mapping[str, Any]) -> None:
        """Write the resolved config to ``config.json`` (the index keeps the hash from start)."""
        self._require_running("write the config")
        write_json(self.path("config.json"), dict(config))

    def write_history(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """Write per-step training records (dicts) to ``history.csv``."""
        self._require_running("write the history")
        write_csv(self.path("history.csv"), rows)

    def save_params(self, state_dict: Mapping[str, Any]) -> None:
        """Save parameters to ``params.pt`` (loadable with ``weights_only=True``)."""
        self._require_running("save parameters")
        save_state(self.path("params.pt"), state_dict)

    def add_provenance(self, **info: Any) -> None:
        """Add fields to ``provenance.json`` (e.g. NUTS chains, R-hat, ESS)."""
        self._require_running("add provenance")
        updated = {**self._provenance, **info}
        write_json(self.path("provenance.json"), updated)
        self._provenance = updated

    def _end(self) -> str:
        end = utc_now()
        self._provenance["end_time"] = end
        write_json(self.path("provenance.json"), self._provenance)
        return end

    def finish(self, metrics: Mapping[str, Any]) -> None:
        """Write ``metrics.json``, then mark the run finished in the index.

        Non-finite metric values are stored as ``null``. Metrics that cannot be written
        as JSON raise ``ValueError`` before anything is written.
        """
        self._require_running("finish")
        if not isinstance(metrics, Mapping):
            raise ValueError(f"metrics has type {type(metrics).__name__}: expected a dict")
        text = dumps_json(metrics, nonfinite="null")
        end = self._end()
        atomic_write_text(self.path("metrics.json"), text)
        compact = json.dumps(json.loads(text), sort_keys=True, separators=(",", ":"))
        self.store.index.update(self.run_id, status="finished", finished=end, metrics_json=compact,
                                step=progress.current_step())
        self.status = "finished"
        self._heartbeat.stop()

    def fail(self, error: str, details: str | None = None) -> None:
        """Mark the run failed: write ``error.txt``, remove any ``metrics.json``, update the index.

        Parameters
        ----------
        error : str
            One-line reason, stored in the index.
        details : str, optional
            More text for ``error.txt`` (e.g. a traceback).
        """
        self._stop("failed", error, details)

    def interrupt(self, reason: str) -> None:
        """Mark the run interrupted (SIGINT/SIGTERM): ``error.txt`` starts with ``reason``,
        e.g. "interrupted by SIGTERM at step 1200 (epoch 12)"; the index keeps the step."""
        self._stop("interrupted", reason, None)
        progress.note_interrupted(self.run_id, reason)

    def _stop(self, status: str, error: str, details: str | None) -> None:
        if self.status == status:
            return
        self._require_running(f"mark it {status}")
        self._heartbeat.stop()
        atomic_write_text(self.path("error.txt"), error + ("\n\n" + details if details else "") + "\n")
        self.path("metrics.json").unlink(missing_ok=True)
        end = self._end()
        self.store.index.update(self.run_id, status=status, finished=end, error=error, step=progress.current_step())
        self.status = status

    def __enter__(self) -> Run:
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if self.status != "running":
            return False
        try:
            if exc_type is not None and issubclass(exc_type, KeyboardInterrupt):
                self.interrupt(progress.interrupt_reason(exc))
            elif exc_type is None:
                self.fail("the with-block ended without run.finish()")
            else:
                details = "".join(traceback.format_exception(exc_type, exc, tb))
                self.fail(f"{exc_type.__name__}: {exc}", details)
        except Exception as err:  # keep the original exception; the run stays "running"
            warnings.warn(f"could not mark run {self.run_id!r} failed: {err!r}", RuntimeWarning)
        return False

    def __repr__(self) -> str:
        return f"Run({self.run_id!r}, status={self.status!r})"


class RunStore:
    """A runs folder: ``index.sqlite`` plus one sub-folder per run.

    Nothing is created until the first :meth:`start`; a root that is an existing file
    (or lies below one) raises ``ValueError`` here, before any write.

    Parameters
    ----------
    root : str or PathLike
        The runs folder.
    timeout : float
        Seconds to wait for another process's lock on the index.
    heartbeat_seconds : float
        How often a running run writes its heartbeat (time and step) into the index.
    """

    def __init__(self, root: str | Path, *, timeout: float = 60.0, heartbeat_seconds: float = HEARTBEAT_SECONDS):
        self.root = Path(root)
        self.heartbeat_seconds = heartbeat_seconds
        existing = next((p for p in (self.root, *self.root.parents) if p.exists()), None)
        if existing is not None and not existing.is_dir():
            raise ValueError(f"runs folder {str(self.root)!r}: {str(existing)!r} exists and is not a directory")
        self.index = RunIndex(self.root / INDEX_NAME, timeout=timeout)

    def _claim(self, prefix: str, row: dict) -> str:
        """Insert the run's index row under a free ``<prefix>-<n>``, then create its folder.

        The row comes first, so a process killed at any moment leaves at most a stale row
        (and perhaps an empty folder), never a folder the index does not know.
        """
        pattern = re.compile(re.escape(prefix) + r"-(\d+)")
        names = [p.name for p in self.root.iterdir()] + [r.run_id for r in self.index.select()]
        n = max((int(m.group(1)) for name in names if (m := pattern.fullmatch(name))), default=0) + 1
        while True:
            run_id = f"{prefix}-{n}"
            try:
                self.index.insert(run_id=run_id, run_dir=run_id, **row)
            except sqlite3.IntegrityError:  # another process took the name
                n += 1
                continue
            try:
                (self.root / run_id).mkdir()
                return run_id
            except FileExistsError:  # a folder left by an older version
                self.index.delete(run_id)
                n += 1
            except BaseException:
                self.index.delete(run_id)
                raise

    def start(self, config: Mapping[str, Any], name: str | None = None, *, seed: Any = None, device: Any = None) -> Run:
        """Create a fresh run folder ``<dataset>-<method>-<hash8>-<n>`` with status "running".

        Parameters
        ----------
        config : dict
            The run's config, written to ``config.json``; its :func:`config_hash` is indexed.
        name : str, optional
            Replaces ``<dataset>-<method>`` in the folder name; letters, digits, ``_.-``.
        seed, device : optional
            For ``provenance.json``; default to the config's ``seed`` and ``device`` entries.

        Returns
        -------
        Run
        """
        canonical = _canonical(config)
        digest = config_hash(config)
        if name is not None and not (isinstance(name, str) and _NAME.fullmatch(name)):
            raise ValueError(f"name={name!r}: expected 1-64 letters, digits, '_', '.' or '-', not starting with a symbol")
        prefix = f"{name}-{digest[:8]}" if name else _prefix(config, digest)
        seed = _find(config, "seed") if seed is None else seed
        device = _find(config, "device") if device is None else device
        self.index.ensure()
        created = utc_now()
        run_id = self._claim(prefix, dict(config_hash=digest, config_json=canonical, created=created,
                                          owner=tuple(current_owner())))
        record = provenance_record(seed=seed, device=device, start_time=created, run_id=run_id, config_hash=digest)
        try:
            write_json(self.root / run_id / "config.json", json.loads(canonical))
            write_json(self.root / run_id / "provenance.json", record)
        except BaseException:
            shutil.rmtree(self.root / run_id, ignore_errors=True)
            self.index.delete(run_id)
            raise
        progress.reset(run_id)
        return Run(self, run_id, digest, record)

    def get(self, run_id: str) -> RunRecord | None:
        """The record of one run, or None."""
        rows = self.index.select("run_id = ?", (run_id,))
        return rows[0] if rows else None

    def find(self, config: Mapping[str, Any]) -> list[RunRecord]:
        """All runs (any status) whose config has the same :func:`config_hash`, oldest first."""
        return self.index.select("config_hash = ?", (config_hash(config),))

    def finished(self, config: Mapping[str, Any]) -> RunRecord | None:
        """The latest finished run of this config, or None (for resumable sweeps)."""
        rows = self.index.select("config_hash = ? AND status = 'finished'", (config_hash(config),))
        rows = [r for r in rows if r.status == "finished"]  # not a row that reads back corrupt
        return rows[-1] if rows else None

    def list(self, status: str | None = None) -> list[RunRecord]:
        """All runs, oldest first, optionally only those with ``status`` (as read back: a
        running run whose owner is gone is "stale", an unreadable row "corrupt")."""
        if status is not None and status not in STATUSES:
            raise ValueError(f"status={status!r}: expected None or one of {STATUSES}")
        rows = self.index.select()
        return rows if status is None else [r for r in rows if r.status == status]

    def _discard(self, record: RunRecord) -> None:
        """Remove a run's row and its folder (only a folder directly inside the runs folder)."""
        folder = self.root / record.run_id
        if record.run_id and folder.parent == self.root and folder.is_dir():
            shutil.rmtree(folder, ignore_errors=True)
        self.index.delete(record.run_id)

    def _recover(self, record: RunRecord) -> bool:
        """A stale run killed after writing ``metrics.json`` (and its parameters) is finished:
        mark it so in the index. Returns whether it was."""
        folder = record.run_dir
        if record.status != "stale" or (folder / "error.txt").exists() or not (folder / "params.pt").is_file():
            return False
        try:
            metrics = read_json(folder / "metrics.json")
        except (OSError, ValueError):
            return False
        if not isinstance(metrics, dict):
            return False
        compact = json.dumps(metrics, sort_keys=True, separators=(",", ":"))
        return bool(self.index.update(record.run_id, only_if_status="running", status="finished",
                                      finished=utc_now(), metrics_json=compact))

    def orphans(self) -> list[Path]:
        """Run folders with no index row (left by versions that created the folder before the
        row), older than a minute, so a run being started now is not one."""
        if not self.root.is_dir():
            return []
        indexed = {r.run_id for r in self.index.select()}
        out = []
        for path in sorted(self.root.iterdir()):
            if path.name in indexed or not path.is_dir() or not (path / "config.json").is_file():
                continue
            try:
                record = read_json(path / "provenance.json")
            except (OSError, ValueError):
                continue
            age = seconds_since(record.get("start_time")) if isinstance(record, dict) else None
            if isinstance(record, dict) and record.get("run_id") == path.name and (age or 0) > ORPHAN_AGE_SECONDS:
                out.append(path)
        return out

    def settle(self, configs: Iterable[Mapping[str, Any]]) -> None:
        """Before running ``configs`` again: clear their dead runs so the index keeps one row
        per config.

        A stale run that had written its metrics and parameters is marked finished (nothing
        finished is lost); other failed, interrupted, stale or corrupt runs of these configs
        are removed with their folders, as are orphan folders of these configs. Runs whose
        owner is alive (another sweep on the same folder) are left alone.
        """
        if not (self.root / INDEX_NAME).exists():
            return
        hashes = {config_hash(c) for c in configs}
        for record in self.index.select():
            if record.config_hash in hashes and record.status in DEAD and not self._recover(record):
                self._discard(record)
        for path in self.orphans():
            try:
                digest = read_json(path / "provenance.json").get("config_hash")
            except (OSError, ValueError, AttributeError):
                continue
            if digest in hashes:
                shutil.rmtree(path, ignore_errors=True)

    def prune(self, statuses: Iterable[str] = DEAD, *, orphans: bool = True) -> list[str]:
        """Remove runs with these statuses (rows and folders) and orphan folders; returns their ids.

        A stale run that had finished writing is marked finished instead (see :meth:`settle`).
        """
        statuses = tuple(statuses)
        for status in statuses:
            if status not in DEAD:
                raise ValueError(f"status={status!r}: only {DEAD} runs can be pruned")
        removed = []
        for record in self.index.select():
            if record.status in statuses and not self._recover(record):
                self._discard(record)
                removed.append(record.run_id)
        if orphans:
            for path in self.orphans():
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path.name)
        return removed

    def __repr__(self) -> str:
        return f"RunStore({str(self.root)!r})"
