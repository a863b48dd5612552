"""Guides for the M2 model (:mod:`pyro_vae.models_m2`): ``q_φ(y | x) q_φ(z | x, y)``.

``q_φ(z | x, y)`` is a mean-field Gaussian whose encoder reads ``[x, y]`` (Kingma et al. 2014),
or reads ``x`` only with ``z_given_y=False`` — the fully factorised ``q_φ(y | x) q_φ(z | x)``
that Eqs. 13 and 15 of 004 write for U; ``q_φ(y | x)`` is

* :class:`EnumeratedLabelGuide` — categorical, for exact enumeration: wrap it with
  ``pyro.infer.config_enumerate(guide, "parallel")`` and use ``TraceEnum_ELBO``, or let
  :mod:`pyro_vae.inference.m2` enumerate the classes explicitly;
* :class:`RelaxedLabelGuide` — a relaxed categorical (Concrete / Gumbel-softmax, temperature
  2.2 as in 004 App. D), reparameterised, optionally straight-through, scored by the
  categorical log-mass (see :mod:`pyro_vae.models_m2`); works with ``Trace_ELBO``;
* :class:`GaussianLabelGuide` — ``N(μ_φ(x), σ_φ(x)²)`` for a continuous label.

Called with labels ``guide(x, y)`` a guide samples only ``"z"`` (labelled data); called as
``guide(x)`` it samples ``"y"`` and then ``"z"``. All three work with the same
:class:`~pyro_vae.models_m2.M2Model`, restart-batched or not.
"""

from __future__ import annotations

from typing import Sequence

import pyro
import pyro.distributions as dist
import torch
from torch import nn
from torch.nn.functional import log_softmax, softplus

from pyro_vae.models import data_plates, register
from pyro_vae.models_m2 import RelaxedOneHotMass, RelaxedOneHotMassStraightThrough, broadcast_cat
from pyro_vae.nets import MLP

MIN_SCALE = 1e-5
PAPER_TEMPERATURE = 2.2  # 004 Appendix D


class _M2Guide(nn.Module):
    """Shared parts: the label network (``classifier``) and the ``[x, y] → z`` encoder."""

    label_kind = "discrete"
    enumerates_labels = False

    def __init__(
        self,
        obs_dim: int,
        latent_dim: int,
        label_dim: int,
        hidden: Sequence[int] = (50, 50, 50),
        activation: str = "leaky_relu",
        *,
        z_given_y: bool = True,
        num_restarts: int | None = None,
        name: str = "m2_guide",
    ):
        super().__init__()
        label_out = 2 if self.label_kind == "continuous" else label_dim
        if self.label_kind == "continuous" and label_dim != 1:
            raise ValueError(f"label_dim={label_dim!r}: a continuous label has label_dim=1")
        if self.label_kind == "discrete" and (not isinstance(label_dim, int) or label_dim < 2):
            raise ValueError(f"label_dim={label_dim!r}: a discrete label needs at least 2 classes")
        if not isinstance(z_given_y, bool):
            raise ValueError(f"z_given_y={z_given_y!r}: expected True or False")
        self.classifier = MLP(obs_dim, label_out, tuple(hidden), activation, num_restarts)
        encoder_in = obs_dim + label_dim if z_given_y else obs_dim
        self.encoder = MLP(encoder_in, 2 * latent_dim, tuple(hidden), activation, num_restarts)
        self.obs_dim, self.latent_dim, self.label_dim = obs_dim, latent_dim, label_dim
        self.z_given_y, self.num_restarts, self.name = z_given_y, num_restarts, name

    def latent_distribution(self, x: torch.Tensor, y: torch.Tensor) -> dist.Normal:
        """``q_φ(z | x, y)`` as a batched Normal ``(..., [R,] N, K)`` (``x``, ``y`` broadcast);
        ``q_φ(z | x)`` broadcast to ``y``'s batch shape when the guide has ``z_given_y=False``."""
        if self.z_given_y:
            out = self.encoder(broadcast_cat(x, y.to(x)))
        else:
            out = self.encoder(x)
            batch = torch.broadcast_shapes(out.shape[:-1], y.shape[:-1])
            out = out.expand(*batch, out.shape[-1])
        k = self.latent_dim
        return dist.Normal(out[..., :k], softplus(out[..., k:]) + MIN_SCALE)

    def label_distribution(self, x: torch.Tensor) -> dist.TorchDistribution:
        """``q_φ(y | x)``: a categorical ``OneHotCategorical`` (batch ``([R,] N)``, event C)."""
        return dist.OneHotCategorical(logits=log_softmax(self.classifier(x), -1))

    def label_log_prob(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``log q_φ(y | x)`` of observed labels, ``([R,] N)`` — the classifier term of Eq. 5."""
        return (y.to(x) * log_softmax(self.classifier(x), -1)).sum(-1)

    def _label_site(self, x: torch.Tensor) -> tuple[dist.TorchDistribution, dict]:
        raise NotImplementedError

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Sample ``"y"`` (unless given) and ``"z"`` for ``x`` (N, D); returns ``z``."""
        register(self.name, self)
        with data_plates(self.num_restarts, x.shape[-2], x.device):
            if y is None:
                fn, infer = self._label_site(x)
                y = pyro.sample("y", fn, infer=infer)
            return pyro.sample("z", self.latent_distribution(x, y).to_event(1))


class EnumeratedLabelGuide(_M2Guide):
    """Categorical ``q_φ(y | x)`` for exact enumeration over the C classes.

    Sampled as is it is not reparameterisable; enumerate it (``config_enumerate`` +
    ``TraceEnum_ELBO``, or :func:`pyro_vae.inference.m2.unlabelled_bound`).
    """

    enumerates_labels = True

    def _label_site(self, x):
        return self.label_distribution(x), {}


class RelaxedLabelGuide(_M2Guide):
    """Relaxed-categorical ``q_φ(y | x)`` at ``temperature`` (Jang et al. 2016; 004 App. D).

    Parameters
    ----------
    temperature : float
        Concrete temperature (default 2.2, 004 App. D).
    straight_through : bool
        Draw exact one-hots with the relaxed gradient.
    """

    def __init__(self, obs_dim: int, latent_dim: int, label_dim: int, hidden: Sequence[int] = (50, 50, 50),
                 activation: str = "leaky_relu", *, temperature: float = PAPER_TEMPERATURE,
                 straight_through: bool = False, z_given_y: bool = True, num_restarts: int | None = None,
                 name: str = "m2_guide"):
        super().__init__(obs_dim, latent_dim, label_dim, hidden, activation, z_given_y=z_given_y,
                         num_restarts=num_restarts, name=name)
        if not (isinstance(temperature, (int, float)) and 0 < temperature < float("inf")):
            raise ValueError(f"temperature={temperature!r}: expected a positive number")
        self.temperature, self.straight_through = float(temperature), bool(straight_through)

    def _label_site(self, x):
        cls = RelaxedOneHotMassStraightThrough if self.straight_through else RelaxedOneHotMass
        temperature = torch.tensor(self.temperature, dtype=x.dtype, device=x.device)
        return cls(temperature, logits=log_softmax(self.classifier(x), -1)), {}


class GaussianLabelGuide(_M2Guide):
    """``q_φ(y | x) = N(μ_φ(x), σ_φ(x)²)`` for a continuous label (004 App. H.2)."""

    label_kind = "continuous"

    def __init__(self, obs_dim: int, latent_dim: int, label_dim: int = 1, hidden: Sequence[int] = (50, 50, 50),
                 activation: str = "leaky_relu", *, z_given_y: bool = True, num_restarts: int | None = None,
                 name: str = "m2_guide"):
        super().__init__(obs_dim, latent_dim, label_dim, hidden, activation, z_given_y=z_given_y,
                         num_restarts=num_restarts, name=name)

    def label_distribution(self, x: torch.Tensor) -> dist.TorchDistribution:
        """``q_φ(y | x)`` as ``Normal`` with event shape (1,)."""
        out = self.classifier(x)
        return dist.Normal(out[..., :1], softplus(out[..., 1:]) + MIN_SCALE).to_event(1)

    def label_log_prob(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.label_distribution(x).log_prob(y.to(x))

    def _label_site(self, x):
        return self.label_distribution(x), {}


GUIDE_KINDS = {"enum": EnumeratedLabelGuide, "relaxed": RelaxedLabelGuide, "gaussian": GaussianLabelGuide}


def build_m2_guide(
    kind: str,
    obs_dim: int,
    latent_dim: int,
    label_dim: int,
    *,
    hidden: Sequence[int] = (50, 50, 50),
    temperature: float = PAPER_TEMPERATURE,
    straight_through: bool = False,
    z_given_y: bool = True,
    num_restarts: int | None = None,
) -> _M2Guide:
    """``kind`` is ``"enum"``, ``"relaxed"`` (discrete labels) or ``"gaussian"`` (continuous)."""
    if kind not in GUIDE_KINDS:
        raise ValueError(f"guide={kind!r}: expected one of {sorted(GUIDE_KINDS)}")
    if kind == "relaxed":
        return RelaxedLabelGuide(obs_dim, latent_dim, label_dim, hidden, temperature=temperature,
                                 straight_through=straight_through, z_given_y=z_given_y, num_restarts=num_restarts)
    return GUIDE_KINDS[kind](obs_dim, latent_dim, label_dim, hidden, z_given_y=z_given_y, num_restarts=num_restarts)
