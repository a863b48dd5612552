"""Resumable sweeps: run every config of an experiment once, whatever was killed before.

A run is identified by the hash of its resolved config. ``run_sweep`` skips the configs the
store already holds as *finished*; a run killed mid-way stays "running" (or "failed") in the
index and is simply run again, so a sweep killed at any moment and started again loses
nothing finished and repeats nothing finished. Restarts are batched inside each run.

Executors: ``"local"`` (in this process when ``workers=1``, else a process pool) and
``"ray"`` (``pip install pyro-vae[ray]``; ``address=None`` starts a local Ray instance).
All write to the same run store: each run records itself in the SQLite index.
"""

from __future__ import annotations

import concurrent.futures as cf
import os
from pathlib import Path
from typing import Any, Callable, NamedTuple, Sequence

from tqdm.auto import tqdm

from pyro_vae.runs.store import RunStore

EXECUTORS = ("local", "ray")


class SweepResult(NamedTuple):
    total: int
    skipped: int  # already finished before this call
    ran: int
    failed: list[tuple[str, str]]  # (config summary, error)


def _execute(config_dict: dict, runs_dir: str, threads: int | None) -> dict:
    """Run one config in a worker (a top-level function, so process pools can pickle it)."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    if config_dict.get("method") == "m2":
        from pyro_vae.pipeline_m2 import M2Config, train_and_evaluate_m2

        return train_and_evaluate_m2(M2Config.from_dict(config_dict), runs_dir, progress=False)
    from pyro_vae.pipeline import RunConfig, train_and_evaluate

    return train_and_evaluate(RunConfig.from_dict(config_dict), runs_dir, progress=False)


def _label(cfg) -> str:
    opts = ",".join(f"{k}={v}" for k, v in sorted(getattr(cfg, "options", {}).items()))
    return f"{cfg.dataset}/{cfg.method}{'[' + opts + ']' if opts else ''}/v{cfg.data_seed}"


def pending(configs: Sequence, store: RunStore) -> list:
    """The configs (already resolved) that the store does not hold as finished."""
    return [cfg for cfg in configs if store.finished(cfg.to_dict()) is None]


def run_sweep(
    configs: Sequence,
    runs_dir: str | Path,
    *,
    executor: str = "local",
    workers: int = 1,
    address: str | None = None,
    progress: bool = True,
    execute: Callable[[dict, str, int | None], dict] = _execute,
) -> SweepResult:
    """Run each of ``configs`` (RunConfigs) that is not finished in ``runs_dir``.

    Configs are validated and their method options resolved before anything runs, so a bad
    config fails the whole sweep up front. Failures of single runs (e.g. NaN) are recorded
    in the store and returned; the sweep goes on.
    """
    if executor not in EXECUTORS:
        raise ValueError(f"executor={executor!r}: expected one of {EXECUTORS}")
    if not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers={workers!r}: expected a positive integer")
    from pyro_vae.reproduce.experiments import resolved as _resolved

    resolved = []
    for cfg in configs:
        cfg.validate()
        resolved.append(_resolved(cfg))
    store = RunStore(runs_dir)
    todo = pending(resolved, store)
    skipped = len(resolved) - len(todo)
    failed: list[tuple[str, str]] = []
    bar = tqdm(total=len(resolved), initial=skipped, desc="sweep", unit="run", disable=not progress)
    jobs = [(cfg.to_dict(), str(runs_dir)) for cfg in todo]
    labels = [_label(cfg) for cfg in todo]

    def done(label: str, error: BaseException | None) -> None:
        if error is not None:
            failed.append((label, f"{type(error).__name__}: {error}"))
        bar.update(1)
        bar.set_postfix(last=label, failed=len(failed))

    if executor == "ray":
        _run_ray(jobs, labels, address, workers, execute, done)
    elif workers == 1:
        for (cfg, root), label in zip(jobs, labels):
            try:
                execute(cfg, root, None)
                done(label, None)
            except Exception as err:  # recorded as failed in the store by the run itself
                done(label, err)
    else:
        threads = max(1, (os.cpu_count() or 1) // workers)
        with cf.ProcessPoolExecutor(max_workers=workers) as pool:
            futures = {pool.submit(execute, cfg, root, threads): label for (cfg, root), label in zip(jobs, labels)}
            for fut in cf.as_completed(futures):
                done(futures[fut], fut.exception())
    bar.close()
    return SweepResult(len(resolved), skipped, len(todo), failed)


def _run_ray(jobs, labels, address, workers, execute, done) -> None:
    try:
        import ray
    except ImportError:
        raise ValueError("executor='ray' needs Ray: pip install 'pyro-vae[ray]'") from None
    started = not ray.is_initialized()
    if started:
        ray.init(address=address, num_cpus=None if address else workers, include_dashboard=False, log_to_driver=False)
    try:
        remote = ray.remote(num_cpus=1)(execute)
        refs = {remote.remote(cfg, root, 1): label for (cfg, root), label in zip(jobs, labels)}
        pending_refs = list(refs)
        while pending_refs:
            ready, pending_refs = ray.wait(pending_refs, num_returns=1)
            try:
                ray.get(ready[0])
                done(refs[ready[0]], None)
            except Exception as err:
                done(refs[ready[0]], err)
    finally:
        if started:
            ray.shutdown()


def sweep_status(configs: Sequence, runs_dir: str | Path) -> dict[str, Any]:
    """How many of ``configs`` are finished in ``runs_dir``."""
    from pyro_vae.reproduce.experiments import resolved as _resolved

    resolved = [_resolved(cfg) for cfg in configs]
    store = RunStore(runs_dir)
    left = pending(resolved, store)
    return {"total": len(resolved), "finished": len(resolved) - len(left), "pending": [_label(c) for c in left]}
