"""The training behind the paper figures that show learned models (:mod:`pyro_vae.reproduce.paper_figures`).

- :func:`fit_jte`: the VAE or LiBI on LinearJTE / CubicJTE with the data set's parametric
  decoder (000 App. E), plus φ_GT (a guide fitted to the true θ), for 000 Figures 2-5. It runs
  exactly what ``pyro-vae train DATASET --method vae|libi`` runs (same config, seeds, data
  version, restarts and best-restart selection) without the run store, and keeps LiBI's code
  network h, whose codes the LiBI figures show.
- :func:`fit_m2`: the semi-supervised M2 model on the Discrete Semi-Circle, through
  :func:`pyro_vae.pipeline_m2.train_and_evaluate_m2` (004 Figure 6).

The defaults are the settings the committed figures were drawn with (``JTE_SETTINGS``,
``M2_SETTINGS``); each is a reduction of the papers' protocols, stated there.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any, NamedTuple

import torch

#: 000 Figures 2-5: 600 θ-epochs at lr 0.01 in minibatches of 100, 3 restarts (000 App. E: 30k
#: full-batch epochs, 10 restarts).
JTE_SETTINGS = {"epochs": 600, "restarts": 3, "lr": 0.01, "batch_size": 100}
#: 004 Figure 6: 100 epochs, 3 restarts, α = 0.1, γ = 1, the factorised q(y|x) q(z|x) of Eqs. 13/15
#: (004 App. D: 100 epochs, 5 restarts, α and γ chosen on a grid).
M2_SETTINGS = {"epochs": 100, "restarts": 3, "alpha": 0.1, "gamma": 1.0, "z_given_y": False, "particles": 20}
JTE_METHODS = ("vae", "libi")


class JTEFit(NamedTuple):
    """A trained VAE or LiBI model on a JTE set, with what 000 Figures 2-5 draw.

    ``model``, ``guide``: the best restart (unbatched); ``gt_guide``: φ_GT, the guide fitted
    to the true θ; ``x``, ``z``: the test split; ``codes``: LiBI's ``h(x)`` on ``x`` (None for
    the VAE); ``metrics``: the pipeline's test metrics (empty when not evaluated); ``settings``:
    the run's resolved config; ``seconds``: wall time.
    """

    dataset: Any
    model: Any
    guide: Any
    gt_guide: Any
    x: torch.Tensor
    z: torch.Tensor
    codes: torch.Tensor | None
    metrics: dict
    settings: dict
    seconds: float


def fit_jte(dataset: str, method: str, *, epochs: int = JTE_SETTINGS["epochs"],
            restarts: int = JTE_SETTINGS["restarts"], lr: float = JTE_SETTINGS["lr"],
            batch_size: int = JTE_SETTINGS["batch_size"], seed: int = 0, data_seed: int = 0,
            eval_samples: int = 5000, evaluate: bool = True, progress: bool = False) -> JTEFit:
    """Train ``method`` (``"vae"`` or ``"libi"``) on ``dataset`` and fit φ_GT; see the module docstring.

    Parameters
    ----------
    dataset : str
        ``"linear_jte"`` or ``"cubic_jte"`` (any unlabelled set with K = 2 works).
    method : {"vae", "libi"}
    epochs, restarts, lr, batch_size, seed, data_seed, eval_samples :
        As ``pyro-vae train`` (for LiBI ``epochs`` is step 1's and step 2's; φ_GT is trained
        with the same epochs, lr and restarts, as ``--init gt`` does).
    evaluate : bool
        Compute the pipeline's test metrics (MLEO, PMO, log-likelihoods, smooth kNN).
    progress : bool

    Returns
    -------
    JTEFit

    References
    ----------
    000 App. B (Figures 2-5) and App. E (settings).
    """
    from pyro_vae.inference.libi import code_network_for, train_libi
    from pyro_vae.inference.methods import METHODS
    from pyro_vae.nets import select_restart
    from pyro_vae.pipeline import RunConfig, evaluate_model, prepare_run
    from pyro_vae.truth_init import ground_truth_init

    if method not in JTE_METHODS:
        raise ValueError(f"method={method!r}: expected one of {JTE_METHODS}")
    config = RunConfig(dataset=dataset, method=method, epochs=epochs, restarts=restarts, lr=lr, batch_size=batch_size,
                       seed=seed, data_seed=data_seed, eval_samples=eval_samples)
    ds = config.validate()
    if ds.latent_dim != 2:
        raise ValueError(f"dataset={dataset!r} has K = {ds.latent_dim}: 000 Figures 2-5 need K = 2")
    start = time.perf_counter()
    prepared = prepare_run(config)
    cfg, splits = prepared.config, prepared.splits
    x_train, x_val, test = splits.train.x, splits.val.x, splits.test
    code_net = None
    if method == "libi":  # as pyro_vae.inference.libi's registered method, keeping h
        o = cfg.options
        torch.manual_seed(cfg.seed)
        code_net = code_network_for(prepared.guide, ds.obs_dim, ds.latent_dim, cfg.restarts).to(x_train.device)
        result = train_libi(
            prepared.model, prepared.guide, x_train, x_val, eps_hz=o["eps_hz"], eps_sigma=o["eps_sigma"],
            eps_mu=o["eps_mu"], repeats=o["repeats"], step1_epochs=cfg.epochs,
            step2_epochs=o["step2_epochs"] or cfg.epochs, lr=cfg.lr, batch_size=cfg.batch_size, seed=cfg.seed,
            code_net=code_net, progress=progress,
        )
    else:
        result = METHODS[method].fit(prepared.model, prepared.guide, x_train, x_val, cfg, progress)
    best = result.best_restart
    model, guide = select_restart(prepared.model, best), select_restart(prepared.guide, best)
    codes = None
    if code_net is not None:
        with torch.no_grad():
            codes = select_restart(code_net, best)(test.x).detach()
    _, gt_guide, gt_info, _ = ground_truth_init(cfg, ds, x_train.cpu(), x_val.cpu())
    metrics: dict = {"best_restart": best, "val_objective_per_restart": [float(v) for v in result.val_objective],
                     **gt_info}
    if evaluate:
        metrics.update(evaluate_model(model, guide, ds, test.x, eval_samples=cfg.eval_samples, seed=cfg.seed))
    return JTEFit(ds, model, guide, gt_guide, test.x, test.z, codes, metrics, cfg.to_dict(),
                  time.perf_counter() - start)


def fit_m2(objective: str = "elbo", *, epochs: int = M2_SETTINGS["epochs"], restarts: int = M2_SETTINGS["restarts"],
           alpha: float = M2_SETTINGS["alpha"], gamma: float = M2_SETTINGS["gamma"],
           z_given_y: bool = M2_SETTINGS["z_given_y"], particles: int = M2_SETTINGS["particles"], seed: int = 0,
           data_seed: int = 0, eval_samples: int = 2000, runs_dir: str | Path | None = None,
           progress: bool = False) -> tuple[Any, dict, dict]:
    """Train and evaluate an M2 model on ``discrete_semicircle`` (as ``pyro-vae train-m2``).

    Parameters
    ----------
    objective : {"elbo", "iwae"}
        The MFG-VAE's bound or IWAE's (with ``particles`` samples).
    epochs, restarts, alpha, gamma, z_given_y, particles, seed, data_seed, eval_samples :
        Fields of :class:`pyro_vae.pipeline_m2.M2Config`.
    runs_dir : path, optional
        Run store to record the run in (default: a temporary one, removed afterwards).
    progress : bool

    Returns
    -------
    (model, metrics, config)
        The best restart's unbatched M2 model, the run's metrics (with ``function_gap`` and
        ``function_gap_true``, 004 §7) and its config as a dict.

    References
    ----------
    004 §7, Figure 6, App. D and H.1.
    """
    from pyro_vae.pipeline_m2 import M2Config, load_trained_m2, train_and_evaluate_m2

    config = M2Config(dataset="discrete_semicircle", objective=objective, epochs=epochs, restarts=restarts,
                      alpha=alpha, gamma=gamma, z_given_y=z_given_y, particles=particles, seed=seed,
                      data_seed=data_seed, eval_samples=eval_samples)
    config.validate()
    with tempfile.TemporaryDirectory(prefix="pyro-vae-figure-") as tmp:
        summary = train_and_evaluate_m2(config, runs_dir or tmp, progress=progress)
        _, _, model, _, metrics = load_trained_m2(summary["run_dir"])
    return model, metrics, config.to_dict()
