"""Who owns a running run, whether that process is still there, and its heartbeat.

A run records its owner when it starts: the host name, the process id and a token made of the
kernel's boot id and the process's start time (so a pid reused after a reboot or by a later
process is not mistaken for the owner). While it trains, a daemon thread writes a heartbeat
(time and step) into the index every :data:`HEARTBEAT_SECONDS`.

A "running" run is *stale* when its owner is gone: on the same host, when the process does not
exist, is a zombie, or is another process with the same pid; on another host (which cannot be
asked), when the last heartbeat is older than :data:`STALE_AFTER_SECONDS`.
"""

from __future__ import annotations

import os
import socket
import threading
import weakref
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, NamedTuple

HEARTBEAT_SECONDS = float(os.environ.get("PYRO_VAE_HEARTBEAT_SECONDS", "30"))  # an override for tests and clusters
STALE_AFTER_SECONDS = max(600.0, 10 * HEARTBEAT_SECONDS)


class Owner(NamedTuple):
    host: str
    pid: int
    token: str  # "<boot id>:<process start time>"


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _proc_start(pid: int) -> str | None:
    """Start time of ``pid`` in clock ticks since boot (field 22 of /proc/PID/stat), its state,
    or None where /proc is absent; ``""`` if the process does not exist."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return ""
    except OSError:
        return None
    fields = text[text.rfind(")") + 2 :].split()  # after "pid (comm) "
    state, start = fields[0], fields[19]
    return "Z" if state in ("Z", "X") else start


def current_owner() -> Owner:
    """This process as a run owner."""
    pid = os.getpid()
    return Owner(socket.gethostname(), pid, f"{_boot_id()}:{_proc_start(pid) or ''}")


def owner_alive(host: str | None, pid: int | None, token: str | None) -> bool | None:
    """True/False when this host can tell, None when the owner is unknown or on another host."""
    if not host or pid is None:
        return None
    if host != socket.gethostname():
        return None
    boot, _, start = (token or "").partition(":")
    if boot and _boot_id() and boot != _boot_id():
        return False  # the machine rebooted since
    now = _proc_start(pid)
    if now is None:  # no /proc: ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    if now in ("", "Z"):
        return False
    return not start or now == start


def seconds_since(iso: str | None) -> float | None:
    """Seconds from an ISO-8601 time to now, or None."""
    if not iso:
        return None
    try:
        then = datetime.fromisoformat(iso)
    except ValueError:
        return None
    if then.tzinfo is None:
        then = then.replace(tzinfo=timezone.utc)
    return (datetime.now(timezone.utc) - then).total_seconds()


def is_stale(host: str | None, pid: int | None, token: str | None, heartbeat: str | None) -> bool:
    """A running run whose owner is gone (see the module docstring)."""
    alive = owner_alive(host, pid, token)
    if alive is not None:
        return not alive
    age = seconds_since(heartbeat)
    return age is not None and age > STALE_AFTER_SECONDS


class Heartbeat:
    """A daemon thread calling ``beat()`` every ``interval`` seconds until :meth:`stop`.

    It holds the owner object only weakly (``owner_ref``): when the run object is gone, the
    thread ends. Errors of ``beat`` (a locked index) are ignored; the next beat retries.
    """

    def __init__(self, owner_obj, beat: Callable[[object], None], interval: float = HEARTBEAT_SECONDS):
        self._ref = weakref.ref(owner_obj)
        self._beat = beat
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="pyro-vae-heartbeat", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            obj = self._ref()
            if obj is None:
                return
            try:
                self._beat(obj)
            except Exception:
                pass
            del obj

    def stop(self) -> None:
        self._stop.set()
