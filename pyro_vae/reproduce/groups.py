"""Groups of runs trained in one vectorised loop, each recorded as its own run.

Configs that differ only in what a restart batch can carry — the data version (each run's
restarts draw their minibatches from their own data) and the seed (each run keeps its own
initialisation, minibatch order and GT initialisation) — train as one model whose restarts
are the runs' restarts side by side (:func:`pyro_vae.nets.stack_restarts`). Afterwards each
run's restarts are sliced out, its best restart is selected by its own validation objective
and it is evaluated and recorded exactly as a run trained alone, so resuming, reports and
``evaluate`` work per run. A run trained in a group equals the run trained alone (same init,
minibatches and noise; tested), so grouping changes the cost, not the protocol.
"""

from __future__ import annotations

import contextlib
import traceback
from pathlib import Path
from typing import Any, Sequence

import torch

from pyro_vae.inference import TrainingError, TrainResult, resolve_device
from pyro_vae.inference.methods import METHODS, Group
from pyro_vae.nets import slice_restarts, stack_restarts
from pyro_vae.pipeline import RunConfig, finish_run, prepare_run, train_and_evaluate
from pyro_vae.runs import RunStore
from pyro_vae.runs.artefacts import ArtefactStore

GROUPED_FIELDS = ("data_seed", "seed")  # what a restart batch can carry, besides a method's grouped_options


def group_key(config: RunConfig) -> str | None:
    """Configs with the same key train together; None for a config that trains alone.

    The key drops the data version, the seed and the method's ``grouped_options`` and
    ``grouped_fields`` (LIN's T and R: each restart follows its own inner-loop schedule; the
    β-VAE's β: each restart's latent log-densities carry its own factor)."""
    if not isinstance(config, RunConfig) or not METHODS[config.method].groupable:
        return None
    d = config.resolved().to_dict()
    for name in GROUPED_FIELDS + METHODS[config.method].grouped_fields:
        d.pop(name)
    grouped = METHODS[config.method].grouped_options
    d["options"] = {k: v for k, v in d["options"].items() if k not in grouped}
    return repr(sorted(d.items()))


def make_groups(configs: Sequence, max_restarts: int = 100) -> list[list]:
    """Partition ``configs`` (in order) into groups of at most ``max_restarts`` restarts."""
    groups: dict[Any, list] = {}
    out: list[list] = []
    for i, cfg in enumerate(configs):
        key = group_key(cfg)
        if key is None:
            out.append([cfg])
            continue
        current = groups.get(key)
        if current is None or sum(c.restarts for c in current) + cfg.restarts > max_restarts:
            current = groups[key] = []
            out.append(current)
        current.append(cfg)
    return out


def _slice_result(result: TrainResult, start: int, count: int) -> TrainResult:
    rows = [{**row, "restart": row["restart"] - start} for row in result.history
            if start <= row["restart"] < start + count]
    val = result.val_objective[start : start + count]
    best = int(torch.nan_to_num(val, nan=-float("inf")).argmax())
    return TrainResult(rows, val, best, result.steps, result.seconds)


class GroupFailures(RuntimeError):
    """Some runs of a group failed when rerun alone; ``summaries`` holds the others."""

    def __init__(self, summaries: list[dict], errors: list[tuple[int, BaseException]]):
        self.summaries, self.errors = summaries, errors
        super().__init__("; ".join(f"run {i}: {type(e).__name__}: {e}" for i, e in errors))


def train_group(configs: Sequence[RunConfig], runs_dir: str | Path, *, progress: bool = True) -> list[dict]:
    """Train ``configs`` (one group, see :func:`make_groups`) together; record each as its own run.

    A group of one is :func:`pyro_vae.pipeline.train_and_evaluate`. If training the group
    fails (e.g. a NaN in one run's restart), each config is run alone instead, so a failure
    is recorded against its own run only (raised together as :class:`GroupFailures`).
    """
    if len(configs) == 1:
        return [train_and_evaluate(configs[0], runs_dir, progress=progress)]
    keys = {group_key(c) for c in configs}
    if len(keys) != 1 or None in keys:
        raise ValueError("train_group: the configs differ in more than data_seed, seed and their method's grouped "
                         "options, or their method cannot train in a group")
    store, artefacts = RunStore(runs_dir), ArtefactStore(runs_dir)
    for cfg in configs:
        cfg.validate()
    with contextlib.ExitStack() as stack:
        runs = []
        for cfg in configs:
            resolved = cfg.resolved()
            run = stack.enter_context(store.start(resolved.to_dict()))
            run.write_config({**resolved.to_dict(), "resolved_device": str(resolve_device(cfg.device))})
            runs.append(run)
        prepared = [prepare_run(cfg, artefacts) for cfg in configs]
        model = stack_restarts([p.model for p in prepared])
        guide = stack_restarts([p.guide for p in prepared])
        first = prepared[0].config
        fields = METHODS[configs[0].method].grouped_fields
        group = Group([p.config.seed for p in prepared], [p.config.restarts for p in prepared],
                      [p.config.resolved().options for p in prepared],
                      [{k: getattr(p.config, k) for k in fields} for p in prepared])
        try:
            result = METHODS[first.method].fit(
                model, guide, [p.splits.train.x for p in prepared], [p.splits.val.x for p in prepared], first,
                progress, group=group,
            )
        except TrainingError as err:
            for run in runs:
                run.fail(f"in a group: {err}; rerun alone", traceback.format_exc())
            failed = True
        else:
            failed = False
        if not failed:
            summaries, start = [], 0
            for run, prep in zip(runs, prepared):
                count = prep.config.restarts
                sub = _slice_result(result, start, count)
                metrics = finish_run(run, prep, slice_restarts(model, start, count), slice_restarts(guide, start, count),
                                     sub, artefacts, extra={"group_size": len(configs)})
                summaries.append({"run_dir": str(run.run_dir), "run_id": run.run_id, "best_restart": sub.best_restart,
                                  "metrics": metrics})
                start += count
            return summaries
    store.settle(cfg.resolved().to_dict() for cfg in configs)  # the group's failed rows make way: one row per config
    summaries, errors = [], []
    for i, cfg in enumerate(configs):
        try:
            summaries.append(train_and_evaluate(cfg, runs_dir, progress=progress))
        except Exception as err:  # recorded as failed by the run itself
            errors.append((i, err))
    if errors:
        raise GroupFailures(summaries, errors)
    return summaries
