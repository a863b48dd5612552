"""One sweep at a time per folder: an advisory lock held for the sweep's whole life.

Two sweeps writing into one runs folder would both see a config as pending and both train it
(runs are claimed when they start, not when a sweep plans them). :func:`exclusive` takes an
exclusive ``flock(2)`` on ``<folder>/.sweep.lock`` without waiting; the kernel drops it when the
holder's file is closed, so a sweep killed by SIGKILL or a crash never leaves the folder locked.
The lock file holds a line naming the holder (host, pid, start time) for the error message.

``flock`` locks are local to a host (and unreliable on some network file systems): two hosts
sharing a folder are not kept apart. Where ``fcntl`` does not exist (Windows) nothing is locked.
"""

from __future__ import annotations

import os
import socket
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

try:
    import fcntl
except ImportError:  # not POSIX
    fcntl = None

from pyro_vae.provenance import utc_now

LOCK_NAME = ".sweep.lock"


class FolderBusyError(ValueError):
    """Another live process holds the folder's sweep lock."""


@contextmanager
def exclusive(folder: str | Path, flag: str = "folder") -> Iterator[None]:
    """Hold ``folder``'s sweep lock for the block; raise :class:`FolderBusyError` at once if it is held.

    ``flag`` names the argument that chose the folder (``--out``) in the error message.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{flag}={str(folder)!r}: exists and is not a folder")
    folder.mkdir(parents=True, exist_ok=True)
    if fcntl is None:
        yield
        return
    fd = os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 512, 0).decode(errors="replace").strip() or "another process"
            raise FolderBusyError(
                f"{flag}={str(folder)!r}: a sweep is already running in this folder ({holder}); wait for it to "
                f"end or choose another {flag}") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} since {utc_now()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock
