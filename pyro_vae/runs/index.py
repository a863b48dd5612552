"""The SQLite index of a runs folder: one row per run, safe for several writer processes.

Every operation opens its own connection and holds the lock only for one short
transaction (``BEGIN IMMEDIATE`` for writes, with a busy timeout), so processes of a
sweep can record runs into the same ``index.sqlite`` concurrently. The default rollback
journal is used (not WAL) so that runs folders also work on network filesystems.

Schema version 2 adds the run's owner (host, pid, token), its heartbeat and step, and the
status ``interrupted``; an index of version 1 is migrated by the first write.
"""

from __future__ import annotations

import json
import sqlite3
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from pyro_vae.runs.owner import is_stale

INDEX_NAME = "index.sqlite"
STORED_STATUSES = ("running", "finished", "failed", "interrupted")
STATUSES = (*STORED_STATUSES, "stale", "corrupt")  # stale: running, owner gone; corrupt: unreadable row
SCHEMA_VERSION = 2
_TABLE = """
CREATE TABLE IF NOT EXISTS runs (
    run_id       TEXT PRIMARY KEY,
    run_dir      TEXT NOT NULL,
    config_hash  TEXT NOT NULL,
    config_json  TEXT NOT NULL,
    status       TEXT NOT NULL CHECK (status IN ('running', 'finished', 'failed', 'interrupted')),
    created      TEXT NOT NULL,
    finished     TEXT,
    metrics_json TEXT,
    error        TEXT,
    owner_host   TEXT,
    owner_pid    INTEGER,
    owner_token  TEXT,
    heartbeat    TEXT,
    step         INTEGER
)"""
_INDEX = "CREATE INDEX IF NOT EXISTS runs_by_config_hash ON runs (config_hash)"
_COLUMNS_V1 = "run_id, run_dir, config_hash, config_json, status, created, finished, metrics_json, error"
_COLUMNS = _COLUMNS_V1 + ", owner_host, owner_pid, owner_token, heartbeat, step"


class RunIndexError(ValueError):
    """``index.sqlite`` is not a readable run index; the message names the file."""


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
    status : {"running", "finished", "failed", "interrupted", "stale", "corrupt"}
        "stale": stored as running, but its owner process is gone (killed, or the machine
        rebooted); "corrupt": the row cannot be read (``error`` says why).
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
    owner : dict or None
        ``host``, ``pid`` and ``token`` of the process that started the run.
    heartbeat : str or None
        ISO-8601 UTC time of the owner's last sign of life.
    step : int or None
        The last training step the owner reported.
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
    owner: dict | None = None
    heartbeat: str | None = None
    step: int | None = None


class RunIndex:
    """Rows of ``index.sqlite``; the file is created by the first write, never by a read."""

    def __init__(self, path: Path, timeout: float = 60.0):
        self.path = Path(path)
        self.timeout = timeout

    @contextmanager
    def _transaction(self, write: bool) -> Iterator[sqlite3.Connection]:
        try:
            con = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None)
        except sqlite3.Error as err:
            raise RunIndexError(f"{str(self.path)!r} cannot be opened as a run index ({err})") from None
        try:
            con.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                yield con
            except BaseException:
                con.execute("ROLLBACK")
                raise
            con.execute("COMMIT")
        except sqlite3.DatabaseError as err:
            text = str(err)
            if type(err) is not sqlite3.DatabaseError and "malformed" not in text and "not a database" not in text:
                raise
            raise RunIndexError(f"{str(self.path)!r} is not a readable run index ({err})") from None
        finally:
            con.close()

    def ensure(self) -> None:
        """Create the index file and its table if they do not exist yet; migrate version 1."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._transaction(write=True) as con:
            version = con.execute("PRAGMA user_version").fetchone()[0]
            exists = con.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='runs'").fetchone()
            if exists and version < SCHEMA_VERSION:
                con.execute("ALTER TABLE runs RENAME TO runs_v1")
                con.execute(_TABLE)
                con.execute(f"INSERT INTO runs ({_COLUMNS_V1}) SELECT {_COLUMNS_V1} FROM runs_v1")
                con.execute("DROP TABLE runs_v1")
            con.execute(_TABLE)
            con.execute(_INDEX)
            if version < SCHEMA_VERSION:
                con.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def insert(self, *, run_id: str, run_dir: str, config_hash: str, config_json: str, created: str,
               owner: tuple[str, int, str] | None = None) -> None:
        """Add a run with status "running", owned by ``owner`` = (host, pid, token)."""
        host, pid, token = owner if owner is not None else (None, None, None)
        with self._transaction(write=True) as con:
            con.execute(
                "INSERT INTO runs (run_id, run_dir, config_hash, config_json, status, created,"
                " owner_host, owner_pid, owner_token, heartbeat)"
                " VALUES (?, ?, ?, ?, 'running', ?, ?, ?, ?, ?)",
                (run_id, run_dir, config_hash, config_json, created, host, pid, token, created),
            )

    def delete(self, run_id: str) -> int:
        """Remove one run's row; returns the number of rows removed (0 or 1)."""
        with self._transaction(write=True) as con:
            return con.execute("DELETE FROM runs WHERE run_id = ?", (run_id,)).rowcount

    def update(self, run_id: str, *, only_if_status: str | None = None, **fields: Any) -> int:
        """Set columns of one run; returns the number of rows changed (0 or 1).

        ``only_if_status``: change the row only while its status is that one.
        """
        allowed = {"status", "finished", "metrics_json", "error", "heartbeat", "step"}
        if not fields or set(fields) - allowed:
            raise ValueError(f"fields={sorted(fields)}: expected a non-empty subset of {sorted(allowed)}")
        if "status" in fields and fields["status"] not in STORED_STATUSES:
            raise ValueError(f"status={fields['status']!r}: expected one of {STORED_STATUSES}")
        assignments = ", ".join(f"{name} = ?" for name in fields)
        where, params = "run_id = ?", [run_id]
        if only_if_status is not None:
            where, params = where + " AND status = ?", params + [only_if_status]
        with self._transaction(write=True) as con:
            cursor = con.execute(f"UPDATE runs SET {assignments} WHERE {where}", (*fields.values(), *params))
            return cursor.rowcount

    def select(self, where: str = "", params: tuple = ()) -> list[RunRecord]:
        """Rows matching an SQL ``where`` clause, oldest first; [] while there is no index."""
        if not self.path.exists():
            return []
        try:
            with self._transaction(write=False) as con:
                old = con.execute("PRAGMA user_version").fetchone()[0] < SCHEMA_VERSION
                columns = _COLUMNS_V1 + ", NULL, NULL, NULL, NULL, NULL" if old else _COLUMNS
                query = f"SELECT {columns} FROM runs {'WHERE ' + where if where else ''} ORDER BY created, rowid"
                rows = con.execute(query, params).fetchall()
        except sqlite3.OperationalError as err:
            if "no such table" in str(err):  # another process is creating the index right now
                return []
            raise
        return [self._record(row) for row in rows]

    def _record(self, row: tuple) -> RunRecord:
        """A row as a record; "running" becomes "stale" when the owner is gone, and a row that
        cannot be read becomes "corrupt" with the reason in ``error`` (naming file, row, column)."""
        (run_id, run_dir, digest, config_json, status, created, finished, metrics_json, error,
         host, pid, token, heartbeat, step) = row
        where = f"{str(self.path)!r} row {run_id!r}"
        problems, decoded = [], {}
        for column, text in (("config_json", config_json), ("metrics_json", metrics_json)):
            if text is None:
                continue
            try:
                decoded[column] = json.loads(text)
            except (TypeError, ValueError) as err:
                problems.append(f"{column} is not valid JSON ({err})")
        if status not in STORED_STATUSES:
            problems.append(f"status {status!r} is not one of {STORED_STATUSES}")
        if problems:
            status, error = "corrupt", f"{where}: " + "; ".join(problems)
        elif status == "running" and is_stale(host, pid, token, heartbeat):
            status = "stale"
        return RunRecord(
            run_id=run_id,
            run_dir=self.path.parent / str(run_dir),
            config_hash=digest,
            status=status,
            created=created,
            metrics=decoded.get("metrics_json"),
            error=error,
            finished=finished,
            config=decoded.get("config_json"),
            owner=None if host is None else {"host": host, "pid": pid, "token": token},
            heartbeat=heartbeat,
            step=step,
        )
