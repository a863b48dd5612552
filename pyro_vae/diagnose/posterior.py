"""How far the guide is from the model's own posterior: the statistics behind 004 §5.1 and §9 item 4.

- :func:`posterior_gap`: per point, the ELBO, the IWAE bound with q as proposal and
  ``log p_θ(x)`` (:mod:`.marginal`); ``log p_θ(x) − ELBO = KL(q ‖ p_θ(z | x))`` is the posterior
  matching objective of the learned model (000 Eq. 2), the part of the ELBO that a mean-field q
  costs. ``IWAE − ELBO`` is its lower estimate from q's own draws.
- :func:`psis_khat`: the Pareto k̂ of the importance weights of q as a proposal, per point,
  from :func:`pyro.infer.importance.psis_diagnostic` (Yao et al. 2018: k̂ < 0.5 good,
  0.5–0.7 usable, > 0.7 unreliable).
- :func:`richer_family_gain`: 004 §9 item 4(ii) with the decoder held fixed — a normalising-flow
  guide and a copy of the given guide are trained for the same budget against the frozen model
  (LiBI step 2, 000 §2; :func:`pyro_vae.inference.fixed_model.fit_guide`) and their held-out
  bounds compared.
"""

from __future__ import annotations

import copy
import math
import warnings
from typing import Callable, NamedTuple

import torch
from pyro.infer.importance import psis_diagnostic

from pyro_vae.diagnose.marginal import log_marginal
from pyro_vae.diagnose.probe import ModelProbe, seeded

__all__ = [
    "PosteriorGap", "posterior_gap", "psis_khat", "best_gaussian_elbo", "FamilyGain", "richer_family_gain",
    "warm_start_flow",
]


class PosteriorGap(NamedTuple):
    """Per-point bounds (N,) float64 and how ``log p_θ(x)`` was computed."""

    elbo: torch.Tensor
    iwae: torch.Tensor
    log_lik: torch.Tensor
    log_lik_method: str
    num_particles: int

    @property
    def gap(self) -> torch.Tensor:
        """``log p_θ(x) − ELBO`` per point (≥ 0 up to Monte Carlo error)."""
        return self.log_lik - self.elbo

    @property
    def iwae_gap(self) -> torch.Tensor:
        """``IWAE_S − ELBO`` per point, from the same S draws of q."""
        return self.iwae - self.elbo


def posterior_gap(
    model: Callable, guide: Callable, x: torch.Tensor, *, num_particles: int = 1000, seed: int = 0, chunk: int = 250
) -> PosteriorGap:
    """ELBO, IWAE bound and ``log p_θ(x)`` per point (see the module docstring).

    Parameters
    ----------
    model, guide : callable
        Unbatched Pyro programs (:class:`~pyro_vae.diagnose.probe.ModelProbe`'s contract).
    x : Tensor (N, D)
    num_particles : int
        Draws of q per point for the ELBO and the IWAE bound, and importance samples for
        ``log p_θ(x)`` when K > 2.
    seed : int
    chunk : int
        Points per pass.

    References
    ----------
    000 Eq. 2 (PMO); Burda et al. (2016) IWAE; 004 §5.1 condition 1.
    """
    probe = ModelProbe(model, guide, x)
    elbo, iwae = [], []
    with seeded(seed), torch.no_grad():
        for rows in torch.split(x, chunk):
            lw = probe.log_weights(rows, num_particles)
            elbo.append(lw.mean(0))
            iwae.append(torch.logsumexp(lw, 0) - math.log(num_particles))
        lp = log_marginal(probe, x, num_samples=num_particles)
    return PosteriorGap(torch.cat(elbo).cpu(), torch.cat(iwae).cpu(), lp.per_point, lp.method, num_particles)


def psis_khat(
    model: Callable, guide: Callable, x: torch.Tensor, *, num_particles: int = 1000, seed: int = 0
) -> torch.Tensor:
    """Pareto k̂ of q as an importance proposal for each row of ``x``: (N,) float64.

    Calls :func:`pyro.infer.importance.psis_diagnostic` on one row at a time (on the whole
    data set the weights would be of the joint posterior of all points, one number dominated by
    the worst point). Where the weights are constant (q equals the posterior) there is no tail
    to fit and Pyro returns inf; k̂ is then reported as 0.

    References
    ----------
    Yao, Vehtari, Simpson & Gelman (2018), "Yes, but did it work?"; 004 §9 item 4.
    """
    probe = ModelProbe(model, guide, x)
    out = torch.empty(x.shape[0], dtype=torch.float64)
    with seeded(seed), torch.no_grad():
        for i in range(x.shape[0]):
            row = x[i : i + 1]
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="Not enough tail samples")
                k = float(psis_diagnostic(model, guide, row, num_particles=num_particles, max_plate_nesting=1))
            if math.isinf(k) and float(probe.log_weights(row, 100).std()) < 1e-4:
                k = 0.0  # constant weights: q is the posterior here, no tail to fit
            out[i] = k
    return out


def best_gaussian_elbo(
    model: Callable,
    guide: Callable,
    x: torch.Tensor,
    *,
    steps: int = 200,
    train_particles: int = 16,
    num_particles: int = 1000,
    candidates: int = 256,
    lr: float = 0.05,
    seed: int = 0,
    chunk: int = 500,
) -> torch.Tensor:
    """Per point, the ELBO of the best diagonal Gaussian ``N(μ_n, diag σ_n²)`` for ``p_θ(z | x_n)``: (N,).

    Each point gets its own μ and σ (no encoder), fitted by Adam on the reparameterised ELBO
    (``steps`` steps, cosine-decayed) from two starts run side by side — the guide's mean and
    spread, and the most probable of ``candidates`` draws from the guide and the prior (so a
    poorly trained encoder cannot strand the fit far from the posterior) — keeping the better;
    the result is scored with ``num_particles`` fresh draws. ``log p_θ(x) −`` this is the
    mean-field family's own floor for this decoder (004 §5.1 condition 1, measured on the
    learned model), free of the amortised encoder's training error.
    """
    from pyro_vae.inference.fixed_model import frozen

    probe = ModelProbe(model, guide, x)
    out = []
    with seeded(seed), frozen(model):
        for rows in torch.split(x, chunk):
            with torch.no_grad():
                zq, _ = probe.guide_draws(rows, 64)
                sd = zq.std(0).clamp_min(1e-3)
                half = candidates // 2
                cand = torch.cat([probe.guide_draws(rows, half)[0], probe.prior_draws(rows, candidates - half).to(zq)])
                best = probe.log_joint(rows, cand).argmax(0)  # (n,)
                start = cand[best, torch.arange(rows.shape[0])]
                loc = torch.stack([zq.mean(0), start]).clone()  # (2, n, K)
                raw = torch.log(torch.expm1(torch.stack([sd, sd])))
            loc.requires_grad_(True)
            raw.requires_grad_(True)
            opt = torch.optim.Adam([loc, raw], lr=lr)
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps, eta_min=lr * 1e-2)
            for _ in range(steps):
                q = torch.distributions.Normal(loc, torch.nn.functional.softplus(raw) + 1e-5)
                z = q.rsample((train_particles,))  # (S, 2, n, K)
                elbo = probe.log_joint(rows, z.flatten(0, 1)).unflatten(0, (train_particles, 2)) - q.log_prob(z).sum(-1)
                opt.zero_grad()
                (-elbo.mean(0).sum()).backward()
                opt.step()
                sched.step()
            with torch.no_grad():
                q = torch.distributions.Normal(loc, torch.nn.functional.softplus(raw) + 1e-5)
                z = q.sample((num_particles,))
                lw = probe.log_joint(rows, z.flatten(0, 1)).unflatten(0, (num_particles, 2)) - q.log_prob(z).sum(-1)
                out.append(lw.double().mean(0).max(0).values.cpu())
    return torch.cat(out)


class FamilyGain(NamedTuple):
    """Held-out per-point bounds (N,) of the refitted given guide (``base``) and of the flow."""

    base_elbo: torch.Tensor
    flow_elbo: torch.Tensor
    base_iwae: torch.Tensor
    flow_iwae: torch.Tensor
    epochs: int
    base_refitted: bool
    flow_warm_started: bool
    seconds: float

    @property
    def elbo_gain(self) -> torch.Tensor:
        return self.flow_elbo - self.base_elbo

    @property
    def loglik_gain(self) -> torch.Tensor:
        """Gain in the IWAE-S estimate of ``log p_θ(x)`` with the flow as the proposal."""
        return self.flow_iwae - self.base_iwae


def warm_start_flow(flow, guide) -> bool:
    """Copy a mean-field guide's encoder into a flow guide's, so the flow starts at q.

    :class:`guides.flow.FlowGuide` ends in ``z = loc(x) + scale(x) · u`` with loc and scale the
    first 2K outputs of its encoder, as :class:`guides.mean_field.MeanFieldGuide`'s encoder gives
    them; its splines and couplings start near the identity. With the same hidden layers, the
    hidden weights and the first 2K output rows are copied (the flow's other outputs stay near
    zero). Returns False, changing nothing, when the architectures differ.
    """
    from pyro_vae.nets import BatchedLinear

    src = [m for m in getattr(getattr(guide, "encoder", None), "modules", lambda: [])() if isinstance(m, BatchedLinear)]
    dst = [m for m in flow.encoder.modules() if isinstance(m, BatchedLinear)]
    k2 = 2 * flow.latent_dim
    if not src or len(src) != len(dst) or src[-1].out_features != k2:
        return False
    if any(a.weight.shape != b.weight.shape for a, b in zip(src[:-1], dst[:-1])) or src[-1].in_features != dst[-1].in_features:
        return False
    with torch.no_grad():
        for a, b in zip(src[:-1], dst[:-1]):
            b.weight.copy_(a.weight)
            b.bias.copy_(a.bias)
        dst[-1].weight[..., :k2].copy_(src[-1].weight)
        dst[-1].bias[..., :k2].copy_(src[-1].bias)
    return True


def _bounds(probe: ModelProbe, x: torch.Tensor, num_particles: int) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        lw = probe.log_weights(x, num_particles)
    return lw.mean(0).cpu(), (torch.logsumexp(lw, 0) - math.log(num_particles)).cpu()


def _flow_for(guide, obs_dim: int, latent_dim: int):
    """A flow guide warm-started at ``guide`` when it is a mean-field MLP guide, else a fresh one."""
    from guides.flow import FlowGuide
    from pyro_vae.nets import BatchedLinear

    layers = [m for m in getattr(getattr(guide, "encoder", None), "modules", lambda: [])() if isinstance(m, BatchedLinear)]
    hidden = tuple(m.out_features for m in layers[:-1]) or (50, 50)
    flow = FlowGuide(obs_dim, latent_dim, hidden)
    return flow, warm_start_flow(flow, guide)


def richer_family_gain(
    model: Callable,
    guide: Callable,
    x_train: torch.Tensor,
    x_eval: torch.Tensor,
    *,
    epochs: int = 10,
    flow_factory: Callable | None = None,
    num_particles: int = 200,
    batch_size: int = 100,
    lr: float = 1e-3,
    seed: int = 0,
) -> FamilyGain:
    """Train a flow guide and (a copy of) ``guide`` against the frozen model; compare held-out ELBOs.

    Both guides get the same budget: ``epochs`` over ``x_train`` maximising the ELBO, the
    objective the VAE was trained with. The flow (:class:`guides.flow.FlowGuide`) starts at
    ``guide`` when that is a mean-field MLP guide (:func:`warm_start_flow`), so after equal
    training any advantage is the family's, not a head start; otherwise it starts fresh.
    ``guide`` is copied first (the caller's is untouched) and is refitted only if it is an
    ``nn.Module`` with trainable parameters; otherwise it is compared as it is.

    Parameters
    ----------
    model, guide : callable
    x_train, x_eval : Tensor
        Training points for the guides, held-out points for the comparison.
    epochs : int
    flow_factory : callable, optional
        ``(obs_dim, latent_dim) -> guide`` replacing the default flow (then no warm start).
    num_particles : int
        Draws per held-out point for the ELBO and the IWAE bound.
    batch_size, lr, seed :
        Training settings.

    Returns
    -------
    FamilyGain
        With the held-out IWAE bounds too: with θ fixed, ``log p_θ(x)`` itself cannot change,
        only how well each family's bound and importance estimate reach it.

    References
    ----------
    004 §9 item 4(ii) ("check whether log-likelihood increases significantly when using a rich
    variational family"), here with θ fixed; 000 §2 (LiBI step 2: inference for a fixed θ).
    """
    import time

    from pyro_vae.inference.fixed_model import fit_guide

    probe = ModelProbe(model, guide, x_eval)
    if flow_factory is not None:
        flow, warm = flow_factory(probe.obs_dim, probe.latent_dim), False
    else:
        flow, warm = _flow_for(guide, probe.obs_dim, probe.latent_dim)
    flow.to(device=x_train.device)
    refit = isinstance(guide, torch.nn.Module) and any(p.requires_grad for p in guide.parameters())
    base = copy.deepcopy(guide) if refit else guide
    settings = dict(objective="elbo", epochs=epochs, batch_size=min(batch_size, x_train.shape[0]), lr=lr, seed=seed)
    start = time.perf_counter()
    with seeded(seed):
        fit_guide(model, flow, x_train, x_eval, **settings)
        if refit:
            fit_guide(model, base, x_train, x_eval, **settings)
        base_elbo, base_iwae = _bounds(ModelProbe(model, base, x_eval), x_eval, num_particles)
        flow_elbo, flow_iwae = _bounds(ModelProbe(model, flow, x_eval), x_eval, num_particles)
    return FamilyGain(base_elbo, flow_elbo, base_iwae, flow_iwae, epochs, refit, warm, time.perf_counter() - start)
