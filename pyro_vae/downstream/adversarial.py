"""004 Appendix F: a manifold-projection defence needs the true σ² and latent dimension.

The generative process of Eq. 32 adds labels to a benchmark: ``y | z ~ Cat(g_ψ ∘ f_θGT(z))``,
here a deterministic ``g`` (``y = 1`` on one side of a line through the true manifold), so the
true classifier is defined on the manifold and extended off it by the projection onto it. A
learned classifier ``h`` (an MLP on noisy x) agrees with it on the manifold but not away from
it. The defence projects a (perturbed) input onto a learned manifold before classifying,
``M(x) = f_θ(μ_φ(x))``; if the VAE put the noise into a too-large latent space with a too-small
σ², M barely moves x and the perturbation survives (Figure 7b).

- :func:`true_projection`: the nearest point of the true manifold (a dense grid of f_GT(z), K = 1).
- :func:`fit_classifier`: the learned classifier ``h`` (seeded logistic regression or MLP, Adam).
- :func:`pgd_attack`: L∞ projected gradient ascent on ``h``'s cross-entropy (Madry et al. 2018),
  through an optional defence (adaptive) or on ``h`` alone (oblivious, the paper's setting).
- :func:`attack_success`: the share of points whose defended prediction differs from the true
  label of the perturbed point, among those the defence classified correctly before the attack.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import torch
from torch import nn

__all__ = ["true_projection", "fit_classifier", "projection", "pgd_attack", "attack_success", "AttackResult"]


def true_projection(f: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, *, bound: float = 5.0,
                    num: int = 20001) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest point of the 1-D true manifold ``{f(z)}`` to each row of ``x``: ``(f(z*), z*)``.

    A grid of ``num`` values of z on ``[−bound, bound]`` (the prior's mass to 1e-6).
    """
    z = torch.linspace(-bound, bound, num, dtype=torch.float64)[:, None]
    with torch.no_grad():
        curve = f(z).double()
    d = torch.cdist(x.double(), curve)
    best = d.argmin(1)
    return curve[best].to(x.dtype), z[best].to(x.dtype)


def fit_classifier(x: torch.Tensor, y: torch.Tensor, *, hidden: int = 32, steps: int = 2000, lr: float = 1e-2,
                   seed: int = 0) -> nn.Module:
    """A classifier of ``y`` (class indices) from ``x`` by full-batch Adam: a two-hidden-layer tanh
    MLP, or multinomial logistic regression when ``hidden = 0``."""
    gen = torch.Generator().manual_seed(seed)
    classes = int(y.max()) + 1
    if hidden == 0:
        net = nn.Sequential(nn.Linear(x.shape[1], classes))
    else:
        net = nn.Sequential(nn.Linear(x.shape[1], hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh(),
                            nn.Linear(hidden, classes))
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) / max(1, p.shape[-1]) ** 0.5)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    for _ in range(steps):
        loss = nn.functional.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net.requires_grad_(False)


def projection(model, guide) -> Callable[[torch.Tensor], torch.Tensor]:
    """``M(x) = f_θ(μ_φ(x))`` of a VAE model and mean-field guide (004 App. F)."""
    def project(x: torch.Tensor) -> torch.Tensor:
        return model.decoder(guide.distribution(x).loc).reshape(x.shape)
    return project


def pgd_attack(classifier: Callable, x: torch.Tensor, y: torch.Tensor, eps: float, *, steps: int = 20,
               step_size: float | None = None, through: Callable | None = None) -> torch.Tensor:
    """L∞ PGD: maximise ``CE(classifier(through(x + η)), y)`` over ``‖η‖∞ ≤ eps``; returns ``x + η``.

    ``through=None`` attacks the classifier alone (oblivious to the defence, 004 App. F);
    a defence given as ``through`` is differentiated through (adaptive attack).
    """
    if eps <= 0:
        return x.clone()
    step_size = step_size or 2.5 * eps / steps
    eta = torch.zeros_like(x, requires_grad=True)
    for _ in range(steps):
        inp = x + eta
        logits = classifier(through(inp) if through is not None else inp)
        loss = nn.functional.cross_entropy(logits, y)
        (grad,) = torch.autograd.grad(loss, eta)
        with torch.no_grad():
            eta += step_size * grad.sign()
            eta.clamp_(-eps, eps)
    return (x + eta).detach()


class AttackResult(NamedTuple):
    success: float  # share of initially-correct points misclassified after the attack
    clean_accuracy: float  # accuracy of the defended classifier before the attack
    num_points: int


def attack_success(classifier: Callable, defence: Callable | None, x: torch.Tensor, x_adv: torch.Tensor,
                   y_clean: torch.Tensor, y_adv: torch.Tensor) -> AttackResult:
    """Attack success against ``classifier ∘ defence`` (``defence=None``: no defence).

    ``y_clean``/``y_adv``: true labels of the clean and perturbed points (by the true projection).
    """
    d = defence or (lambda v: v)
    with torch.no_grad():
        clean = classifier(d(x)).argmax(-1) == y_clean
        fooled = classifier(d(x_adv)).argmax(-1) != y_adv
    n = int(clean.sum())
    return AttackResult(float((fooled & clean).sum()) / max(n, 1), float(clean.double().mean()), n)
