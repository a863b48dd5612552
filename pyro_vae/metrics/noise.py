"""The observation-noise variance that maximises the ELBO for a fixed model and guide.

For the Gaussian likelihood :math:`x | z \\sim N(f(z), \\mathrm{diag}(\\sigma^2))`, setting
the derivative of the ELBO with respect to :math:`\\sigma_d^2` to zero gives (004 Eq. 9,
derived in Appendix C.2 as Eq. 30-31)

.. math::
    \\sigma_d^2 = \\frac{1}{N} \\sum_{n=1}^N E_{q(z|x_n)}[(x_{n,d} - f(z)_d)^2].

Because the expectation is under the approximate posterior, a poor ``q`` inflates it.
"""

from __future__ import annotations

from typing import Callable

import torch

from ._checks import ArrayLike, as_tensor_2d, check_int, decoder_dtype_device

__all__ = ["elbo_noise_var", "optimal_noise_var"]


def elbo_noise_var(x: ArrayLike, decoded: ArrayLike) -> torch.Tensor:
    """Per-dimension ELBO-optimal noise variance from decoded posterior samples.

    Parameters
    ----------
    x : array (N, D)
        The data.
    decoded : array (S, N, D)
        ``f(z)`` for ``S`` draws ``z ~ q(z | x_n)`` per data point (``(N, D)`` means S = 1).

    Returns
    -------
    Tensor (D,)
        Monte Carlo estimate of Eq. 31 of 004, float64, on ``x``'s device.

    References
    ----------
    004 Eq. 9 and Appendix C.2, Eq. 31.
    """
    x_t = as_tensor_2d("x", x, dtype=torch.float64)
    if not isinstance(decoded, torch.Tensor):
        decoded = torch.as_tensor(decoded)
    decoded = decoded.to(device=x_t.device, dtype=torch.float64)
    if decoded.dim() == 2:
        decoded = decoded.unsqueeze(0)
    if decoded.dim() != 3 or decoded.shape[1:] != x_t.shape:
        raise ValueError(
            f"decoded must have shape (S, {x_t.shape[0]}, {x_t.shape[1]}) to match x; got {tuple(decoded.shape)}"
        )
    return ((x_t - decoded) ** 2).mean(dim=(0, 1))


def optimal_noise_var(
    x: ArrayLike,
    f: Callable[[torch.Tensor], torch.Tensor],
    loc: ArrayLike,
    scale: ArrayLike,
    num_samples: int = 100,
    seed: int = 0,
) -> torch.Tensor:
    """ELBO-optimal noise variance for a decoder ``f`` and a mean-field Gaussian encoder.

    Draws ``z = loc + scale * eps`` (``num_samples`` per data point), decodes them without
    gradients and calls :func:`elbo_noise_var`.

    Parameters
    ----------
    x : array (N, D)
        The data.
    f : callable
        Decoder mean, mapping a ``(S, N, K)`` tensor to ``(S, N, D)``. If it is a
        ``torch.nn.Module`` with parameters, the codes take their dtype and device.
    loc, scale : array (N, K)
        Encoder outputs ``q(z | x_n) = N(loc_n, diag(scale_n^2))``.
    num_samples : int
        Draws per data point.
    seed : int
        Seed of the draws.

    Returns
    -------
    Tensor (D,)
        Float64, on the decoder's device.

    References
    ----------
    004 Eq. 9 and Appendix C.2, Eq. 31.
    """
    x_t = as_tensor_2d("x", x)
    dtype, device = decoder_dtype_device(f, x_t)
    x_t = x_t.to(device=device, dtype=dtype)
    loc_t = as_tensor_2d("loc", loc).to(device=device, dtype=dtype)
    scale_t = as_tensor_2d("scale", scale).to(device=device, dtype=dtype)
    if loc_t.shape != scale_t.shape or loc_t.shape[0] != x_t.shape[0]:
        raise ValueError(
            f"loc and scale must both have shape ({x_t.shape[0]}, K); got {tuple(loc_t.shape)} and {tuple(scale_t.shape)}"
        )
    num_samples = check_int("num_samples", num_samples, minimum=1)
    gen = torch.Generator(device=loc_t.device).manual_seed(seed)
    eps = torch.randn((num_samples, *loc_t.shape), generator=gen, dtype=loc_t.dtype, device=loc_t.device)
    with torch.no_grad():
        decoded = f(loc_t + scale_t * eps)
    return elbo_noise_var(x_t, decoded)
