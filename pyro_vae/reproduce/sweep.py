"""Resumable sweeps: run every config of an experiment once, whatever was killed before.

A run is identified by the hash of its resolved config. Configs that differ only in data
version, seed, LIN's T and R or the β-VAE's β train as one vectorised group (:mod:`pyro_vae.reproduce.groups`), each
still recorded as its own run. ``run_sweep`` skips the configs the
store already holds as *finished*; a run killed mid-way reads back as "stale" (or "failed",
"interrupted") and is run again in place of the dead one (``RunStore.settle``), so a sweep
killed at any moment and started again loses nothing finished, repeats nothing finished and
leaves one row per config. Restarts are batched inside each run.

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

from pyro_vae.runs.lock import exclusive
from pyro_vae.runs.progress import stop_workers_on_interrupt
from pyro_vae.runs.store import RunStore

EXECUTORS = ("local", "ray")


class SweepResult(NamedTuple):
    total: int
    skipped: int  # already finished before this call
    ran: int
    failed: list[tuple[str, str]]  # (config summary, error)


def _execute(config_dicts: list[dict], runs_dir: str, threads: int | None) -> list[dict]:
    """Run one group of configs in a worker (a top-level function, so process pools can pickle it).

    ``threads``: torch's intra-op threads in this worker (1 by default: with more than one
    process per core, OpenMP's spin-waiting makes a step many times slower).
    """
    import torch

    torch.set_num_threads(threads or 1)
    if config_dicts[0].get("method") == "m2":
        from pyro_vae.pipeline_m2 import M2Config, train_and_evaluate_m2

        return [train_and_evaluate_m2(M2Config.from_dict(d), runs_dir, progress=False) for d in config_dicts]
    from pyro_vae.pipeline import RunConfig
    from pyro_vae.reproduce.groups import train_group

    return train_group([RunConfig.from_dict(d) for d in config_dicts], runs_dir, progress=False)


SHARED_STAGES = ("gt_decoder", "gt_init", "true_test_loglik")  # in order: a GT init reuses the decoder fit


def _build_artefact(config_dict: dict, runs_dir: str, stage: str, threads: int | None) -> str | None:
    """Build one shared artefact in a worker (top-level, so process pools can pickle it)."""
    import torch

    torch.set_num_threads(threads or 1)
    from pyro_vae.pipeline import RunConfig
    from pyro_vae.truth_init import build_shared_artefacts

    return build_shared_artefacts(RunConfig.from_dict(config_dict), runs_dir, stage)


def prebuild_artefacts(configs: Sequence, runs_dir: str | Path, *, workers: int = 1, threads: int = 1,
                       progress: bool = True) -> int:
    """Build the shared artefacts of ``configs`` (unsupervised runs) once per key, ``workers`` at a
    time, before any group trains: runs that share one then never build it twice. Returns how
    many were built or found."""
    from pyro_vae.pipeline import RunConfig
    from pyro_vae.truth_init import shared_artefact_keys

    unsupervised = [c for c in configs if isinstance(c, RunConfig)]
    count = 0
    for stage in SHARED_STAGES:
        jobs: dict = {}
        for cfg in unsupervised:
            key = shared_artefact_keys(cfg, stage)
            if key is not None and key not in jobs:
                jobs[key] = cfg.to_dict()
        if not jobs:
            continue
        bar = tqdm(total=len(jobs), desc=f"shared {stage}", unit="artefact", disable=not progress)
        if workers == 1 or len(jobs) == 1:
            for cfg in jobs.values():
                _build_artefact(cfg, str(runs_dir), stage, threads)
                bar.update(1)
        else:
            with cf.ProcessPoolExecutor(max_workers=min(workers, len(jobs))) as pool, stop_workers_on_interrupt(pool):
                futures = [pool.submit(_build_artefact, cfg, str(runs_dir), stage, threads) for cfg in jobs.values()]
                for fut in cf.as_completed(futures):
                    fut.result()
                    bar.update(1)
        bar.close()
        count += len(jobs)
    return count


_STEP_COST = {"lin": 3.0}  # LIN's encoder-only inner loops cost a few plain steps per step while aggressive


def _cost(group: list) -> float:
    """A rough relative cost of a group (restarts × particles × epochs), to start the costly groups first."""
    def one(c) -> float:
        method = getattr(c, "method", "")
        per_step = getattr(c, "particles", 1) if method == "iwae" else _STEP_COST.get(method, 1.0)
        return getattr(c, "restarts", 1) * per_step * getattr(c, "epochs", 1)

    return sum(one(c) for c in group)


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
    execute: Callable[[list[dict], str, int | None], list[dict]] = _execute,
    threads: int = 1,
    group: bool = True,
    max_group_restarts: int = 100,
) -> SweepResult:
    """Run each of ``configs`` (RunConfigs) that is not finished in ``runs_dir``.

    Configs are validated and their method options resolved before anything runs, so a bad
    config fails the whole sweep up front. Configs that differ only in data version, seed,
    LIN's T and R or β train together as one vectorised group (``group=True``; :mod:`pyro_vae.reproduce.groups`)
    and are recorded as separate runs. Failures of single runs (e.g. NaN) are recorded in the
    store and returned; the sweep goes on. Every worker uses ``threads`` torch threads.
    """
    if executor not in EXECUTORS:
        raise ValueError(f"executor={executor!r}: expected one of {EXECUTORS}")
    if not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers={workers!r}: expected a positive integer")
    if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
        raise ValueError(f"threads={threads!r}: expected a positive integer")
    from pyro_vae.reproduce.experiments import resolved as _resolved

    resolved = []
    for cfg in configs:
        cfg.validate()
        resolved.append(_resolved(cfg))
    with exclusive(runs_dir, "runs_dir"):  # a second sweep on this folder would train the same pending runs
        return _run_locked(resolved, runs_dir, executor, workers, address, progress, execute, threads, group,
                           max_group_restarts)


def _run_locked(resolved, runs_dir, executor, workers, address, progress, execute, threads, group,
                max_group_restarts) -> SweepResult:
    store = RunStore(runs_dir)
    store.settle(cfg.to_dict() for cfg in resolved)  # dead runs (stale, failed, ...) are replaced: one row per config
    todo = pending(resolved, store)
    skipped = len(resolved) - len(todo)
    failed: list[tuple[str, str]] = []
    if executor == "local" and todo:
        prebuild_artefacts(todo, runs_dir, workers=workers, threads=threads, progress=progress)
    bar = tqdm(total=len(resolved), initial=skipped, desc="sweep", unit="run", disable=not progress)
    if group:
        from pyro_vae.reproduce.groups import make_groups

        groups = make_groups(todo, max_group_restarts)
        # Longest first (Graham's LPT rule, makespan ≤ 4/3 of the optimum): a costly group started last
        # leaves the other workers idle while it runs alone (the figure8 slice of 004 Table 2 on 2 workers).
        groups.sort(key=_cost, reverse=True)
    else:
        groups = [[cfg] for cfg in todo]
    jobs = [([cfg.to_dict() for cfg in g], str(runs_dir)) for g in groups]
    labels = [[_label(cfg) for cfg in g] for g in groups]

    def done(names: list[str], error: BaseException | None) -> None:
        if error is not None:
            bad = {i for i, _ in getattr(error, "errors", [])} or set(range(len(names)))
            for i in sorted(bad):
                failed.append((names[i], f"{type(error).__name__}: {error}"))
        bar.update(len(names))
        bar.set_postfix(last=names[-1], group=len(names), failed=len(failed))

    if executor == "ray":
        _run_ray(jobs, labels, address, workers, threads, execute, done)
    elif workers == 1:
        for (cfgs, root), names in zip(jobs, labels):
            try:
                execute(cfgs, root, threads)
                done(names, None)
            except Exception as err:  # recorded as failed in the store by the run itself
                done(names, err)
    else:
        with cf.ProcessPoolExecutor(max_workers=workers) as pool, stop_workers_on_interrupt(pool):
            futures = {pool.submit(execute, cfgs, root, threads): names for (cfgs, root), names in zip(jobs, labels)}
            for fut in cf.as_completed(futures):
                done(futures[fut], fut.exception())
    bar.close()
    return SweepResult(len(resolved), skipped, len(todo), failed)


def _run_ray(jobs, labels, address, workers, threads, execute, done) -> None:
    try:
        import ray
    except ImportError:
        raise ValueError("executor='ray' needs Ray: pip install 'pyro-vae[ray]'") from None
    started = not ray.is_initialized()
    if started:
        ray.init(address=address, num_cpus=None if address else workers, include_dashboard=False, log_to_driver=False)
    try:
        remote = ray.remote(num_cpus=1)(execute)
        refs = {remote.remote(cfgs, root, threads): names for (cfgs, root), names in zip(jobs, labels)}
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
