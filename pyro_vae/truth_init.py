"""The papers' ground-truth initialisation (004 App. D) and the artefacts every run of a key shares.

The decoder fitted to the true f (MSE < 1e-4; independent of the data version and the method),
φ_GT trained against it, and the true test log-likelihood are built once per key in the run
store's :class:`~pyro_vae.runs.artefacts.ArtefactStore` (sweeps build them ahead of the runs, in
parallel over distinct keys) and reused by every run and by a resumed sweep; each run records
the artefacts it used.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from guides.mean_field import MeanFieldGuide
from pyro_vae.datasets import Dataset
from pyro_vae.inference.fixed_model import fit_decoder_to_truth, gt_initialise
from pyro_vae.metrics import true_log_likelihood
from pyro_vae.models import VAEModel
from pyro_vae.nets import MLP
from pyro_vae.run_steps import load_params_state, params_state
from pyro_vae.runs.artefacts import ArtefactStore, artefact_key_hash

if TYPE_CHECKING:
    from pyro_vae.pipeline import RunConfig


def copy_into_restart(batched: torch.nn.Module, index: int, single: torch.nn.Module) -> None:
    """Overwrite restart ``index`` of a restart-batched module with an unbatched one's values."""
    target = batched.state_dict()
    with torch.no_grad():
        for key, value in single.state_dict().items():
            dest = target[key]
            if dest.shape[1:] == value.shape and dest.dim() == value.dim() + 1:
                dest[index].copy_(value)
            elif dest.shape != value.shape:
                raise ValueError(f"{key}: shape {tuple(value.shape)} does not fit {tuple(dest.shape)}")


def _gt_decoder_kind(config: RunConfig, dataset: Dataset) -> str:
    return "family" if dataset.decoder_family() is not None and config.decoder != "mlp" else "mlp"


def gt_artefact_keys(config: RunConfig, dataset: Dataset) -> tuple[dict, dict]:
    """The keys of the two shared GT artefacts: the decoder fit (independent of the data
    version and of the method) and the whole initialisation (adds the version and φ_GT's fit)."""
    decoder = {"dataset": config.dataset, "dataset_params": config.dataset_params, "decoder": _gt_decoder_kind(config, dataset),
               "hidden": list(config.hidden), "seed": config.seed, "max_fit_steps": config.gt_fit_steps,
               "target_mse": 1e-4}
    init = {**decoder, "data_seed": config.data_seed, "restarts": config.restarts, "epochs": config.epochs,
            "batch_size": config.batch_size, "lr": config.lr, "val_every": config.val_every}
    return decoder, init


def ground_truth_init(config: RunConfig, dataset: Dataset, x_train, x_val, artefacts: ArtefactStore | None = None):
    """φ_GT and the decoder at the truth (004 App. D) as a shared artefact (built once per key).

    Returns ``(model, guide, info, refs)``: the unbatched GT model and guide, what the fit
    reached, and the artefacts used (``kind/digest``).
    """
    decoder_key, init_key = gt_artefact_keys(config, dataset)
    kind = _gt_decoder_kind(config, dataset)

    def build_init(decoder_state=None):
        gt = gt_initialise(
            dataset, config.restarts, x_train=x_train, x_val=x_val, decoder=kind, hidden=config.hidden,
            epochs=config.epochs, batch_size=config.batch_size, lr=config.lr, seed=config.seed,
            max_fit_steps=config.gt_fit_steps, decoder_state=decoder_state, val_every=config.val_every,
        )
        return gt

    def unpack(tensors):
        model = VAEModel(dataset.decoder_family(None) if kind == "family" else MLP(dataset.latent_dim, dataset.obs_dim, tuple(config.hidden)),
                         dataset.latent_dim, dataset.obs_dim, dataset.obs_noise_var())
        guide = MeanFieldGuide(dataset.obs_dim, dataset.latent_dim, tuple(config.hidden))
        load_params_state(model, guide, tensors)
        return model, guide

    if artefacts is None:
        gt = build_init()
        return gt.model, gt.guide, {"gt_decoder_mse": gt.decoder_fit.mse, "gt_decoder_fit_reached": gt.decoder_fit.reached}, []
    refs = [f"gt_decoder/{artefact_key_hash('gt_decoder', decoder_key)}"] if kind == "mlp" else []

    def build():
        decoder_state = None
        if kind == "mlp":
            found = artefacts.load("gt_decoder", decoder_key)
            decoder_state = None if found is None else found.tensors
        gt = build_init(decoder_state)
        if kind == "mlp" and decoder_state is None:
            artefacts.save("gt_decoder", decoder_key, gt.model.decoder.state_dict(),
                           {"mse": gt.decoder_fit.mse, "reached": gt.decoder_fit.reached})
        return params_state(gt.model, gt.guide), {"gt_decoder_mse": gt.decoder_fit.mse,
                                                  "gt_decoder_fit_reached": gt.decoder_fit.reached}

    found = artefacts.get_or_build("gt_init", init_key, build)
    model, guide = unpack(found.tensors)
    return model, guide, dict(found.info), refs + [found.ref]


def build_shared_artefacts(config: RunConfig, runs_dir: str | Path, stage: str) -> str | None:
    """Build one shared artefact of ``config`` in ``runs_dir`` ahead of its run (sweeps call this
    in parallel over distinct keys): ``stage`` "gt_decoder" (the decoder fit, shared by every
    data version), "gt_init" (φ_GT for the config's version) or "true_test_loglik"."""
    dataset = config.validate()
    config = config.resolved()
    artefacts = ArtefactStore(runs_dir)
    splits = dataset.splits(config.data_seed)
    if stage == "true_test_loglik":
        return true_test_log_lik(config, dataset, splits.test.x, artefacts)[1][0]
    if config.init == "random":
        return None
    decoder_key, init_key = gt_artefact_keys(config, dataset)
    if stage == "gt_decoder":
        if _gt_decoder_kind(config, dataset) != "mlp" or artefacts.load("gt_decoder", decoder_key) is not None:
            return None
        torch.manual_seed(config.seed)  # as gt_initialise builds it
        net = MLP(dataset.latent_dim, dataset.obs_dim, tuple(config.hidden))
        fit = fit_decoder_to_truth(net, dataset, max_steps=config.gt_fit_steps, seed=config.seed)
        return artefacts.save("gt_decoder", decoder_key, net.state_dict(), {"mse": fit.mse, "reached": fit.reached}).ref
    if stage == "gt_init":
        torch.manual_seed(config.seed)
        return ground_truth_init(config, dataset, splits.train.x, splits.val.x, artefacts)[3][-1]
    raise ValueError(f"stage={stage!r}: expected 'gt_decoder', 'gt_init' or 'true_test_loglik'")


def shared_artefact_keys(config: RunConfig, stage: str) -> Any:
    """The key of ``stage``'s artefact for ``config`` (None when it has none), to deduplicate work."""
    dataset = config.validate()
    config = config.resolved()
    if stage == "true_test_loglik":
        return (config.dataset, repr(sorted(config.dataset_params.items())), config.data_seed)
    if config.init == "random":
        return None
    decoder_key, init_key = gt_artefact_keys(config, dataset)
    return artefact_key_hash(stage, decoder_key if stage == "gt_decoder" else init_key)


def true_test_log_lik(config: RunConfig, dataset: Dataset, x_test: torch.Tensor,
                      artefacts: ArtefactStore | None = None) -> tuple[torch.Tensor, list[str]]:
    """``log p_data(x)`` per test point (closed form or quadrature), shared by every method's run
    (None for a user's data set, which has no known truth)."""
    if not getattr(dataset, "has_truth", True):
        return None, []
    if artefacts is None:
        return true_log_likelihood(dataset, x_test), []
    key = {"dataset": config.dataset, "dataset_params": config.dataset_params, "data_seed": config.data_seed,
           "split": "test", "n": int(x_test.shape[0])}
    found = artefacts.get_or_build(
        "true_test_loglik", key, lambda: ({"per_point": true_log_likelihood(dataset, x_test).double().cpu()}, {}))
    return found.tensors["per_point"], [found.ref]


def initialise_at_truth(model: VAEModel, guide, config: RunConfig, dataset: Dataset, x_train, x_val,
                        artefacts: ArtefactStore | None = None) -> dict:
    """The papers' GT initialisation (004 App. D) for the restarts that ``config.init`` names.

    The decoder is fitted to the true f (MSE < 1e-4) or set to the truth (parametric family),
    φ_GT is trained against it with restarts, and the best is copied into each chosen restart.
    With ``artefacts`` both are built once per key and reused. Returns what was reached, for
    the run's metrics.
    """
    gt_model, gt_guide, info, refs = ground_truth_init(config, dataset, x_train, x_val, artefacts)
    chosen = range(config.restarts) if config.init == "gt" else range((config.restarts + 1) // 2)
    for r in chosen:
        copy_into_restart(model.decoder, r, gt_model.decoder)
        copy_into_restart(guide, r, gt_guide)
    return {"gt_restarts": list(chosen), **info, **({"artefacts": refs} if refs else {})}
