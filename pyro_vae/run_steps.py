"""The steps every training pipeline shares (unsupervised and M2): train, select, record.

A pipeline supplies what differs — how to fit, how to evaluate a selected model — and these
steps do the rest the same way: a training failure marks the run failed with its traceback,
the best restart (by the validation objective, 004 App. D) is sliced out, evaluated, and the
run records its history, metrics and parameters.
"""

from __future__ import annotations

import time
import traceback
from typing import Any, Callable

from pyro_vae.inference import TrainingError, TrainResult
from pyro_vae.nets import select_restart


def fit_or_fail(run, fit: Callable[[], TrainResult]) -> TrainResult:
    """``fit()``; on a :class:`TrainingError` the run is marked failed and the error re-raised."""
    try:
        return fit()
    except TrainingError as err:
        run.fail(str(err), traceback.format_exc())
        raise


def params_state(model, guide) -> dict:
    """One flat state dict of a model and its guide (``model.*``, ``guide.*``), as a run saves it."""
    out = {f"model.{k}": v.detach().cpu() for k, v in model.state_dict().items()}
    out.update({f"guide.{k}": v.detach().cpu() for k, v in guide.state_dict().items()})
    return out


def load_params_state(model, guide, params: dict) -> None:
    """Inverse of :func:`params_state`."""
    model.load_state_dict({k[6:]: v for k, v in params.items() if k.startswith("model.")})
    guide.load_state_dict({k[6:]: v for k, v in params.items() if k.startswith("guide.")})


def select_evaluate_record(
    run, model, guide, result: TrainResult, evaluate: Callable[[Any, Any], dict], **extra: Any
) -> dict:
    """Select the best restart, ``evaluate(best_model, best_guide)``, record the run as finished."""
    run.write_history(result.history)
    best_model, best_guide = select_restart(model, result.best_restart), select_restart(guide, result.best_restart)
    start = time.perf_counter()
    metrics = evaluate(best_model, best_guide)
    metrics.update(
        best_restart=result.best_restart,
        val_objective=float(result.val_objective[result.best_restart]),
        val_objective_per_restart=[float(v) for v in result.val_objective],
        train_seconds=result.seconds,
        eval_seconds=time.perf_counter() - start,
        steps=result.steps,
        **extra,
    )
    run.save_params(params_state(best_model, best_guide))
    run.finish(metrics)
    return metrics
