"""Closed forms for linear-Gaussian models ``x = W z + b + ε``, ``z ~ N(0, I_K)``, ``ε ~ N(0, diag ψ)``.

Everything the 000 pedagogical examples (App. C) compute by hand, for any ``W`` (D × K):

- the marginal ``p_θ(x) = N(b, W Wᵀ + Ψ)`` (000 App. C.1, C.2);
- the posterior ``p_θ(z | x) = N(Σ Wᵀ Ψ⁻¹ (x − b), Σ)``, ``Σ = (I + Wᵀ Ψ⁻¹ W)⁻¹`` (000 Eqs. 23-24,
  with ``W = Cholesky(AAᵀ + B)`` and ``Ψ = σ²I − B`` there);
- the best mean-field Gaussian to that posterior, variance ``1 / (Σ⁻¹)_ii`` and the
  posterior mean (000 App. C.3, Eqs. 25-27), and its KL to the posterior, which does not
  depend on ``x``: the posterior matching objective (PMO) at the optimal mean-field guide;
- the optimal mean-field ELBO ``log p_θ(x) − PMO*``, the MLE objective
  ``KL(p_data ‖ p_θ)`` between Gaussians (000 Eq. 2, 004 Eq. 3);
- the mutual information ``I_θ(X; Z) = ½ [log det(W Wᵀ + Ψ) − Σ_d log ψ_d]`` (000 Eqs. 15, 22;
  Eq. 15's trailing "− 4" is a typo: for x = θz + ε it reads ½ log(σ²/(σ² − θ²))).

:func:`linear_gaussian_params` reads ``(W, b, ψ)`` off a data set or a model whose decoder
is linear. All results are float64.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import torch

__all__ = [
    "GaussianPosterior",
    "LinearGaussian",
    "gaussian_kl",
    "linear_gaussian_params",
    "marginal",
    "mean_field_kl",
    "mean_field_optimum",
    "mutual_information",
    "mleo",
    "optimal_mean_field_elbo",
    "optimal_pmo",
    "posterior",
]

_LOG_2PI = math.log(2 * math.pi)


class LinearGaussian(NamedTuple):
    """``x = W z + b + ε``: ``W`` (D, K), ``b`` (D,), ``psi`` (D,) the noise variances, float64."""

    W: torch.Tensor
    b: torch.Tensor
    psi: torch.Tensor


class GaussianPosterior(NamedTuple):
    """``p_θ(z | x_n) = N(mean_n, cov)``: ``mean`` (N, K); ``cov`` (K, K) is the same for every x."""

    mean: torch.Tensor
    cov: torch.Tensor


def _params(W, b=None, psi=None) -> LinearGaussian:
    if isinstance(W, LinearGaussian):
        return W
    W = torch.as_tensor(W, dtype=torch.float64)
    if W.dim() != 2:
        raise ValueError(f"W of shape {tuple(W.shape)}: expected (D, K)")
    d = W.shape[0]
    b = torch.zeros(d, dtype=torch.float64) if b is None else torch.as_tensor(b, dtype=torch.float64).reshape(-1)
    if psi is None:
        raise ValueError("psi=None: give the noise variances (a scalar or D values)")
    psi = torch.as_tensor(psi, dtype=torch.float64).reshape(-1).expand(d).clone()
    if b.shape != (d,):
        raise ValueError(f"b of shape {tuple(b.shape)}: expected ({d},)")
    if not bool((psi > 0).all()):
        raise ValueError(f"psi={psi.tolist()}: expected positive noise variances")
    return LinearGaussian(W, b.to(W.device), psi.to(W.device))


def marginal(params: LinearGaussian) -> torch.distributions.MultivariateNormal:
    """``p_θ(x) = N(b, W Wᵀ + diag ψ)`` (000 App. C.1 Eq. 13, App. C.2 Eq. 20)."""
    W, b, psi = _params(params)
    return torch.distributions.MultivariateNormal(b, W @ W.T + torch.diag(psi))


def posterior_precision(params: LinearGaussian) -> torch.Tensor:
    """``Σ⁻¹ = I + Wᵀ Ψ⁻¹ W`` (K, K)."""
    W, _, psi = _params(params)
    return torch.eye(W.shape[1], dtype=W.dtype, device=W.device) + W.T @ (W / psi[:, None])


def posterior(params: LinearGaussian, x: torch.Tensor) -> GaussianPosterior:
    """``p_θ(z | x)``: mean ``Σ Wᵀ Ψ⁻¹ (x − b)`` and covariance ``(I + Wᵀ Ψ⁻¹ W)⁻¹`` (000 Eqs. 23-24).

    Parameters
    ----------
    params : LinearGaussian
    x : Tensor (N, D)

    Returns
    -------
    GaussianPosterior
    """
    W, b, psi = _params(params)
    x = torch.as_tensor(x, dtype=torch.float64, device=W.device)
    if x.dim() != 2 or x.shape[1] != W.shape[0]:
        raise ValueError(f"x of shape {tuple(x.shape)}: expected (N, {W.shape[0]})")
    cov = torch.linalg.inv(posterior_precision(params))
    cov = 0.5 * (cov + cov.T)
    mean = ((x - b) / psi) @ W @ cov
    return GaussianPosterior(mean, cov)


def mean_field_optimum(cov: torch.Tensor) -> torch.Tensor:
    """Variances of the mean-field Gaussian closest to ``N(μ, cov)`` in ``KL(q ‖ p)``: ``1 / (cov⁻¹)_ii``.

    The optimal mean is ``μ`` itself (000 App. C.3, Eqs. 25-27).
    """
    cov = torch.as_tensor(cov, dtype=torch.float64)
    return 1.0 / torch.linalg.inv(cov).diagonal()


def gaussian_kl(mean_q, cov_q, mean_p, cov_p) -> torch.Tensor:
    """``KL(N(mean_q, cov_q) ‖ N(mean_p, cov_p))``; means (..., K) broadcast, covariances (K, K)."""
    mean_q, cov_q, mean_p, cov_p = (torch.as_tensor(t, dtype=torch.float64) for t in (mean_q, cov_q, mean_p, cov_p))
    k = cov_p.shape[-1]
    prec_p = torch.linalg.inv(cov_p)
    diff = mean_p - mean_q
    maha = ((diff @ prec_p) * diff).sum(-1)
    return 0.5 * (torch.logdet(cov_p) - torch.logdet(cov_q) + (prec_p * cov_q.T).sum() + maha - k)


def mean_field_kl(params: LinearGaussian, x: torch.Tensor, q_loc: torch.Tensor, q_var: torch.Tensor) -> torch.Tensor:
    """``KL(q(z|x_n) ‖ p_θ(z|x_n))`` per data point for a diagonal Gaussian ``q`` (N,).

    ``q_loc`` and ``q_var`` are (N, K) or broadcast to it.
    """
    post = posterior(params, x)
    q_loc = torch.as_tensor(q_loc, dtype=torch.float64).expand_as(post.mean)
    q_var = torch.as_tensor(q_var, dtype=torch.float64).expand_as(post.mean)
    prec = torch.linalg.inv(post.cov)
    diff = post.mean - q_loc
    return 0.5 * (
        torch.logdet(post.cov) - q_var.log().sum(-1) + (prec.diagonal() * q_var).sum(-1)
        + ((diff @ prec) * diff).sum(-1) - post.cov.shape[0]
    )


def optimal_pmo(params: LinearGaussian) -> torch.Tensor:
    """The PMO at the best mean-field guide: ``½ [Σ_i log (Σ⁻¹)_ii − log det Σ⁻¹]`` (scalar).

    ``min_q KL(q ‖ p_θ(z|x))`` over diagonal Gaussians is the same for every x (000 App. C.3),
    so it equals ``E_p(x)[KL]``, the posterior matching objective of 004 Eq. 3 / 000 Eq. 2.
    """
    prec = posterior_precision(params)
    return 0.5 * (prec.diagonal().log().sum() - torch.logdet(prec))


def mleo(params: LinearGaussian, data_mean: torch.Tensor, data_cov: torch.Tensor) -> torch.Tensor:
    """MLE objective ``KL(p_data ‖ p_θ)`` for Gaussian ``p_data = N(data_mean, data_cov)`` (000 Eq. 2)."""
    m = marginal(params)
    return gaussian_kl(data_mean, data_cov, m.loc, m.covariance_matrix)


def optimal_mean_field_elbo(
    params: LinearGaussian,
    x: torch.Tensor | None = None,
    *,
    data_mean: torch.Tensor | None = None,
    data_cov: torch.Tensor | None = None,
) -> torch.Tensor:
    """The ELBO at the best mean-field guide, ``log p_θ(x) − PMO*``.

    Per data point (N,) for ``x``; or, for a Gaussian ``p_data = N(data_mean, data_cov)``, its
    expectation ``E_p_data[log p_θ(x)] − PMO* = −H(p_data) − MLEO − PMO*`` (000 Eq. 2).
    """
    params = _params(params)
    pmo = optimal_pmo(params)
    m = marginal(params)
    if x is not None:
        return m.log_prob(torch.as_tensor(x, dtype=torch.float64, device=params.W.device)) - pmo
    if data_mean is None or data_cov is None:
        raise ValueError("give x, or both data_mean and data_cov")
    data_mean = torch.as_tensor(data_mean, dtype=torch.float64)
    data_cov = torch.as_tensor(data_cov, dtype=torch.float64)
    d = data_cov.shape[-1]
    entropy = 0.5 * (d * (1 + _LOG_2PI) + torch.logdet(data_cov))
    return -entropy - mleo(params, data_mean, data_cov) - pmo


def mutual_information(params: LinearGaussian) -> torch.Tensor:
    """``I_θ(X; Z) = ½ [log det(W Wᵀ + Ψ) − Σ_d log ψ_d]`` in nats (000 Eqs. 15, 22).

    Eq. 15 of 000 prints ``½ [log σ²/(σ² − θ²) − 4]``; the "− 4" is a typo (it would make the
    information negative for small θ).
    """
    W, _, psi = _params(params)
    return 0.5 * (torch.logdet(W @ W.T + torch.diag(psi)) - psi.log().sum())


def linear_gaussian_params(
    source,
    *,
    f: Callable[[torch.Tensor], torch.Tensor] | None = None,
    noise_var: torch.Tensor | float | None = None,
    latent_dim: int | None = None,
    atol: float = 1e-5,
) -> LinearGaussian:
    """``(W, b, ψ)`` of a data set or model whose mean function is linear, read off ``f``.

    ``b = f(0)`` and the columns of ``W`` are ``f(e_k) − f(0)``; linearity is checked on random
    points (raises ``ValueError`` if ``f`` is not affine within ``atol``).

    Parameters
    ----------
    source : Dataset, VAEModel or None
        A data set (``f``, ``obs_noise_var()``; its prior must be ``"normal"``) or an unbatched
        model (``decoder``, ``noise_variance()``). ``None`` to pass ``f``, ``noise_var`` and
        ``latent_dim`` directly.
    """
    if source is not None:
        if hasattr(source, "obs_noise_var"):
            if getattr(source, "prior", "normal") != "normal":
                raise ValueError(f"data set {source.name!r} has prior {source.prior!r}: expected 'normal'")
            f, noise_var, latent_dim = source.f, source.obs_noise_var(dtype=torch.float64), source.latent_dim
        elif hasattr(source, "decoder"):
            if getattr(source, "num_restarts", None):
                raise ValueError("model is restart-batched: select one restart first (pyro_vae.nets.select_restart)")
            f, noise_var, latent_dim = source.decoder, source.noise_variance(), source.latent_dim
        else:
            raise ValueError(f"source={source!r}: expected a Dataset, a VAEModel or None")
    if f is None or noise_var is None or latent_dim is None:
        raise ValueError("give a source, or f, noise_var and latent_dim")
    dtype = _function_dtype(f)
    with torch.no_grad():
        eye = torch.cat([torch.zeros(1, latent_dim), torch.eye(latent_dim)]).to(dtype)
        out = f(eye).double()
        b, W = out[0], (out[1:] - out[0]).T
        z = torch.randn(16, latent_dim, generator=torch.Generator().manual_seed(0)).to(dtype)
        err = float((f(z).double() - (z.double() @ W.T + b)).abs().max())
    scale = 1.0 + float(W.abs().max())
    if err > atol * scale:
        raise ValueError(f"f is not linear: it departs from W z + b by {err:.3g} on random points")
    psi = torch.as_tensor(noise_var).detach().double().reshape(-1).expand(W.shape[0])
    return _params(W, b, psi)


def _function_dtype(f) -> torch.dtype:
    if isinstance(f, torch.nn.Module):
        for p in f.parameters():
            return p.dtype
        for buf in f.buffers():
            return buf.dtype if buf.is_floating_point() else torch.get_default_dtype()
    return torch.float64
