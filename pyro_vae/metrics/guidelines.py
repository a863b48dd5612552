"""Checks from the practical guidelines of 004 Section 9, as functions.

- :func:`residual_normality` (guideline 4): project each ``x`` onto the learned manifold,
  ``z* = argmin_z |x - f(z)|``, and test the residuals ``R = x - f(z*)`` for normality; a
  non-Gaussian ``R`` suggests the manifold was misestimated.
- :func:`class_overlap` (guideline 1): how well a simple classifier predicts ``y`` from
  ``x``; low balanced accuracy (overlapping classes) calls for a rich variational family
  in the unlabelled objective of semi-supervised training.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import numpy as np
import torch

from ._checks import ArrayLike, as_numpy_2d, as_tensor_2d, check_int, check_positive, decoder_dtype_device
from .normality import henze_zirkler

__all__ = ["ResidualNormality", "residual_normality", "ClassOverlap", "class_overlap"]


class ResidualNormality(NamedTuple):
    """Result of :func:`residual_normality`."""

    residuals: torch.Tensor  # (N, D), x - f(z*)
    z: torch.Tensor  # (N, K), the closest codes z*
    normal_coords: torch.Tensor  # (N, D - K) (whitened, projected) or (N, D): what was tested
    hz_statistic: float
    hz_p_value: float


def _closest_codes(x, f, latent_dim, inv_sd, num_inits, steps, lr, seed):
    """Batched Adam (cosine-decayed step) from ``num_inits`` N(0, I) starts; best per row."""
    n = x.shape[0]
    gen = torch.Generator(device=x.device).manual_seed(seed)
    z = torch.randn((num_inits, n, latent_dim), generator=gen, dtype=x.dtype, device=x.device)
    z.requires_grad_(True)
    opt = torch.optim.Adam([z], lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps, eta_min=lr * 1e-3)
    for _ in range(steps):
        loss = (((x - f(z)) * inv_sd) ** 2).sum()
        (z.grad,) = torch.autograd.grad(loss, z)  # leaves the decoder's .grad untouched
        opt.step()
        sched.step()
    with torch.no_grad():
        err = (((x - f(z)) * inv_sd) ** 2).sum(-1)  # (num_inits, N)
        best = err.argmin(0)
        return z[best, torch.arange(n, device=x.device)].detach()


def _normal_space_coords(f, z, white_resid, inv_sd):
    """Coordinates of the whitened residuals in an orthonormal basis of the normal space."""
    z = z.clone().requires_grad_(True)
    out = f(z)
    d = out.shape[-1]
    # Row n of f depends on z_n only, so d/dz of the column sum gives every row's Jacobian.
    jac = torch.stack([torch.autograd.grad(out[:, j].sum(), z, retain_graph=j < d - 1)[0] for j in range(d)], 1)
    q, _ = torch.linalg.qr(jac * inv_sd[:, None], mode="complete")  # (N, D, D)
    normal = q[:, :, z.shape[1] :]
    return torch.einsum("nd,ndj->nj", white_resid, normal)


def residual_normality(
    x: ArrayLike,
    f: Callable[[torch.Tensor], torch.Tensor],
    latent_dim: int,
    noise_var: ArrayLike | None = None,
    project: bool = True,
    num_inits: int = 5,
    steps: int = 300,
    lr: float = 0.05,
    seed: int = 0,
) -> ResidualNormality:
    """Guideline 4 of 004: Henze-Zirkler test on the residuals to the learned manifold.

    The residual of a point that lies near the manifold is (approximately) its noise
    projected onto the manifold's normal space, so ``R`` is degenerate in ``D``
    dimensions and, for a curved manifold, not Gaussian even under the true model. With
    ``project=True`` (default) the test is therefore applied to the coordinates of the
    whitened residual in an orthonormal basis of the normal space at ``f(z*)`` (from the
    Jacobian of ``f``): under the true model with noise ``N(0, diag(noise_var))`` these
    are ``N(0, I_{D-K})`` to first order. ``project=False`` tests ``R`` itself, as the
    guideline literally reads.

    Parameters
    ----------
    x : array (N, D)
        Data.
    f : callable
        Decoder mean acting row-wise on the last axis, ``(..., K) -> (..., D)``. If it
        is a ``torch.nn.Module`` with parameters, their dtype and device are used.
    latent_dim : int
        ``K``, with ``1 <= K < D``.
    noise_var : array (D,), optional
        Per-dimension noise variance; the distance ``|x - f(z)|`` is then whitened by it.
    project : bool
        Test the normal-space coordinates (True) or the raw residuals (False).
    num_inits : int
        Random starts per point (the best is kept).
    steps : int
        Adam steps.
    lr : float
        Initial Adam step size (cosine-decayed to ``lr / 1000``).
    seed : int
        Seed of the starting points.

    Returns
    -------
    ResidualNormality
        ``(residuals, z, normal_coords, hz_statistic, hz_p_value)``.

    References
    ----------
    004 Section 9, guideline 4; Henze & Zirkler (1990).
    """
    x_t = as_tensor_2d("x", x)
    dtype, device = decoder_dtype_device(f, x_t)
    x_t = x_t.to(device=device, dtype=dtype)
    n, d = x_t.shape
    if d < 2:
        raise ValueError(f"x must have at least 2 columns (latent_dim < D); got D={d}")
    k = check_int("latent_dim", latent_dim, minimum=1, maximum=d - 1)
    num_inits = check_int("num_inits", num_inits, minimum=1)
    steps = check_int("steps", steps, minimum=1)
    lr = check_positive("lr", lr)
    width = d - k if project else d
    if n < width + 2:
        raise ValueError(f"x needs at least {width + 2} rows for the normality test; got {n}")
    if noise_var is None:
        inv_sd = torch.ones(d, dtype=x_t.dtype, device=x_t.device)
    else:
        var = torch.as_tensor(noise_var, dtype=x_t.dtype, device=x_t.device).reshape(-1)
        if var.shape != (d,) or not bool((var > 0).all()):
            raise ValueError(f"noise_var must hold {d} positive numbers; got {tuple(var.shape)} {var.tolist()[:5]}")
        inv_sd = var.rsqrt()
    z = _closest_codes(x_t, f, k, inv_sd, num_inits, steps, lr, seed)
    with torch.no_grad():
        resid = x_t - f(z)
    coords = _normal_space_coords(f, z, resid * inv_sd, inv_sd).detach() if project else resid * inv_sd
    hz = henze_zirkler(coords)
    return ResidualNormality(resid, z, coords, hz.statistic, hz.p_value)


class ClassOverlap(NamedTuple):
    """Result of :func:`class_overlap`, both on the held-out split."""

    balanced_accuracy: float  # mean per-class recall; 1/C is chance
    mean_entropy: float  # E[H[p(y|x)]] in nats; log C is maximal overlap
    num_classes: int


def _init(shape, gen, fan_in):
    return (torch.randn(shape, generator=gen, dtype=torch.float64) / math.sqrt(fan_in)).requires_grad_(True)


def class_overlap(
    x: ArrayLike,
    y: ArrayLike,
    hidden: int = 16,
    test_fraction: float = 0.5,
    weight_decay: float = 1e-3,
    max_iter: int = 200,
    seed: int = 0,
) -> ClassOverlap:
    """Guideline 1 of 004: are the classes separable by a simple classifier?

    Fits a one-hidden-layer tanh network (``hidden = 0``: multinomial logistic
    regression) by L-BFGS on a stratified training split of standardised ``x`` and
    reports, on the held-out split, the balanced accuracy and the mean predictive
    entropy :math:`E_x[H[p(y | x)]]`.

    Parameters
    ----------
    x : array (N, D)
        Inputs.
    y : array (N,)
        Labels (any integers); at least two classes, each with two or more points.
    hidden : int
        Hidden units; 0 for a linear classifier.
    test_fraction : float
        Share of each class held out, in (0, 1).
    weight_decay : float
        L2 penalty on the weights (not the biases), added to the mean cross-entropy.
    max_iter : int
        L-BFGS iterations.
    seed : int
        Seed of the split and the initial weights.

    Returns
    -------
    ClassOverlap
        ``(balanced_accuracy, mean_entropy, num_classes)``.

    References
    ----------
    004 Section 9, guideline 1.
    """
    x_a = as_numpy_2d("x", x)
    y_a = np.asarray(y.detach().cpu() if isinstance(y, torch.Tensor) else y).reshape(-1)
    if y_a.shape[0] != x_a.shape[0]:
        raise ValueError(f"y must have one label per row of x ({x_a.shape[0]}); got {y_a.shape[0]}")
    hidden = check_int("hidden", hidden, minimum=0)
    max_iter = check_int("max_iter", max_iter, minimum=1)
    if not 0.0 < float(test_fraction) < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1); got {test_fraction!r}")
    if float(weight_decay) < 0:
        raise ValueError(f"weight_decay must be >= 0; got {weight_decay!r}")
    classes, y_idx, counts = np.unique(y_a, return_inverse=True, return_counts=True)
    if classes.size < 2 or counts.min() < 2:
        raise ValueError(f"y needs at least 2 classes with 2 or more points each; got counts {counts.tolist()}")
    rng = np.random.default_rng(seed)
    test = np.zeros(y_a.shape[0], dtype=bool)
    for c in range(classes.size):
        members = rng.permutation(np.flatnonzero(y_idx == c))
        n_test = min(max(1, round(test_fraction * members.size)), members.size - 1)
        test[members[:n_test]] = True
    mu, sd = x_a[~test].mean(0), x_a[~test].std(0)
    xs = torch.as_tensor((x_a - mu) / np.where(sd > 0, sd, 1.0))
    yt = torch.as_tensor(y_idx)
    gen = torch.Generator().manual_seed(seed)
    d, c_num = xs.shape[1], classes.size
    if hidden:
        weights = [_init((d, hidden), gen, d), _init((hidden, c_num), gen, hidden)]
    else:
        weights = [_init((d, c_num), gen, d)]
    biases = [torch.zeros(w.shape[1], dtype=torch.float64, requires_grad=True) for w in weights]

    def logits(inp):
        h = inp
        for i, (w, b) in enumerate(zip(weights, biases)):
            h = h @ w + b
            if i < len(weights) - 1:
                h = torch.tanh(h)
        return h

    train = torch.as_tensor(~test)
    opt = torch.optim.LBFGS(weights + biases, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(logits(xs[train]), yt[train])
        loss = loss + weight_decay * sum((w**2).sum() for w in weights)
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        logp = torch.log_softmax(logits(xs[~train]), dim=-1)
        pred = logp.argmax(-1).numpy()
        entropy = float(-(logp.exp() * logp).sum(-1).mean())
    y_test = y_idx[test]
    recalls = [np.mean(pred[y_test == c] == c) for c in range(c_num)]
    return ClassOverlap(float(np.mean(recalls)), entropy, int(c_num))
