"""Inference against a fixed generative model, and the papers' ground-truth initialisation.

- :func:`fit_guide` trains only a guide, with the model frozen (LiBI's step 2, 000 §2; the
  φ_GT of 004 §3: ``φ_GT = argmin_φ −ELBO(θ_GT, φ)``).
- :func:`fit_decoder_to_truth` fits a decoder to a data set's true ``f`` by supervision
  (004 App. D: "initialized to the ground-truth using full supervision").
- :func:`gt_initialise` does both: the decoder fitted to ``f``, then φ_GT by training the guide
  with that decoder fixed, over several restarts, keeping the restart with the best
  validation ELBO (004 App. D, "Initialization at Global Optima of the VAE Objective").
"""

from __future__ import annotations

import contextlib
from typing import Callable, NamedTuple, Sequence

import torch
from torch import nn
from torch.special import ndtr

from pyro_vae.inference.svi import TrainResult, collect_parameters, train
from pyro_vae.models import VAEModel
from pyro_vae.nets import MLP, fit_to_function, select_restart

__all__ = ["DecoderFit", "GTInit", "fit_decoder_to_truth", "fit_guide", "frozen", "gt_initialise"]

DECODERS = ("mlp", "family")


@contextlib.contextmanager
def frozen(module):
    """Turn off ``requires_grad`` inside the block, then restore it.

    ``module`` is an ``nn.Module`` (its parameters), a sequence of tensors, or any other
    callable (nothing to freeze).
    """
    if isinstance(module, nn.Module):
        params = list(module.parameters())
    elif isinstance(module, (list, tuple)):
        params = list(module)
    else:
        params = []
    flags = [p.requires_grad for p in params]
    try:
        for p in params:
            p.requires_grad_(False)
        yield
    finally:
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)


def fit_guide(
    model: Callable,
    guide: Callable,
    x_train: torch.Tensor,
    x_val: torch.Tensor | None = None,
    *,
    objective: str = "elbo",
    num_particles: int = 1,
    epochs: int = 100,
    batch_size: int = 100,
    lr: float = 1e-3,
    seed: int = 0,
    progress: bool = False,
    val_every: int = 1,
) -> TrainResult:
    """Train ``guide`` against a frozen ``model``: ``max_φ ELBO(θ, φ)`` with θ fixed.

    The optimiser sees only the guide's parameters and the model's parameters do not
    require gradients during training, so the model is left exactly as it was. Arguments
    are those of :func:`pyro_vae.inference.train`.

    Returns
    -------
    TrainResult
        ``best_restart`` is the guide restart with the best validation objective.

    References
    ----------
    000 §2 (LiBI, step 2: inference with the likelihood fixed); 004 §3 (φ_GT).
    """
    if x_train.dim() != 2 or x_train.shape[0] == 0:
        raise ValueError(f"x_train of shape {tuple(x_train.shape)}: expected (N, D) with N > 0")
    with frozen(model):
        params = collect_parameters(guide, example_args=(x_train[:2],))
        if not params:
            raise ValueError("guide has no trainable parameters")
        return train(
            model, guide, x_train, x_val, objective=objective, num_particles=num_particles, epochs=epochs,
            batch_size=batch_size, lr=lr, seed=seed, progress=progress, trainable=params, val_every=val_every,
        )


class DecoderFit(NamedTuple):
    """Result of :func:`fit_decoder_to_truth`: the held-out MSE and whether it met the target."""

    mse: float
    reached: bool
    target_mse: float


def _truth_under_normal_prior(dataset) -> Callable[[torch.Tensor], torch.Tensor]:
    """The data set's ``f`` as a function of ``z ~ N(0, I)`` (``f(Φ(z))`` under a U(0, 1) prior)."""
    if dataset.prior == "uniform":
        return lambda z: dataset.f(ndtr(z))
    return dataset.f


def fit_decoder_to_truth(
    decoder: nn.Module,
    dataset,
    *,
    target_mse: float = 1e-4,
    max_steps: int = 20000,
    batch_size: int = 1000,
    lr: float = 1e-3,
    seed: int = 0,
) -> DecoderFit:
    """Fit ``decoder`` to the data set's true ``f`` by supervised regression (004 App. D).

    Inputs are fresh draws ``z ~ N(0, I)`` each step, the prior of the VAE models; for a data
    set with a U(0, 1) prior the target is ``f(Φ(z))``, which gives the same ``p(x)`` under the
    normal prior. Training stops when the MSE on 10 000 held-out inputs is below
    ``target_mse`` (checked every 250 steps) or after ``max_steps``
    (:func:`pyro_vae.nets.fit_to_function`).

    Returns
    -------
    DecoderFit
        The MSE reached; ``reached`` says whether it is below ``target_mse``.
    """
    if not target_mse > 0:
        raise ValueError(f"target_mse={target_mse!r}: expected a positive number")
    if isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1:
        raise ValueError(f"max_steps={max_steps!r}: expected a positive integer")
    k = dataset.latent_dim
    fn = _truth_under_normal_prior(dataset)

    def inputs(n: int, gen: torch.Generator) -> torch.Tensor:
        return torch.randn(n, k, generator=gen)

    mse = fit_to_function(
        decoder, fn, inputs, target_mse=target_mse, max_steps=max_steps, batch_size=batch_size, lr=lr, seed=seed
    )
    return DecoderFit(mse, mse < target_mse, target_mse)


def _measure_fit(net: nn.Module, dataset, target_mse: float, seed: int) -> DecoderFit:
    """The MSE of a decoder against the true f on 10 000 fresh N(0, I) inputs."""
    gen = torch.Generator().manual_seed(seed + 1)
    z = torch.randn(10000, dataset.latent_dim, generator=gen)
    with torch.no_grad():
        mse = float(((net(z) - _truth_under_normal_prior(dataset)(z)) ** 2).mean())
    return DecoderFit(mse, mse < target_mse, target_mse)


class GTInit(NamedTuple):
    """Result of :func:`gt_initialise`.

    ``model`` (decoder at the truth, σ² of the truth) and ``guide`` (φ_GT) are unbatched (the
    best restart); ``decoder_fit`` is the supervised fit (MSE 0 for a family set to the
    truth); ``train`` is the guide's training record, whose ``val_objective`` holds each
    restart's validation ELBO.
    """

    model: VAEModel
    guide: nn.Module
    decoder_fit: DecoderFit
    train: TrainResult
    best_restart: int


def gt_initialise(
    dataset,
    num_restarts: int = 10,
    *,
    x_train: torch.Tensor | None = None,
    x_val: torch.Tensor | None = None,
    data_seed: int = 0,
    decoder: str = "mlp",
    hidden: Sequence[int] = (50, 50, 50),
    guide_hidden: Sequence[int] | None = None,
    epochs: int = 100,
    batch_size: int = 100,
    lr: float = 1e-3,
    target_mse: float = 1e-4,
    max_fit_steps: int = 20000,
    seed: int = 0,
    progress: bool = False,
    decoder_state: dict | None = None,
    val_every: int = 1,
) -> GTInit:
    """Initialise at the ground truth: decoder fitted to ``f``, guide trained to φ_GT (004 App. D).

    Parameters
    ----------
    dataset : Dataset
        The true process; its train/validation splits (``data_seed``) are used unless
        ``x_train``/``x_val`` are given.
    num_restarts : int
        Guide restarts trained as one batch against the same fixed decoder (10 in 004).
    decoder : {"mlp", "family"}
        An MLP (``hidden``; 004's 3 × 50 leaky-ReLU) fitted by :func:`fit_decoder_to_truth`, or
        the data set's parametric family set exactly to the truth (000 App. E).
    guide_hidden : sequence of int
        Encoder architecture (default: ``hidden``).
    epochs, batch_size, lr :
        Guide training (004 App. D: 100 epochs, minibatches of 100, Adam 1e-3).
    target_mse, max_fit_steps :
        Decoder fit (004 App. G/H: MSE < 1e-4).
    seed : int
        Seeds the initialisations, the decoder fit and the guide training.
    decoder_state : dict, optional
        The MLP decoder's state from an earlier fit with the same data set, ``hidden``,
        ``target_mse``, ``max_fit_steps`` and ``seed`` (the fit does not depend on the data
        version): loaded instead of fitting again; its MSE is measured again.
    val_every : int
        Validation cadence of the guide's training (the last epoch always validates).

    Returns
    -------
    GTInit
    """
    from guides.mean_field import MeanFieldGuide

    if decoder not in DECODERS:
        raise ValueError(f"decoder={decoder!r}: expected one of {DECODERS}")
    if isinstance(num_restarts, bool) or not isinstance(num_restarts, int) or num_restarts < 1:
        raise ValueError(f"num_restarts={num_restarts!r}: expected a positive integer")
    if x_train is None:
        splits = dataset.splits(data_seed)
        x_train = splits.train.x
        x_val = splits.val.x if x_val is None else x_val

    torch.manual_seed(seed)
    if decoder == "family":
        net = dataset.decoder_family(None)
        if net is None:
            raise ValueError(f"decoder='family': data set {dataset.name!r} has no parametric family; use 'mlp'")
        if dataset.prior != "normal":
            raise ValueError(f"decoder='family': data set {dataset.name!r} has a {dataset.prior} prior")
        net.set_ground_truth()
        with torch.no_grad():
            z = torch.randn(10000, dataset.latent_dim, generator=torch.Generator().manual_seed(seed))
            mse = float(((net(z) - dataset.f(z)) ** 2).mean())
        fit = DecoderFit(mse, mse < target_mse, target_mse)
    else:
        net = MLP(dataset.latent_dim, dataset.obs_dim, tuple(hidden))
        if decoder_state is None:
            fit = fit_decoder_to_truth(net, dataset, target_mse=target_mse, max_steps=max_fit_steps, seed=seed)
        else:
            net.load_state_dict(decoder_state)
            fit = _measure_fit(net, dataset, target_mse, seed)
    model = VAEModel(net, dataset.latent_dim, dataset.obs_dim, dataset.obs_noise_var(), num_restarts=num_restarts)
    guide = MeanFieldGuide(
        dataset.obs_dim, dataset.latent_dim, tuple(guide_hidden or hidden), num_restarts=num_restarts
    )
    result = fit_guide(
        model, guide, x_train, x_val, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, progress=progress,
        val_every=val_every,
    )
    best = result.best_restart
    return GTInit(select_restart(model, best), select_restart(guide, best), fit, result, best)
