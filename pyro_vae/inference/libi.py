"""LiBI, Likelihood Before Inference (000 §2 and App. D, Eqs. 44-46).

Each of ``repeats`` rounds t runs three steps:

1. **Likelihood** (Eq. 44). θ and a deterministic code network ``h(x; ϕ)`` minimise
   ``−(1/n) Σ log p_θ(x_n | h(x_n)) + ε_HZ·exp(HZ(Z)) + exp(‖Σ(Z) − I‖²/ε_Σ) + exp(‖μ(Z)‖²/ε_μ)
   + Σ_i c_i`` with ``Z`` the codes of the minibatch (the whole training set at full batch, as
   in 000; each epoch is cut into ⌈N/B⌉ near-equal minibatches), μ, Σ their mean and (1/n)
   covariance, ‖·‖ the Euclidean/Frobenius norm, HZ the Henze-Zirkler statistic and ``c_i``
   optional task constraints. Exponents above 50 continue linearly (:func:`guarded_exp`), so
   codes far from N(0, I) give a large finite loss, not ``inf``.
2. **Inference** (Eqs. 45-46). With θ frozen the guide maximises the ELBO
   (:func:`~pyro_vae.inference.fixed_model.fit_guide`, which leaves θ bit-for-bit unchanged),
   continuing from the previous round's φ.
3. **Re-initialisation**: ``h(x) ← μ(x; φ_t)``. For a :class:`~guides.mean_field.MeanFieldGuide`
   whose MLP encoder has h's hidden layers the weights are copied (the mean is the encoder's
   first K outputs: exact); otherwise h is regressed (MSE, Adam, full batch) onto the guide's
   means on the training set (a Normal's ``loc``, else the mean of 64 draws).

Each round's θ_t is scored by the validation log-likelihood, importance-sampled with the
round's guide as proposal (Eq. 48 of 000 with ``val_samples`` draws and no variance
inflation, i.e. the IWAE bound). Each restart keeps its best round's θ_t and φ_t (000: "return
the best θ_t (and its corresponding φ_t) across all repetitions"); the best restart has the
highest such value.

Restarts are a batch dimension, as in :func:`pyro_vae.inference.train`: θ, ϕ and φ carry a
leading dimension R and the loss sums the per-restart losses; a restart's penalties use only
its own codes (the moments and the Henze-Zirkler statistic batched over restarts).
"""

from __future__ import annotations

import copy
import math
import time
from typing import Callable, NamedTuple, Sequence

import pyro
import pyro.poutine as poutine
from pyro.poutine.util import site_is_subsample
import torch
from torch import nn

from pyro_vae.inference.fixed_model import fit_guide
from pyro_vae import checks
from pyro_vae.inference.libi_stability import (
    CODE_INITS, PenaltyGuard, clip_grad_norm_per_restart, initialise_codes, regress_codes,
)
from pyro_vae.inference.methods import Method, register_method
from pyro_vae.inference.objectives import bound
from pyro_vae.inference.svi import TrainingError, TrainResult, _check_positive_int
from pyro_vae.inference.trainer import NearEqualBatches, run_epochs
from pyro_vae.metrics.normality import henze_zirkler_torch
from pyro_vae.models import unregistered
from pyro_vae.nets import ACTIVATIONS, MLP, BatchedLinear

__all__ = [
    "Step1Terms", "code_network_for", "fit_likelihood", "guarded_exp", "guide_means", "reinitialise_codes",
    "step1_terms", "train_libi", "validation_log_likelihood",
]

#: A task constraint c_i(model, x, codes) -> penalty, shape (R,) or scalar, added to Eq. 44.
Constraint = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


class Step1Terms(NamedTuple):
    """The terms of Eq. 44 of 000, each per restart ``(R,)``; ``total`` is their sum.

    The last three fields are the exponents of the penalties (what :class:`PenaltyGuard` bounds).
    """

    nll: torch.Tensor  # −(1/n) Σ log p_θ(x_n | h(x_n))
    hz: torch.Tensor  # ε_HZ · exp(HZ(codes))
    sigma: torch.Tensor  # exp(‖Σ(codes) − I‖² / ε_Σ)
    mu: torch.Tensor  # exp(‖μ(codes)‖² / ε_μ)
    constraints: torch.Tensor  # Σ_i c_i
    total: torch.Tensor
    hz_stat: torch.Tensor  # HZ(codes) (0 when ε_HZ = 0: not computed)
    sigma_exponent: torch.Tensor  # ‖Σ(codes) − I‖² / ε_Σ
    mu_exponent: torch.Tensor  # ‖μ(codes)‖² / ε_μ


def guarded_exp(v: torch.Tensor, max_exponent: float = 50.0) -> torch.Tensor:
    """``exp(v)`` continued by its tangent line above ``max_exponent`` (finite, increasing)."""
    c = float(max_exponent)
    return torch.where(v <= c, torch.exp(v.clamp_max(c)), math.exp(c) * (1.0 + v - c))


def step1_terms(
    model: nn.Module, code_net: nn.Module, x: torch.Tensor, *, eps_hz: float = 1.0, eps_sigma: float = 0.5,
    eps_mu: float = 0.5, constraints: Sequence[Constraint] = (),
) -> Step1Terms:
    """Eq. 44 of 000 on the points ``x`` (N, D), per restart; see the module docstring.

    The penalties are computed in float64 on the codes ``h(x)`` of shape ``([R,] N, K)``.
    """
    codes = code_net(x)  # ([R,] N, K)
    z = (codes if codes.dim() == 3 else codes.unsqueeze(0)).double()
    nll = -model.log_likelihood(x, codes).reshape(z.shape[:2]).mean(-1)
    n, k = z.shape[-2:]
    mean = z.mean(-2)  # (R, K)
    centred = z - mean.unsqueeze(-2)
    cov = centred.transpose(-1, -2) @ centred / n
    sigma_exponent = ((cov - torch.eye(k, dtype=z.dtype, device=z.device)) ** 2).sum((-2, -1)) / eps_sigma
    mu_exponent = (mean**2).sum(-1) / eps_mu
    sigma, mu = guarded_exp(sigma_exponent), guarded_exp(mu_exponent)
    if eps_hz > 0:
        hz_stat = henze_zirkler_torch(z)[0]  # (R,), one statistic per restart
        hz = eps_hz * guarded_exp(hz_stat)  # = ε_HZ · henze_zirkler_penalty(codes)
    else:
        hz_stat, hz = torch.zeros_like(mu), torch.zeros_like(mu)
    extra = torch.zeros_like(mu)
    for c in constraints:
        extra = extra + torch.as_tensor(c(model, x, codes), dtype=extra.dtype, device=extra.device)
    total = nll.double() + hz + sigma + mu + extra
    return Step1Terms(nll, hz, sigma, mu, extra, total, hz_stat, sigma_exponent, mu_exponent)


def code_network_for(guide: nn.Module, obs_dim: int, latent_dim: int, num_restarts: int | None) -> MLP:
    """The code network h: the guide's encoder architecture with K outputs (000 App. E).

    "Encoder ϕ: we used the same architecture as the inference model". When the guide's
    ``encoder`` is a :class:`~pyro_vae.nets.MLP`, h copies its hidden widths and activation;
    otherwise h is the default MLP (3 × 50 leaky-ReLU).
    """
    encoder = getattr(guide, "encoder", None)
    if not isinstance(encoder, MLP):
        return MLP(obs_dim, latent_dim, num_restarts=num_restarts)
    hidden = tuple(m.out_features for m in encoder.net if isinstance(m, BatchedLinear))[:-1]
    acts = [m for m in encoder.net if not isinstance(m, BatchedLinear)]
    activation = next((name for name, cls in ACTIVATIONS.items() if acts and isinstance(acts[0], cls)), "leaky_relu")
    return MLP(obs_dim, latent_dim, hidden, activation, num_restarts)


def guide_means(guide: Callable, x: torch.Tensor, num_samples: int = 64) -> torch.Tensor:
    """Posterior means ``E_q[z | x]``: a Normal guide's ``loc``, else the mean of ``num_samples`` draws.

    Returns ``(R, N, K)`` for a restart-batched guide; ``(N, K)`` (Normal) or ``(1, N, K)``
    (draws) otherwise.
    """
    with torch.no_grad(), unregistered():
        if hasattr(guide, "distribution"):
            q = guide.distribution(x)
            base = q.base_dist if isinstance(q, torch.distributions.Independent) else q
            if isinstance(base, torch.distributions.Normal):
                return base.loc
        with pyro.plate("particles", num_samples, dim=-3):
            trace = poutine.trace(guide).get_trace(x)
        latents = [s for s in trace.nodes.values()
                   if s["type"] == "sample" and not s["is_observed"] and not site_is_subsample(s)]
        if len(latents) != 1:
            raise ValueError(f"LiBI's codes need a guide with one latent site; it samples {[s['name'] for s in latents]}")
        return latents[0]["value"].mean(0)


def _copy_encoder_means(code_net: nn.Module, guide: nn.Module, latent_dim: int) -> bool:
    from guides.mean_field import MeanFieldGuide

    encoder = getattr(guide, "encoder", None)
    if not (isinstance(guide, MeanFieldGuide) and isinstance(encoder, MLP) and isinstance(code_net, MLP)):
        return False
    src = [m for m in encoder.net if isinstance(m, BatchedLinear)]
    dst = [m for m in code_net.net if isinstance(m, BatchedLinear)]
    same = len(encoder.net) == len(code_net.net) and all(type(a) is type(b) for a, b in zip(encoder.net, code_net.net))
    if not same or src[-1].out_features != 2 * latent_dim or any(
        a.weight.shape[:-1] != b.weight.shape[:-1] for a, b in zip(src, dst)
    ):
        return False
    with torch.no_grad():
        for a, b in zip(src[:-1], dst[:-1]):
            b.weight.copy_(a.weight), b.bias.copy_(a.bias)
        dst[-1].weight.copy_(src[-1].weight[..., :latent_dim])
        dst[-1].bias.copy_(src[-1].bias[..., :latent_dim])
    return True


def reinitialise_codes(
    code_net: nn.Module, guide: nn.Module, x: torch.Tensor, latent_dim: int, *, steps: int = 500, lr: float = 1e-2
) -> str:
    """Step 3 of LiBI (000 §2): set ``h(x) ≈ μ(x; φ)``. Returns ``"copy"`` or ``"regression"``."""
    if _copy_encoder_means(code_net, guide, latent_dim):
        return "copy"
    with torch.no_grad():
        target = guide_means(guide, x).reshape(code_net(x).shape)
    regress_codes(code_net, x, target, steps=steps, lr=lr)
    return "regression"


def validation_log_likelihood(
    model: Callable, guide: Callable, x: torch.Tensor, num_samples: int = 100, batch_size: int = 100
) -> torch.Tensor:
    """Importance-sampled ``log p_θ(x)`` per point, averaged, per restart ``(R,)`` (Eq. 48 of 000)."""
    total = 0.0
    with torch.no_grad(), unregistered():
        for chunk in torch.split(x, batch_size):
            total = total + bound(model, guide, chunk, kind="iwae", num_particles=num_samples).sum(-1)
    return (total / x.shape[0]).reshape(-1).cpu()


def fit_likelihood(
    model: nn.Module, code_net: nn.Module, x_train: torch.Tensor, x_val: torch.Tensor | None = None, *,
    eps_hz: float = 1.0, eps_sigma: float = 0.5, eps_mu: float = 0.5, constraints: Sequence[Constraint] = (),
    epochs: int = 100, batch_size: int | None = None, lr: float = 1e-2, seed: int = 0, progress: bool = False,
    epoch_offset: int = 0, repeat: int = 0, clip_norm: float | None = None,
    guard: PenaltyGuard | None = None,
    on_step: Callable[[int, Step1Terms, torch.Tensor | None], None] | None = None,
) -> tuple[list[dict], int]:
    """Step 1 of LiBI: minimise Eq. 44 of 000 over θ (``model``) and ϕ (``code_net``) with Adam.

    ``batch_size=None`` is full batch (000). ``clip_norm`` scales each restart's gradient (θ and
    ϕ together) to at most that norm before Adam's update
    (:func:`~pyro_vae.inference.libi_stability.clip_grad_norm_per_restart`; ``None``: no
    clipping); ``guard`` checks the penalties' exponents after every step; ``on_step(step,
    terms, grad_norms)`` sees every step's terms (before the update) and each restart's gradient
    norm before clipping. Returns history rows (``train_loss``: Eq. 44 per epoch's
    minibatches, averaged; ``train_nll``; ``val_objective``: −Eq. 44 on ``x_val``) and the
    number of optimiser steps.
    """
    n = x_train.shape[0]
    batch_size = n if batch_size is None else batch_size
    x_val = x_train if x_val is None else x_val
    kw = dict(eps_hz=eps_hz, eps_sigma=eps_sigma, eps_mu=eps_mu, constraints=constraints)
    params = list({id(p): p for p in [*model.parameters(), *code_net.parameters()] if p.requires_grad}.values())
    optim = torch.optim.Adam(params, lr=lr)
    restarts = getattr(model, "num_restarts", None)
    batches = NearEqualBatches(x_train, batch_size, seed)  # each minibatch of at least K + 2 codes
    state = {"step": 0, "epoch": 0, "terms": None, "nll": 0.0}

    def on_epoch_start(epoch: int) -> None:
        state["epoch"], state["nll"] = epoch, 0.0

    def one_step(batch: torch.Tensor, i: int) -> torch.Tensor:
        step, epoch = state["step"] + 1, epoch_offset + state["epoch"]
        terms = step1_terms(model, code_net, batch, **kw)
        if not torch.isfinite(terms.total).all():
            bad = int((~torch.isfinite(terms.total)).nonzero()[0, 0])
            raise TrainingError(
                f"LiBI step 1 loss is {terms.total[bad].item()} at step {step} (epoch {state['epoch']}, round "
                f"{repeat + 1}) in restart {bad}; nothing was saved"
            )
        if guard is not None:
            guard.check(terms, step, state["epoch"], repeat)
        optim.zero_grad(set_to_none=True)
        terms.total.sum().backward()
        norms = None
        if clip_norm is not None or on_step is not None:  # max_norm = inf: norms only, gradients untouched
            norms = clip_grad_norm_per_restart(params, math.inf if clip_norm is None else clip_norm, restarts)
        if on_step is not None:
            on_step(step, terms, norms)
        optim.step()
        state["step"], state["terms"] = step, terms
        state["nll"] = state["nll"] + terms.nll.detach() * batch.shape[0]
        return terms.total.detach() * batch.shape[0]

    def validate() -> torch.Tensor:
        with torch.no_grad():
            return -step1_terms(model, code_net, x_val, **kw).total

    def on_epoch_end(epoch: int) -> dict[str, list]:
        r = state["nll"].numel()
        return {"step": [1] * r, "repeat": [repeat] * r, "train_nll": [float(v) for v in state["nll"] / n]}

    result = run_epochs(
        one_step, batches, epochs=epochs, num_restarts=1 if restarts is None else restarts, validate=validate,
        on_epoch_start=on_epoch_start, on_epoch_end=on_epoch_end, desc=f"LiBI step 1 (round {repeat + 1})",
        progress=progress, step_counter=lambda: state["step"], epoch_offset=epoch_offset,
    )
    if guard is not None and state["step"]:
        guard.check(state["terms"], state["step"], epochs, repeat, final=True)
    return result.history, state["step"]


def _check_penalty_args(eps_hz, eps_sigma, eps_mu, repeats) -> None:
    def number(v) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

    if not (number(eps_hz) and eps_hz >= 0):
        raise ValueError(f"eps_hz={eps_hz!r}: expected a number >= 0 (000 App. E: 0.001, 1, 10, 20)")
    for name, value in (("eps_sigma", eps_sigma), ("eps_mu", eps_mu)):
        if not (number(value) and value > 0):
            raise ValueError(f"{name}={value!r}: expected a positive number (000 App. E: 0.2, 0.5)")
    _check_positive_int("repeats", repeats)


def _check_clip_norm(clip_norm) -> None:
    if clip_norm is not None and (isinstance(clip_norm, bool) or not isinstance(clip_norm, (int, float))
                                  or not math.isfinite(clip_norm) or clip_norm <= 0):
        raise ValueError(f"clip_norm={clip_norm!r}: expected a positive number or None (JSON null)")


def _select_rounds(modules: Sequence[nn.Module], snapshots: list[list[dict]], best: torch.Tensor) -> None:
    """Load, for every restart r, round ``best[r]``'s values of each module (leading dim R).

    Tensors without a leading restart dimension are shared and never trained (e.g. a family's
    fixed B), so they are equal in every round.
    """
    restarts = best.numel()
    with torch.no_grad():
        for m, module in enumerate(modules):
            for key, value in module.state_dict().items():
                if restarts > 1 and value.dim() > 0 and value.shape[0] == restarts:
                    for r in range(restarts):
                        value[r].copy_(snapshots[int(best[r])][m][key][r])
                else:
                    value.copy_(snapshots[int(best[0])][m][key])


def train_libi(
    model: nn.Module, guide: nn.Module, x_train: torch.Tensor, x_val: torch.Tensor | None = None, *,
    eps_hz: float = 1.0, eps_sigma: float = 0.5, eps_mu: float = 0.5, repeats: int = 1, step1_epochs: int = 1000,
    step2_epochs: int = 1000, lr: float = 1e-2, batch_size: int | None = None, seed: int = 0,
    constraints: Sequence[Constraint] = (), code_net: nn.Module | None = None, val_samples: int = 100,
    progress: bool = True, code_init: str = "gaussian", clip_norm: float | None = 1.0,
    guard_bound: float | None = 1e3, guard_warmup: int = 200,
) -> TrainResult:
    """Train ``model`` (θ) and ``guide`` (φ) in place with LiBI; see the module docstring.

    Parameters
    ----------
    model, guide : nn.Module
        A :class:`~pyro_vae.models.VAEModel` and its guide, with the same restarts (or none).
    x_train, x_val : Tensor
        ``(N, D)`` data; ``x_val`` (default ``x_train``) scores the rounds.
    eps_hz, eps_sigma, eps_mu : float
        ε_HZ ≥ 0, ε_Σ > 0, ε_μ > 0 of Eq. 44 (000 App. E: ε_HZ ∈ {0.001, 1, 10, 20}, ε_Σ, ε_μ ∈ {0.2, 0.5}).
    repeats : int
        Rounds of steps 1-3 (000 App. E: 1 or 6).
    step1_epochs, step2_epochs, lr :
        Adam epochs of steps 1 and 2, and the learning rate (000: 30k epochs at 0.01).
    batch_size : int or None
        Minibatches of both steps; ``None`` is full batch (000). Step 1's minibatches need at
        least K + 2 codes for the Henze-Zirkler statistic.
    seed : int
        Seeds minibatch order and sampling (round t uses ``seed + t``).
    constraints : sequence of callables
        Task constraints ``c(model, x, codes) -> penalty`` ((R,) or scalar) added to Eq. 44.
    code_net : nn.Module, optional
        The code network h (default :func:`code_network_for` the guide); trained in place.
    val_samples : int
        Importance samples per validation point for choosing the rounds.
    code_init : str
        How h starts the first round (:data:`~pyro_vae.inference.libi_stability.CODE_INITS`;
        default ``"gaussian"``: regressed onto Gaussian codes of x); later rounds start from
        step 3. An initialisation, so Eq. 44's optimum is unchanged.
    clip_norm : float or None
        Each restart's step-1 gradient (θ and ϕ) is scaled to at most this norm before Adam's
        update (default 1; ``None``: off). A positive rescaling: same stationary points.
    guard_bound, guard_warmup :
        After ``guard_warmup`` step-1 steps of a round (and at its last step), a penalty of
        Eq. 44 whose median over the last 50 steps exceeds ``guard_bound`` nats raises
        :class:`TrainingError` (:class:`~pyro_vae.inference.libi_stability.PenaltyGuard`);
        ``guard_bound=None``: off.

    Returns
    -------
    TrainResult
        ``history`` rows carry ``step`` (1 or 2) and ``repeat``; a round's last step-2 rows
        carry ``val_loglik``. ``val_objective`` (R,) is each restart's validation
        log-likelihood at its chosen round, ``best_restart`` its argmax.

    References
    ----------
    000 §2, App. D (Eqs. 44-46), App. E.
    """
    x_train, x_val = checks.training_data(model, guide, x_train, x_val, lr=lr)
    _check_penalty_args(eps_hz, eps_sigma, eps_mu, repeats)
    for name, value in (("step1_epochs", step1_epochs), ("step2_epochs", step2_epochs), ("val_samples", val_samples)):
        _check_positive_int(name, value)
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr={lr!r}: expected a positive number")
    if not (callable(getattr(model, "log_likelihood", None)) and isinstance(getattr(model, "latent_dim", None), int)):
        raise ValueError("model: expected a VAEModel-like module with log_likelihood(x, z) and latent_dim")
    if x_train.dim() != 2 or x_train.shape[0] == 0:
        raise ValueError(f"x_train of shape {tuple(x_train.shape)}: expected (N, D) with N > 0")
    k, n = model.latent_dim, x_train.shape[0]
    if batch_size is not None:
        _check_positive_int("batch_size", batch_size)
        if batch_size > n or n // -(-n // batch_size) < k + 2:
            raise ValueError(
                f"batch_size={batch_size}: expected at most the {n} training points, with minibatches of at least "
                f"K + 2 = {k + 2} codes (the Henze-Zirkler statistic's minimum)"
            )
    x_val = x_train if x_val is None else x_val
    restarts = getattr(model, "num_restarts", None)
    if code_init not in CODE_INITS:
        raise ValueError(f"code_init={code_init!r}: expected one of {CODE_INITS}")
    _check_clip_norm(clip_norm)
    guard = PenaltyGuard(guard_bound, guard_warmup)
    if code_net is None:
        torch.manual_seed(seed)
        code_net = code_network_for(guide, x_train.shape[-1], k, restarts).to(x_train.device)
    initialise_codes(code_net, x_train, k, code_init, generator=torch.Generator().manual_seed(seed))
    pyro.set_rng_seed(seed)
    history: list[dict] = []
    snapshots: list[list[dict]] = []
    scores = []
    steps, offset = 0, 0
    start = time.perf_counter()
    for t in range(repeats):
        rows, s1 = fit_likelihood(
            model, code_net, x_train, x_val, eps_hz=eps_hz, eps_sigma=eps_sigma, eps_mu=eps_mu,
            constraints=constraints, epochs=step1_epochs, batch_size=batch_size, lr=lr, seed=seed + t,
            progress=progress, epoch_offset=offset, repeat=t, clip_norm=clip_norm, guard=guard,
        )
        history += rows
        offset += step1_epochs
        step2 = fit_guide(
            model, guide, x_train, x_val, epochs=step2_epochs, batch_size=batch_size or n, lr=lr,
            seed=seed + t, progress=progress,
        )
        for row in step2.history:
            history.append({**row, "epoch": offset + row["epoch"], "step": 2, "repeat": t})
        offset += step2_epochs
        steps += s1 + step2.steps
        torch.manual_seed(seed + t)
        score = validation_log_likelihood(model, guide, x_val, val_samples)
        for row in history[-len(score):]:
            row["val_loglik"] = float(score[row["restart"]])
        scores.append(score)
        snapshots.append([copy.deepcopy(m.state_dict()) for m in (model, guide, code_net)])
        if t + 1 < repeats:
            reinitialise_codes(code_net, guide, x_train, k, lr=lr)
    table = torch.stack(scores)  # (rounds, R)
    best_round = torch.nan_to_num(table, nan=-float("inf")).argmax(0)
    _select_rounds((model, guide, code_net), snapshots, best_round)
    val = table.gather(0, best_round[None]).reshape(-1)
    best = int(torch.nan_to_num(val, nan=-float("inf")).argmax())
    return TrainResult(history, val, best, steps, time.perf_counter() - start)


def _fit(model, guide, x_train, x_val, config, progress: bool = True) -> TrainResult:
    o = config.options
    return train_libi(
        model, guide, x_train, x_val, eps_hz=o["eps_hz"], eps_sigma=o["eps_sigma"], eps_mu=o["eps_mu"],
        repeats=o["repeats"], step1_epochs=config.epochs, step2_epochs=o["step2_epochs"] or config.epochs,
        lr=config.lr, batch_size=config.batch_size, seed=config.seed, progress=progress,
        code_init=o["code_init"], clip_norm=o["clip_norm"], guard_bound=o["guard_bound"],
        guard_warmup=o["guard_warmup"],
    )


def _checks(options: dict) -> None:
    _check_penalty_args(options["eps_hz"], options["eps_sigma"], options["eps_mu"], options["repeats"])
    if options["step2_epochs"] is not None:
        _check_positive_int("step2_epochs", options["step2_epochs"])
    if options["code_init"] not in CODE_INITS:
        raise ValueError(f"code_init={options['code_init']!r}: expected one of {CODE_INITS}")
    _check_clip_norm(options["clip_norm"])
    PenaltyGuard(options["guard_bound"], options["guard_warmup"])  # raises for bad values


DEFAULT_OPTIONS = {
    "eps_hz": 1.0, "eps_sigma": 0.5, "eps_mu": 0.5, "repeats": 1, "step2_epochs": None,
    "code_init": "gaussian", "clip_norm": 1.0, "guard_bound": 1000.0, "guard_warmup": 200,
}

register_method("libi", Method(
    _fit, DEFAULT_OPTIONS,
    "LiBI (000 §2): θ by Eq. 44's penalised likelihood, then the guide with θ fixed; --epochs is step 1's "
    "(clip_norm=null, guard_bound=null turn those off)",
    _checks,
))
