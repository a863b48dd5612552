"""Keeping LiBI's step 1 (000 Eq. 44) on course: code initialisation, clipping, a divergence guard.

None of these changes what Eq. 44 is minimised to; they change how Adam gets there.

- **Why step 1 diverges at full batch.** The Henze-Zirkler statistic is affine invariant and
  grows in proportion to the number of codes on a non-Gaussian batch, so the penalty
  ``ε_HZ·exp(HZ)`` of a randomly initialised 3 × 50 code network is ``e^18``-``e^33`` on 500
  codes (``e^3``-``e^7`` on 100). Its gradients (up to 1e17) fill Adam's second-moment
  estimates of ϕ (≈ 1e30), which decay by β₂ = 0.999 per step, so for thousands of steps the
  code network barely moves; θ, whose gradient comes from the likelihood term alone, fits
  codes that carry no information about x and ends near A = 0 (MLEO ≈ 189 nats on LinearJTE).
  Whitening h's output does not help (HZ is affine invariant); the measured trace is in
  ``bench/libi_step1.py``.
- :func:`clip_grad_norm_per_restart` rescales each restart's gradient (θ and ϕ together) to
  norm at most ``c``. A positive rescaling of the gradient leaves Eq. 44's stationary points as
  they are (with full batches the clipped and unclipped iterations share them exactly); it
  only keeps Adam's moments on the scale of the gradients met near the solution.
- :func:`gaussian_code_targets` / :func:`initialise_codes` start h at codes that are already
  near N(0, I) in shape, not only in their first two moments: h is regressed onto the normal
  scores of x (each coordinate's ranks mapped through Φ⁻¹), projected on their first K
  principal axes and whitened. For data whose coordinates are monotone transforms of a
  Gaussian (LinearJTE, CubicJTE) these codes are Gaussian, so ``HZ`` starts near its null
  value rather than at ``e^{O(n)}``.
- :class:`PenaltyGuard` stops training with :class:`~pyro_vae.inference.svi.TrainingError`
  when, after a warm-up or at the last step, one of the three penalties of Eq. 44 exceeds a
  bound (1000 nats): a restart whose codes stay far from N(0, I) would return a θ fitted to
  uninformative codes.
"""

from __future__ import annotations

import math
from typing import Iterable

import torch
from scipy.stats import norm
from torch import nn

from pyro_vae.inference.svi import TrainingError

__all__ = [
    "CODE_INITS", "PenaltyGuard", "clip_grad_norm_per_restart", "gaussian_code_targets", "initialise_codes",
    "random_rotations", "regress_codes", "whiten_output",
]

#: How step 1 initialises the code network h: ``"gaussian"`` (regressed onto Gaussian codes of
#: x, :func:`gaussian_code_targets`), ``"whiten"`` (its last layer made to give mean 0 and
#: covariance I on x) or ``"none"`` (its random initialisation).
CODE_INITS = ("gaussian", "whiten", "none")


def clip_grad_norm_per_restart(
    params: Iterable[torch.Tensor], max_norm: float, num_restarts: int | None
) -> torch.Tensor:
    """Scale each restart's gradient to Euclidean norm at most ``max_norm``; return the norms before.

    A parameter whose leading dimension is ``num_restarts`` belongs to the restarts (row r is
    restart r's); its rows are scaled by their restart's factor ``min(1, max_norm / ‖g_r‖)``,
    with ``‖g_r‖`` over every such parameter. Other parameters (shared, or ``num_restarts``
    None) are clipped together by their joint norm. Restarts stay independent runs.
    ``max_norm = inf`` only measures.

    Returns
    -------
    Tensor
        ``(R,)`` norms before clipping (``(1,)`` without restarts), float64.
    """
    grads = [p.grad for p in params if p.grad is not None]
    lead = num_restarts or 1
    batched = [g for g in grads if num_restarts and g.dim() > 0 and g.shape[0] == num_restarts]
    shared = [g for g in grads if not any(g is b for b in batched)]
    sq = torch.zeros(lead, dtype=torch.float64)
    for g in batched:
        sq = sq + g.detach().double().pow(2).reshape(lead, -1).sum(-1).cpu()
    norms = sq.sqrt()
    if math.isinf(max_norm):  # report only
        if not batched and shared:
            norms = torch.full((lead,), math.sqrt(sum(float(g.detach().double().pow(2).sum()) for g in shared)))
        return norms
    factor = (max_norm / norms.clamp_min(1e-300)).clamp(max=1.0)
    for g in batched:
        g.mul_(factor.to(device=g.device, dtype=g.dtype).reshape(-1, *[1] * (g.dim() - 1)))
    if shared:
        shared_norm = math.sqrt(sum(float(g.detach().double().pow(2).sum()) for g in shared))
        if shared_norm > max_norm:
            for g in shared:
                g.mul_(max_norm / shared_norm)
        if not batched:
            norms = torch.full((lead,), shared_norm, dtype=torch.float64)
    return norms


def gaussian_code_targets(x: torch.Tensor, latent_dim: int) -> torch.Tensor:
    """``(N, K)`` codes of x with mean 0, covariance I and, where possible, a Gaussian shape.

    Each coordinate of x is replaced by its normal scores ``Φ⁻¹((rank + ½)/N)`` (a monotone map
    per coordinate, so a coordinate-wise monotone transform of a Gaussian becomes Gaussian
    again), the scores are projected on their first K principal axes and whitened. Ties keep
    their order of appearance. Requires ``K ≤ D``.
    """
    n, d = x.shape
    if not 1 <= latent_dim <= d:
        raise ValueError(f"latent_dim={latent_dim}: the Gaussian code initialisation needs 1 <= K <= D={d}")
    ranks = x.detach().double().cpu().argsort(dim=0, stable=True).argsort(dim=0, stable=True)
    scores = torch.as_tensor(norm.ppf((ranks.numpy() + 0.5) / n), dtype=torch.float64)
    centred = scores - scores.mean(0)
    cov = centred.T @ centred / n
    evals, evecs = torch.linalg.eigh(cov)  # ascending
    top = evals.flip(0)[:latent_dim].clamp_min(1e-12)
    axes = evecs.flip(1)[:, :latent_dim]
    return (centred @ axes / top.sqrt()).to(device=x.device, dtype=x.dtype)


def regress_codes(
    code_net: nn.Module, x: torch.Tensor, target: torch.Tensor, *, steps: int = 500, lr: float = 1e-2
) -> float:
    """Fit ``code_net(x) ≈ target`` (squared error, Adam, full batch); return the final mean squared error.

    ``target`` is ``(N, K)`` (the same for every restart) or ``(R, N, K)``.
    """
    optim = torch.optim.Adam(code_net.parameters(), lr=lr)
    loss = torch.tensor(float("nan"))
    for _ in range(steps):
        out = code_net(x)
        loss = ((out - target) ** 2).sum(-1).mean(-1)
        optim.zero_grad(set_to_none=True)
        loss.sum().backward()
        optim.step()
    with torch.no_grad():
        return float(((code_net(x) - target) ** 2).sum(-1).mean())


def whiten_output(code_net: nn.Module, x: torch.Tensor) -> bool:
    """Make the last affine layer of ``code_net`` give codes of mean 0 and covariance I on ``x``.

    Works on a :class:`~pyro_vae.nets.MLP` (or any module whose last submodule is a
    :class:`~pyro_vae.nets.BatchedLinear`), per restart. Returns False (and changes nothing)
    when the network has no such layer or its codes on x have a singular covariance.
    """
    from pyro_vae.nets import BatchedLinear

    layers = [m for m in code_net.modules() if isinstance(m, BatchedLinear)]
    if not layers:
        return False
    last = layers[-1]
    with torch.no_grad():
        z = code_net(x).double()
        z = z if z.dim() == 3 else z.unsqueeze(0)
        mean = z.mean(-2, keepdim=True)
        cov = (z - mean).mT @ (z - mean) / z.shape[-2]
        chol, info = torch.linalg.cholesky_ex(cov)
        if bool((info != 0).any()):
            return False
        inv = torch.linalg.inv(chol)  # whitened codes: (z − mean) L⁻ᵀ
        w = last.weight.double() @ inv.mT.reshape(last.weight.shape[:-2] + inv.shape[-2:])
        b = (last.bias.double() - mean.reshape(last.bias.shape)) @ inv.mT.reshape(last.weight.shape[:-2] + inv.shape[-2:])
        last.weight.copy_(w.to(last.weight.dtype))
        last.bias.copy_(b.to(last.bias.dtype))
    return True


def random_rotations(count: int, dim: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """``(count, dim, dim)`` Haar-random orthogonal matrices (QR of Gaussian matrices, signs fixed)."""
    g = torch.randn(count, dim, dim, generator=generator, dtype=torch.float64)
    q, r = torch.linalg.qr(g)
    return q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1)).unsqueeze(-2)


def initialise_codes(code_net: nn.Module, x: torch.Tensor, latent_dim: int, how: str = "gaussian", *,
                     steps: int = 500, lr: float = 1e-2, generator: torch.Generator | None = None) -> str:
    """Initialise the code network h before the first round of step 1; see :data:`CODE_INITS`.

    ``"gaussian"`` regresses h onto :func:`gaussian_code_targets` (``steps`` Adam steps at
    ``lr``, full batch), each restart's targets turned by its own random rotation (N(0, I) is
    rotation invariant, so the penalties do not see it; the restarts keep different codes),
    and then whitens its output layer when it can. Returns what was done.
    """
    if how not in CODE_INITS:
        raise ValueError(f"code_init={how!r}: expected one of {CODE_INITS}")
    if how == "none":
        return "none"
    if how == "gaussian":
        target = gaussian_code_targets(x, latent_dim)
        with torch.no_grad():
            shape = code_net(x).shape
        rotations = random_rotations(shape[0] if len(shape) == 3 else 1, latent_dim, generator)
        target = (target.double() @ rotations).to(x.dtype)
        regress_codes(code_net, x, target if len(shape) == 3 else target[0], steps=steps, lr=lr)
    return how if whiten_output(code_net, x) or how == "gaussian" else "none"


class PenaltyGuard:
    """Stop step 1 when a penalty of Eq. 44 of 000 stays far above its minimum.

    Each step's three penalties ``ε_HZ·exp(HZ)``, ``exp(‖Σ − I‖²/ε_Σ)`` and ``exp(‖μ‖²/ε_μ)``
    (per restart, on the step's codes) are kept for the last ``window`` steps. After ``warmup``
    steps with a full window, and at the last step whatever its number (``final=True``), a
    restart whose *median*
    penalty over that window exceeds ``bound`` nats raises
    :class:`~pyro_vae.inference.svi.TrainingError` naming the term, its median and exponent, the
    step, epoch, round and restart. The median ignores the isolated spikes of a run that is
    converging on a sharp likelihood (CubicJTE) and catches a run stuck far from N(0, I) codes
    (the randomly initialised 3 × 50 code network at full batch sits at e^10-e^14 for thousands
    of steps). Each penalty is ≥ ε_HZ or 1 and the likelihood term is a few nats per point, so
    above ``bound`` (default 1000: HZ > 6.9 at ε_HZ = 1, ‖Σ − I‖² > 3.5 at ε_Σ = 0.5) the
    objective is the penalty and θ is fitted to codes unlike draws from p(z). ``bound=None``
    turns the guard off.
    """

    TERMS = (("hz", "hz_stat", "Henze-Zirkler penalty ε_HZ·exp(HZ)", "HZ"),
             ("sigma", "sigma_exponent", "covariance penalty exp(‖Σ − I‖²/ε_Σ)", "‖Σ − I‖²/ε_Σ"),
             ("mu", "mu_exponent", "mean penalty exp(‖μ‖²/ε_μ)", "‖μ‖²/ε_μ"))

    def __init__(self, bound: float | None = 1e3, warmup: int = 200, window: int = 50):
        if bound is not None and (isinstance(bound, bool) or not isinstance(bound, (int, float))
                                  or not math.isfinite(bound) or bound <= 0):
            raise ValueError(f"guard_bound={bound!r}: expected a positive number or None")
        if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
            raise ValueError(f"guard_warmup={warmup!r}: expected a non-negative integer")
        if isinstance(window, bool) or not isinstance(window, int) or window < 1:
            raise ValueError(f"guard_window={window!r}: expected a positive integer")
        self.bound, self.warmup, self.window = bound, warmup, window
        self._recent: list[torch.Tensor] = []  # (3, R) penalties and (3, R) exponents per step

    def check(self, terms, step: int, epoch: int, repeat: int, *, final: bool = False) -> None:
        """Record ``terms`` (a :class:`~pyro_vae.inference.libi.Step1Terms`; ``step`` counts
        from 1 within the round) and raise if the guard trips. A step of 1 starts a new window;
        ``final=True`` records nothing and judges the window as it is."""
        if self.bound is None:
            return
        if step == 1:
            self._recent = []
        if not final:
            values = torch.stack([getattr(terms, f).detach().double().cpu() for f, _, _, _ in self.TERMS])
            exps = torch.stack([getattr(terms, e).detach().double().cpu() for _, e, _, _ in self.TERMS])
            self._recent = [*self._recent[-(self.window - 1):], torch.stack([values, exps])]
        if not self._recent or (not final and (step <= self.warmup or len(self._recent) < self.window)):
            return
        history = torch.stack(self._recent)  # (W, 2, 3, R)
        median = history[:, 0].median(0).values  # (3, R)
        median_exp = history[:, 1].median(0).values
        over = (median > self.bound).nonzero()
        if over.numel():
            t, r = int(over[0, 0]), int(over[0, 1])
            _, _, name, symbol = self.TERMS[t]
            when = "at the last step" if final and step <= self.warmup else f"after the {self.warmup}-step warm-up"
            raise TrainingError(
                f"LiBI step 1 diverged: the {name} of restart {r} has median {float(median[t, r]):.4g} nats "
                f"({symbol} = {float(median_exp[t, r]):.4g}) over the last {history.shape[0]} steps, > {self.bound:g}, "
                f"at step {step} (epoch {epoch}, round {repeat + 1}), {when}: the codes are far from N(0, I), so θ "
                f"would be fitted to codes unlike draws from p(z); nothing was saved (options: code_init=gaussian, "
                f"clip_norm, a smaller lr)"
            )
