"""What a diagnosis runs on: a run folder's model and guide, and the points to check them on.

- ``RUN`` alone: the run's own data — held-out points from its test split, the training split
  for the richer family, and the labels of a ``fit-data`` file run that kept a labels column;
- ``RUN`` with a data file: the run's model on the file's points (all of them, subsampled to
  ``max_points`` for the checks), the file's labels for the semi-supervised check.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import torch

from pyro_vae.datasets.user import DataFileError, read_data_file
from pyro_vae.runs import RunDirError

__all__ = ["Subject", "load_subject", "subsample"]


class Subject(NamedTuple):
    """The model under diagnosis and its data."""

    model: Any
    guide: Any
    config: Any  # RunConfig
    x_eval: torch.Tensor
    x_train: torch.Tensor
    labelled: tuple[torch.Tensor, torch.Tensor] | None
    source: dict


def subsample(x: torch.Tensor, max_points: int, seed: int) -> torch.Tensor:
    """At most ``max_points`` rows of ``x``, drawn without replacement by ``seed`` (order kept)."""
    if x.shape[0] <= max_points:
        return x
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randperm(x.shape[0], generator=gen)[:max_points].sort().values
    return x[idx.to(x.device)]


def _load_run(run_dir: str | Path, device: str):
    from pyro_vae.pipeline import load_trained

    path = Path(run_dir)
    if not path.is_dir() or not (path / "config.json").is_file():
        raise ValueError(f"RUN {str(run_dir)!r}: not a run folder (no config.json); give a folder made by `train` or `fit-data`")
    try:
        return load_trained(path, device)
    except (RunDirError, DataFileError) as err:
        raise ValueError(f"RUN {str(run_dir)!r}: {err}") from None
    except ValueError as err:
        if "config key" in str(err):
            raise ValueError(f"RUN {str(run_dir)!r}: not a VAE run of `train` or `fit-data` ({err})") from None
        raise ValueError(f"RUN {str(run_dir)!r}: {err}") from None


def load_subject(
    run_dir: str | Path,
    *,
    data: str | Path | None = None,
    labels: str | None = None,
    max_points: int = 1000,
    seed: int = 0,
    device: str = "cpu",
) -> Subject:
    """The model and guide of ``run_dir`` and the points to check them on (module docstring).

    Raises ``ValueError`` naming ``RUN``, ``--data`` or ``--labels`` for a folder that is not
    a finished VAE run, an unreadable file, a labels column that is not there, or data whose
    number of columns differs from the model's.
    """
    if labels is not None and data is None:
        raise ValueError(f"--labels {labels!r}: give the labelled file with --data FILE (a run's own labels, kept by "
                         "`fit-data --labels`, are used without this flag)")
    table = None
    if data is not None:
        try:
            table = read_data_file(data, labels)
        except DataFileError as err:
            flag = "--labels" if labels is not None and "labels" in str(err) else "--data"
            raise ValueError(f"{flag}: {err}") from None
    config, dataset, model, guide, _ = _load_run(run_dir, device)
    dev = next(model.parameters()).device
    source: dict[str, Any] = {"run": str(run_dir), "dataset": config.dataset}
    if table is not None:
        if table.x.shape[1] != dataset.obs_dim:
            raise ValueError(
                f"--data {str(data)!r}: {table.x.shape[1]} data columns ({table.columns}), but the run's model has D = {dataset.obs_dim}"
            )
        x_all = torch.as_tensor(table.x, dtype=torch.float32, device=dev)
        x_eval, x_train = subsample(x_all, max_points, seed), x_all
        y = None if table.y is None else torch.as_tensor(table.y)
        labelled = None if y is None else (x_all.cpu(), y)
        source.update(data=str(data), labels=labels, rows=int(x_all.shape[0]))
    else:
        splits = dataset.splits(config.data_seed, device=dev)
        x_eval, x_train = subsample(splits.test.x, max_points, seed), splits.train.x
        y = getattr(dataset, "y", None)
        labelled = None if y is None else (dataset.x, y)
        source.update(split="test", data_seed=config.data_seed)
    return Subject(model, guide, config, x_eval, x_train, labelled, source)
