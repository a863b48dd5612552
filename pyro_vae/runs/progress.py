"""Where the training of this process has got to, and interrupts that say so.

A training loop calls :func:`report` after each optimiser step (one cheap assignment); the
run store reads :func:`reached` for its heartbeat and, when the run is interrupted, for the
message "interrupted by SIGTERM at step 1200 (epoch 12)".

:func:`signals_interrupt` turns SIGINT and SIGTERM into :class:`Interrupted` (a
``KeyboardInterrupt``, so ``except Exception`` blocks let it pass) for the duration of a
command: the run being trained is marked ``interrupted`` on the way out and the command exits
with 128 + the signal number (130 for SIGINT, 143 for SIGTERM).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator

_state: dict = {"step": None, "epoch": None, "run": None, "interrupted": None}


def report(step: int | None = None, epoch: int | None = None) -> None:
    """Record the optimiser step (and epoch) the training loop of this process has reached."""
    if step is not None:
        _state["step"] = step
    if epoch is not None:
        _state["epoch"] = epoch


def reset(run_id: str | None = None) -> None:
    """Forget the progress of the previous run; ``run_id`` is the run now being trained."""
    _state.update(step=None, epoch=None, run=run_id)


def current_step() -> int | None:
    """The last step reported, or None."""
    return _state["step"]


def current_run() -> str | None:
    """The id of the run this process trains now (set by ``RunStore.start``), or None."""
    return _state["run"]


def note_interrupted(run_id: str, reason: str) -> None:
    """Remember that ``run_id`` was marked interrupted (for the command's last line)."""
    _state["interrupted"] = (run_id, reason)


def last_interrupted() -> tuple[str, str] | None:
    """``(run_id, reason)`` of the run this process last marked interrupted, or None."""
    return _state["interrupted"]


def reached() -> str:
    """``"step 1200 (epoch 12)"``, ``"step 1200"`` or ``"before the first training step"``."""
    step, epoch = _state["step"], _state["epoch"]
    if step is None:
        return "before the first training step"
    return f"step {step}" + (f" (epoch {epoch})" if epoch is not None else "")


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived; ``exit_code`` is 128 + the signal number."""

    def __init__(self, signum: int):
        self.signum = signum
        self.signal_name = signal.Signals(signum).name
        self.exit_code = 128 + signum
        super().__init__(self.signal_name)


def interrupt_reason(exc: BaseException) -> str:
    """``"interrupted by SIGTERM at step 1200 (epoch 12)"`` for an :class:`Interrupted` or a
    plain ``KeyboardInterrupt`` (SIGINT)."""
    name = exc.signal_name if isinstance(exc, Interrupted) else "SIGINT"
    where = reached()
    return f"interrupted by {name} " + (where if where.startswith("before") else f"at {where}")


@contextlib.contextmanager
def signals_interrupt() -> Iterator[None]:
    """Raise :class:`Interrupted` on the first SIGINT or SIGTERM; later ones are ignored while
    the run is being marked (so a second Ctrl-C cannot leave it half-written).

    Only the main thread can install handlers; elsewhere this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    fired = []

    def handler(signum, _frame):
        if fired:
            return
        fired.append(signum)
        raise Interrupted(signum)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@contextlib.contextmanager
def stop_workers_on_interrupt(pool, grace: float = 10.0) -> Iterator[None]:
    """On SIGINT/SIGTERM (or any error) inside the block: cancel the pool's queued jobs and send
    SIGTERM to its worker processes, so each marks its run interrupted, instead of waiting for
    every queued run to finish. A worker still alive ``grace`` seconds later is killed (its
    run, if it had started another, reads back as stale)."""
    try:
        yield
    except BaseException:
        # the executor keeps no public handle on its processes, and shutdown() drops the private one
        procs = list((getattr(pool, "_processes", None) or {}).values())
        pool.shutdown(wait=False, cancel_futures=True)
        for proc in procs:
            try:
                proc.terminate()
            except Exception:
                pass
        for proc in procs:
            try:
                proc.join(grace)
                if proc.is_alive():
                    proc.kill()
            except Exception:
                pass
        raise
