"""Training for the diagnosis, through the ordinary pipeline and run store.

- :func:`fit_data_config` / :func:`fit_data`: ``pyro-vae fit-data`` — a VAE trained on the user's
  file (``RunConfig(dataset="file", ...)``, :class:`pyro_vae.datasets.user.FileData`), stored as
  a run like any benchmark run;
- :func:`latent_variant`: the run's config with another latent dimension K, trained (or found
  finished in the same runs folder) for the latent-dimension check (004 §8 Case B).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from pyro_vae.pipeline import RunConfig, train_and_evaluate
from pyro_vae.runs import RunStore

__all__ = ["fit_data_config", "fit_data", "latent_variant"]


def fit_data_config(
    path: str | Path,
    *,
    labels: str | None = None,
    latent_dim: int = 1,
    noise: str = "learned",
    noise_var: float | None = None,
    epochs: int = 100,
    restarts: int = 1,
    batch_size: int = 100,
    lr: float = 1e-3,
    hidden: tuple[int, ...] = (50, 50, 50),
    method: str = "vae",
    guide: str = "mean_field",
    seed: int = 0,
    data_seed: int = 0,
    eval_samples: int = 1000,
    device: str = "cpu",
) -> RunConfig:
    """The run config of a VAE on the data in ``path``; validated (the file is read) before return.

    ``noise="learned"`` (default) learns σ² per dimension jointly with the ELBO, starting at
    ``noise_var`` (default 1 % of the mean column variance) — what practitioners commonly do, and
    what the noise check examines; ``"fixed"`` keeps ``noise_var``; ``"posthoc"`` sets it by Eq. 9
    after training. ``data_seed`` shuffles the rows into train/validation/test (5 : 2 : 2); a
    file with fewer training rows than ``batch_size`` trains on full batches.
    """
    params: dict[str, Any] = {"path": str(Path(path).resolve()), "latent_dim": latent_dim}
    if labels is not None:
        params["labels"] = labels
    if noise_var is not None:
        params["noise_var"] = noise_var
    from pyro_vae.datasets import get_dataset

    train_size = get_dataset("file", **params).sizes[0]
    config = RunConfig(
        dataset="file", dataset_params=params, method=method, guide=guide, noise=noise, epochs=epochs,
        restarts=restarts, batch_size=min(batch_size, train_size), lr=lr, hidden=tuple(hidden), seed=seed, data_seed=data_seed,
        eval_samples=eval_samples, device=device,
    )
    dataset = config.validate()
    config.dataset_params = dict(dataset.params)  # records the file's SHA-256 and the σ² used
    return config


def fit_data(config: RunConfig, runs_dir: str | Path, *, progress: bool = False) -> dict[str, Any]:
    """Train ``config`` (from :func:`fit_data_config`) into the run store; returns the run summary."""
    return train_and_evaluate(config, runs_dir, progress=progress)


def latent_variant(config: RunConfig, latent_dim: int, runs_dir: str | Path, *, progress: bool = False) -> Path:
    """The run folder of ``config`` with latent dimension ``latent_dim``, trained if not already finished.

    Benchmark runs change ``latent_dim`` (and start from a random initialisation when K differs
    from the truth's, as in 004 Table 1); file runs change the data set's ``latent_dim``.
    """
    if config.dataset == "file":
        variant = dataclasses.replace(config, dataset_params={**config.dataset_params, "latent_dim": latent_dim})
    else:
        dataset = config.validate()
        same_as_truth = latent_dim == dataset.latent_dim
        variant = dataclasses.replace(
            config, latent_dim=None if same_as_truth else latent_dim,
            init=config.init if same_as_truth else "random",
            decoder=config.decoder if same_as_truth or config.decoder != "family" else "mlp",
        )
    variant.validate()
    done = RunStore(runs_dir).finished(variant.resolved().to_dict())
    if done is not None:
        return Path(done.run_dir)
    return Path(train_and_evaluate(variant, runs_dir, progress=progress)["run_dir"])
