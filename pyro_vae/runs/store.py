"""The run store: a runs folder with ``index.sqlite`` and one sub-folder per run.

A run folder holds ``config.json``, ``provenance.json``, ``history.csv``, ``params.pt``
and, once finished, ``metrics.json`` (or ``error.txt`` if it failed). Every file is
written atomically, and ``metrics.json`` is written before the index says "finished",
so a run is never reported finished without its metrics.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import traceback
import warnings
from pathlib import Path
from typing import Any, Iterable, Mapping

from pyro_vae.io import atomic_write_text, dumps_json, save_state, to_jsonable, write_csv, write_json
from pyro_vae.runs.index import INDEX_NAME, STATUSES, RunIndex, RunRecord
from pyro_vae.provenance import provenance_record, utc_now

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
        self.store.index.update(self.run_id, status="finished", finished=end, metrics_json=compact)
        self.status = "finished"

    def fail(self, error: str, details: str | None = None) -> None:
        """Mark the run failed: write ``error.txt``, remove any ``metrics.json``, update the index.

        Parameters
        ----------
        error : str
            One-line reason, stored in the index.
        details : str, optional
            More text for ``error.txt`` (e.g. a traceback).
        """
        if self.status == "failed":
            return
        self._require_running("mark it failed")
        atomic_write_text(self.path("error.txt"), error + ("\n\n" + details if details else "") + "\n")
        self.path("metrics.json").unlink(missing_ok=True)
        end = self._end()
        self.store.index.update(self.run_id, status="failed", finished=end, error=error)
        self.status = "failed"

    def __enter__(self) -> Run:
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if self.status != "running":
            return False
        try:
            if exc_type is None:
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
    """

    def __init__(self, root: str | Path, *, timeout: float = 60.0):
        self.root = Path(root)
        existing = next((p for p in (self.root, *self.root.parents) if p.exists()), None)
        if existing is not None and not existing.is_dir():
            raise ValueError(f"runs folder {str(self.root)!r}: {str(existing)!r} exists and is not a directory")
        self.index = RunIndex(self.root / INDEX_NAME, timeout=timeout)

    def _make_run_dir(self, prefix: str) -> str:
        pattern = re.compile(re.escape(prefix) + r"-(\d+)")
        taken = [int(m.group(1)) for p in self.root.iterdir() if (m := pattern.fullmatch(p.name))]
        n = max(taken, default=0) + 1
        while True:
            try:
                (self.root / f"{prefix}-{n}").mkdir()
                return f"{prefix}-{n}"
            except FileExistsError:  # another process took it
                n += 1

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
        run_id = self._make_run_dir(prefix)
        created = utc_now()
        record = provenance_record(seed=seed, device=device, start_time=created, run_id=run_id, config_hash=digest)
        try:
            write_json(self.root / run_id / "config.json", json.loads(canonical))
            write_json(self.root / run_id / "provenance.json", record)
            self.index.insert(run_id=run_id, run_dir=run_id, config_hash=digest, config_json=canonical, created=created)
        except BaseException:
            shutil.rmtree(self.root / run_id, ignore_errors=True)
            raise
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
        return rows[-1] if rows else None

    def list(self, status: str | None = None) -> list[RunRecord]:
        """All runs, oldest first, optionally only those with ``status``."""
        if status is None:
            return self.index.select()
        if status not in STATUSES:
            raise ValueError(f"status={status!r}: expected None or one of {STATUSES}")
        return self.index.select("status = ?", (status,))

    def __repr__(self) -> str:
        return f"RunStore({str(self.root)!r})"
