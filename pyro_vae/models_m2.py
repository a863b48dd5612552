"""The semi-supervised "M2" model of Kingma et al. (2014) as a Pyro program (Eq. 10 of 004).

``z ~ N(0, I_K)``, ``y ~ p(y)``, ``x | z, y ~ N(f_θ(z, y), diag σ²)``, where ``y`` is discrete
(one-hot, ``C`` classes, fed one-hot into the decoder) or continuous (``y ~ N(0, 1)``, one
dimension). Sample sites ``"z"``, ``"y"`` (observed when labels are given) and ``"x"`` sit in
the plate ``"data"``; with ``num_restarts=R`` an outer plate ``"restarts"`` (dim −2) holds R
independent models whose weights carry a leading dimension R (see :mod:`pyro_vae.nets`).

Scoring labels: an *observed* label is scored by :class:`~pyro.distributions.OneHotCategorical`
(exact at a one-hot). A *latent* discrete label is drawn from :class:`OneHotOnSimplex`, which
equals ``OneHotCategorical`` at one-hot values (so ``TraceEnum_ELBO`` enumerates it exactly) and
extends the log-mass linearly to the probability simplex, ``log p(v) = Σ_k v_k log p_k``, so
that relaxed (Concrete) draws of a guide can be scored too. The Concrete *density* is never
used for labels: it is NaN at an exact one-hot, and the Concrete-vs-Concrete KL does not tend to
the categorical KL as the temperature goes to 0 (it does not depend on the temperature at all).
"""

from __future__ import annotations

import math
from typing import Sequence

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from torch.distributions.utils import clamp_probs
from torch import nn

from pyro_vae.models import data_plates, register
from pyro_vae.nets import MLP

LABEL_KINDS = ("discrete", "continuous")


class OneHotOnSimplex(dist.OneHotCategorical):
    """``OneHotCategorical`` whose log-mass is extended linearly to the probability simplex.

    ``log_prob(v) = Σ_k v_k log p_k``: the categorical log-mass at one-hot ``v`` (so
    enumeration and observed labels are exact) and a smooth score for relaxed draws.
    """

    support = constraints.simplex

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        return (value * self.logits).sum(-1)


class RelaxedOneHotMass(dist.RelaxedOneHotCategorical):
    """Concrete / Gumbel-softmax draws (Jang et al. 2016; Maddison et al. 2017), reparameterised,
    scored by the categorical log-mass extended linearly, ``log q(v) = Σ_k v_k log q_k``.

    At an exact one-hot the score is the categorical log-mass, so the relaxed objective tends to
    the enumerated one as the temperature goes to 0. Draws are a softmax of the Gumbel-perturbed
    logits (the same draws as torch's, which exponentiates a log-softmax and so, at low
    temperatures in float32, can miss the simplex by more than its validation tolerance).
    """

    def rsample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
        logits = self.logits
        u = clamp_probs(torch.rand(self._extended_shape(sample_shape), dtype=logits.dtype, device=logits.device))
        gumbels = -(-u.log()).log()
        return torch.softmax((logits + gumbels) / self.temperature, dim=-1)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        return (value * self.logits).sum(-1)


class RelaxedOneHotMassStraightThrough(RelaxedOneHotMass):
    """:class:`RelaxedOneHotMass` whose draws are exact one-hots (the argmax of the relaxed
    draw) with the relaxed draw's gradient (straight-through, Bengio et al. 2013)."""

    def rsample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
        soft = super().rsample(sample_shape)
        hard = nn.functional.one_hot(soft.argmax(-1), soft.shape[-1]).to(soft)
        return hard + (soft - soft.detach())


def broadcast_cat(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Concatenate on the last dimension after broadcasting the leading (batch) dimensions."""
    batch = torch.broadcast_shapes(a.shape[:-1], b.shape[:-1])
    return torch.cat([a.expand(*batch, a.shape[-1]), b.expand(*batch, b.shape[-1])], dim=-1)


class _LabelPrior(nn.Module):
    """Holds ``log p(y)`` of a discrete label; a separate module so that
    :func:`pyro_vae.nets.select_restart` leaves it alone."""

    def __init__(self, probs: torch.Tensor):
        super().__init__()
        self.register_buffer("logits", probs.log())


class M2Model(nn.Module):
    """Pyro model ``z ~ N(0, I)``, ``y ~ p(y)``, ``x | z, y ~ N(decoder([z, y]), diag σ²)``.

    Parameters
    ----------
    decoder : nn.Module
        Maps ``(..., [R,] N, K + label_dim)`` inputs ``[z, y]`` to ``(..., R, N, D)`` means.
    latent_dim, obs_dim, label_dim : int
        K, D and the label width (C for one-hot labels, 1 for a continuous label).
    label_kind : {"discrete", "continuous"}
    noise_var : float or sequence of float
        σ², fixed (004 App. D fixes it at the truth's).
    label_probs : sequence of float, optional
        ``p(y)`` of a discrete label (default uniform).
    num_restarts : int or None
    name : str
        Prefix of the parameters in Pyro's param store.

    References
    ----------
    Eq. 4 / Eq. 10 of 004; Kingma et al. (2014), "Semi-supervised learning with deep
    generative models", model M2.
    """

    def __init__(
        self,
        decoder: nn.Module,
        latent_dim: int,
        obs_dim: int,
        label_dim: int,
        label_kind: str,
        noise_var: float | Sequence[float] | torch.Tensor = 0.01,
        *,
        label_probs: Sequence[float] | torch.Tensor | None = None,
        num_restarts: int | None = None,
        name: str = "m2_model",
    ):
        super().__init__()
        if label_kind not in LABEL_KINDS:
            raise ValueError(f"label_kind={label_kind!r}: expected one of {LABEL_KINDS}")
        if label_kind == "continuous" and label_dim != 1:
            raise ValueError(f"label_dim={label_dim!r}: a continuous label has label_dim=1")
        if label_kind == "discrete" and (not isinstance(label_dim, int) or label_dim < 2):
            raise ValueError(f"label_dim={label_dim!r}: a discrete label needs at least 2 classes")
        log_var = torch.as_tensor(noise_var, dtype=torch.get_default_dtype()).log().expand(obs_dim).clone()
        if not torch.isfinite(log_var).all():
            raise ValueError(f"noise_var={noise_var!r}: expected positive variances")
        lead = (1,) if num_restarts is None else (num_restarts, 1)
        self.register_buffer("log_noise_var", log_var.expand(*lead, obs_dim).clone())
        self.restart_buffers = () if num_restarts is None else ("log_noise_var",)  # see nets.select_restart
        if label_kind == "discrete":
            probs = torch.full((label_dim,), 1.0 / label_dim) if label_probs is None else torch.as_tensor(
                label_probs, dtype=torch.get_default_dtype())
            if probs.shape != (label_dim,) or not (probs > 0).all() or abs(float(probs.sum()) - 1) > 1e-5:
                raise ValueError(f"label_probs={label_probs!r}: expected {label_dim} positive numbers summing to 1")
            self.label_prior = _LabelPrior(probs / probs.sum())
        elif label_probs is not None:
            raise ValueError("label_probs: only a discrete label has class probabilities")
        self.decoder = decoder
        self.latent_dim, self.obs_dim, self.label_dim = latent_dim, obs_dim, label_dim
        self.label_kind, self.num_restarts, self.name = label_kind, num_restarts, name

    # ------------------------------------------------------------------ pieces
    def noise_variance(self) -> torch.Tensor:
        """σ² per dimension: ``(1, D)``, or ``(R, 1, D)`` when batched."""
        return self.log_noise_var.exp()

    def label_probs(self) -> torch.Tensor | None:
        """``p(y)`` of a discrete label, shape (C,); None for a continuous label."""
        return self.label_prior.logits.exp() if self.label_kind == "discrete" else None

    def label_distribution(self, like: torch.Tensor, *, observed: bool = False) -> dist.TorchDistribution:
        """``p(y)`` on ``like``'s device: ``OneHotCategorical`` for observed labels,
        :class:`OneHotOnSimplex` for latent ones, ``N(0, 1)`` for a continuous label."""
        if self.label_kind == "continuous":
            zero = like.new_zeros(1)
            return dist.Normal(zero, zero + 1.0).to_event(1)
        logits = self.label_prior.logits.to(like)
        return dist.OneHotCategorical(logits=logits) if observed else OneHotOnSimplex(logits=logits)

    def f(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Decoder mean ``f_θ(z, y)``: ``z`` (..., K) and ``y`` (..., label_dim), broadcast."""
        return self.decoder(broadcast_cat(z, y.to(z)))

    def log_likelihood(self, x: torch.Tensor, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``log p_θ(x | z, y)`` summed over dimensions, broadcast over leading dims."""
        loc = self.f(z, y)
        var = self.noise_variance()
        return (-0.5 * ((x - loc) ** 2 / var + var.log() + math.log(2 * math.pi))).sum(-1)

    # ------------------------------------------------------------------ the program
    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Score ``x`` (N, D), with labels ``y`` (N, label_dim) observed when given."""
        register(self.name, self)
        zero = x.new_zeros(())
        with data_plates(self.num_restarts, x.shape[-2], x.device):
            z = pyro.sample("z", dist.Normal(zero, zero + 1.0).expand([self.latent_dim]).to_event(1))
            y = pyro.sample("y", self.label_distribution(x, observed=y is not None), obs=y)
            loc = self.f(z, y)
            pyro.sample("x", dist.Normal(loc, self.noise_variance().sqrt()).to_event(1), obs=x)
        return loc


def build_m2_model(
    latent_dim: int,
    obs_dim: int,
    label_dim: int,
    label_kind: str,
    noise_var: float | Sequence[float] | torch.Tensor,
    *,
    hidden: Sequence[int] = (50, 50, 50),
    activation: str = "leaky_relu",
    label_probs: Sequence[float] | torch.Tensor | None = None,
    num_restarts: int | None = None,
) -> M2Model:
    """An :class:`M2Model` with an MLP decoder on ``[z, y]`` (004 App. D architecture)."""
    decoder = MLP(latent_dim + label_dim, obs_dim, tuple(hidden), activation, num_restarts)
    return M2Model(decoder, latent_dim, obs_dim, label_dim, label_kind, noise_var,
                   label_probs=label_probs, num_restarts=num_restarts)
