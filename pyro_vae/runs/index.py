"""The SQLite index of a runs folder: one row per run, safe for several writer processes.

Every operation opens its own connection and holds the lock only for one short
transaction (``BEGIN IMMEDIATE`` for writes, with a busy timeout), so processes of a
sweep can record runs into the same ``index.sqlite`` concurrently. The default rollback
journal is used (not WAL) so that runs folders also work on network filesystems.
"""

from __future__ import annotations

import json
import sqlite3
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

INDEX_NAME = "index.sqlite"
STATUSES = ("running", "finished", "failed")
SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id       TEXT PRIMARY KEY,
    run_dir      TEXT NOT NULL,
    config_hash  TEXT NOT NULL,
    config_json  TEXT NOT NULL,
    status       TEXT NOT NULL CHECK (status IN ('running', 'finished', 'failed')),
    created      TEXT NOT NULL,
    finished     TEXT,
    metrics_json TEXT,
    error        TEXT
);
CREATE INDEX IF NOT EXISTS runs_by_config_hash ON runs (config_hash);
"""
_COLUMNS = "run_id, run_dir, config_hash, config_json, status, created, finished, metrics_json, error"


@dataclass(frozen=True)
class RunRecord:
    """One row of the index.

    Attributes
    ----------
    run_id : str
        Folder name of the run inside the runs folder.
    run_dir : Path
        Path of the run folder (the index stores it relative to the runs folder).
    config_hash : str
        :func:`pyro_vae.runs.config_hash` of the config given to ``RunStore.start``.
    status : {"running", "finished", "failed"}
        A process that died without finishing leaves its run "running".
    created : str
        ISO-8601 UTC start time.
    metrics : dict or None
        The metrics of a finished run.
    error : str or None
        Why a failed run failed.
    finished : str or None
        ISO-8601 UTC time the run finished or failed.
    config : dict
        The config given to ``RunStore.start``.
    """

    run_id: str
    run_dir: Path
    config_hash: str
    status: str
    created: str
    metrics: dict | None
    error: str | None
    finished: str | None = None
    config: dict | None = None


class RunIndex:
    """Rows of ``index.sqlite``; the file is created by the first write, never by a read."""

    def __init__(self, path: Path, timeout: float = 60.0):
        self.path = Path(path)
        self.timeout = timeout

    @contextmanager
    def _transaction(self, write: bool) -> Iterator[sqlite3.Connection]:
        con = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None)
        try:
            con.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                yield con
            except BaseException:
                con.execute("ROLLBACK")
                raise
            con.execute("COMMIT")
        finally:
            con.close()

    def ensure(self) -> None:
        """Create the index file and its table if they do not exist yet."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._transaction(write=True) as con:
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    con.execute(statement)
            if con.execute("PRAGMA user_version").fetchone()[0] == 0:
                con.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def insert(self, *, run_id: str, run_dir: str, config_hash: str, config_json: str, created: str) -> None:
        """Add a run with status "running"."""
        with self._transaction(write=True) as con:
            con.execute(
                "INSERT INTO runs (run_id, run_dir, config_hash, config_json, status, created)"
                " VALUES (?, ?, ?, ?, 'running', ?)",
                (run_id, run_dir, config_hash, config_json, created),
            )

    def update(self, run_id: str, **fields: Any) -> int:
        """Set columns of one run; returns the number of rows changed (0 or 1)."""
        allowed = {"status", "finished", "metrics_json", "error"}
        if not fields or set(fields) - allowed:
            raise ValueError(f"fields={sorted(fields)}: expected a non-empty subset of {sorted(allowed)}")
        if "status" in fields and fields["status"] not in STATUSES:
            raise ValueError(f"status={fields['status']!r}: expected one of {STATUSES}")
        assignments = ", ".join(f"{name} = ?" for name in fields)
        with self._transaction(write=True) as con:
            cursor = con.execute(f"UPDATE runs SET {assignments} WHERE run_id = ?", (*fields.values(), run_id))
            return cursor.rowcount

    def select(self, where: str = "", params: tuple = ()) -> list[RunRecord]:
        """Rows matching an SQL ``where`` clause, oldest first; [] while there is no index."""
        if not self.path.exists():
            return []
        query = f"SELECT {_COLUMNS} FROM runs {'WHERE ' + where if where else ''} ORDER BY created, rowid"
        try:
            with self._transaction(write=False) as con:
                rows = con.execute(query, params).fetchall()
        except sqlite3.OperationalError as err:
            if "no such table" in str(err):  # another process is creating the index right now
                return []
            raise
        return [self._record(row) for row in rows]

    def _record(self, row: tuple) -> RunRecord:
        run_id, run_dir, digest, config_json, status, created, finished, metrics_json, error = row
        return RunRecord(
            run_id=run_id,
            run_dir=self.path.parent / run_dir,
            config_hash=digest,
            status=status,
            created=created,
            metrics=None if metrics_json is None else json.loads(metrics_json),
            error=error,
            finished=finished,
            config=json.loads(config_json),
        )
