"""Amortised normalising-flow guide: a rich variational family (004 §9, guidelines 1, 3, 4).

``q_φ(z | x)`` is the push-forward of ``u ~ N(0, I_K)`` through ``num_layers`` rounds of

1. an element-wise monotonic rational-linear spline (Dolatabadi et al. 2020; Pyro's
   :class:`~pyro.distributions.transforms.spline.ConditionedSpline`) on ``[−bound, bound]``
   (the identity outside), whose bin widths, heights, derivatives and λs are outputs of a
   conditioner network of ``x``;
2. when K ≥ 2, an affine coupling layer (Dinh et al. 2017; Pyro's
   :class:`~pyro.distributions.transforms.AffineCoupling`) whose shift and log-scale for the
   second half of ``z`` come from a network of ``(first half, x)``, followed by a reversal of
   the coordinates so the next round couples the other way;

and finally the affine map ``z = loc(x) + scale(x) · u`` (loc and scale from the
conditioner, as in :class:`~guides.mean_field.MeanFieldGuide`). The splines make each
coordinate's distribution arbitrary (e.g. the bimodal posteriors of the Absolute-Value
example, 004 §6), the couplings make the coordinates dependent (e.g. LinearJTE's correlated
Gaussian posteriors, 000 Eq. 24).

Every network is a :class:`pyro_vae.nets.MLP`, so ``num_restarts=R`` gives R independent
flows in one batch: the conditioner maps ``x`` (N, D) to parameters of shape (R, N, ·), and
the transforms broadcast over leading sample dimensions (particles). The site ``"z"`` is
sampled by ``rsample`` inside the plates ``"restarts"`` (dim −2, when batched) and
``"data"`` (dim −1), so the ELBO, IWAE and β-ELBO objectives of
:mod:`pyro_vae.inference.objectives` and every method accept it. All transforms cache their
last input/output pair, so scoring a draw (``log_prob`` right after ``rsample``) inverts
nothing.

The guide deliberately has no ``distribution(x)`` method (that name promises a diagonal
Normal to the rest of the package, e.g. the encoder's mutual information); use
:meth:`FlowGuide.flow_distribution`. The importance-sampled log-likelihood traces the guide's
``"z"`` site instead, and uses the flow as it is (no variance inflation).
"""

from __future__ import annotations

from typing import Sequence

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions.transforms import AffineCoupling, AffineTransform, Permute
from pyro.distributions.transforms.spline import ConditionedSpline
from torch import nn
from torch.nn.functional import softmax, softplus

from pyro_vae.models import data_plates, register
from pyro_vae.nets import MLP, BatchedLinear

MIN_SCALE = 1e-5
INIT_OUTPUT_SCALE = 0.01  # last layers start near zero: the flow starts near N(loc(x), scale(x)²)


def _shrink_last_layer(net: MLP, factor: float) -> None:
    last = [m for m in net.net if isinstance(m, BatchedLinear)][-1]
    with torch.no_grad():
        last.weight.mul_(factor)
        last.bias.mul_(factor)


class _CouplingNet:
    """``z₁ ↦ (shift, log_scale)`` for the second block, conditioned on ``x``."""

    def __init__(self, net: MLP, x: torch.Tensor, out: int):
        self.net, self.x, self.out = net, x, out

    def __call__(self, z1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.x.expand(*z1.shape[:-1], self.x.shape[-1])
        h = self.net(torch.cat([z1, x], dim=-1))
        return h[..., : self.out], h[..., self.out :]


class FlowGuide(nn.Module):
    """Pyro guide: ``z ~ q_φ(z | x)``, a conditional spline/coupling flow (see the module doc).

    Parameters
    ----------
    obs_dim, latent_dim : int
    hidden, activation :
        Architecture of the conditioner and coupling networks (:class:`pyro_vae.nets.MLP`).
    num_restarts : int or None
        Independent flows trained in one batch, matching the model's restarts.
    num_layers : int
        Rounds of spline (+ coupling when K ≥ 2).
    count_bins : int
        Spline bins per coordinate.
    bound : float
        The splines act on ``[−bound, bound]`` in the standardised coordinates ``u``.
    name : str
        Prefix of the parameters in Pyro's param store.

    References
    ----------
    004 §9 (use a rich variational family); Dolatabadi et al. (2020) linear rational splines;
    Dinh et al. (2017) affine coupling.
    """

    def __init__(
        self,
        obs_dim: int,
        latent_dim: int,
        hidden: Sequence[int] = (50, 50, 50),
        activation: str = "leaky_relu",
        *,
        num_restarts: int | None = None,
        num_layers: int = 2,
        count_bins: int = 8,
        bound: float = 4.0,
        name: str = "guide",
    ):
        super().__init__()
        for arg, value, low in (("num_layers", num_layers, 1), ("count_bins", count_bins, 2)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{arg}={value!r}: expected an integer >= {low}")
        if not bound > 0:
            raise ValueError(f"bound={bound!r}: expected a positive number")
        k = latent_dim
        self.spline_size = 4 * count_bins - 1  # widths, heights, λs (B each), inner derivatives (B − 1)
        self.encoder = MLP(obs_dim, 2 * k + num_layers * k * self.spline_size, tuple(hidden), activation, num_restarts)
        _shrink_last_layer(self.encoder, INIT_OUTPUT_SCALE)
        self.split = k // 2
        self.couplings = nn.ModuleList()
        if k > 1:
            for _ in range(num_layers):
                net = MLP(self.split + obs_dim, 2 * (k - self.split), tuple(hidden), activation, num_restarts)
                _shrink_last_layer(net, INIT_OUTPUT_SCALE)
                self.couplings.append(net)
        self.obs_dim, self.latent_dim, self.num_restarts, self.name = obs_dim, latent_dim, num_restarts, name
        self.num_layers, self.count_bins, self.bound = num_layers, count_bins, float(bound)

    def _spline(self, raw: torch.Tensor) -> ConditionedSpline:
        b = self.count_bins
        w, h, d, lam = raw.split([b, b, b - 1, b], dim=-1)
        params = (softmax(w, dim=-1), softmax(h, dim=-1), softplus(d), torch.sigmoid(lam))
        return ConditionedSpline(params, bound=self.bound, order="linear")

    def flow_distribution(self, x: torch.Tensor) -> dist.TransformedDistribution:
        """``q_φ(z | x)`` for the rows of ``x`` (N, D): batch ``([R,] N)``, event ``(K,)``."""
        k = self.latent_dim
        out = self.encoder(x)
        loc, raw_scale = out[..., :k], out[..., k : 2 * k]
        splines = out[..., 2 * k :].reshape(*out.shape[:-1], self.num_layers, k, self.spline_size)
        transforms = []
        reverse = torch.arange(k - 1, -1, -1, device=x.device)
        for layer in range(self.num_layers):
            transforms.append(self._spline(splines[..., layer, :, :]))
            if k > 1:
                hyper = _CouplingNet(self.couplings[layer], x, k - self.split)
                transforms += [AffineCoupling(self.split, hyper), Permute(reverse)]
        transforms.append(AffineTransform(loc, softplus(raw_scale) + MIN_SCALE, event_dim=1, cache_size=1))
        zero = torch.zeros_like(loc)
        base = dist.Normal(zero, zero + 1.0).to_event(1)
        return dist.TransformedDistribution(base, transforms)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        register(self.name, self)
        q = self.flow_distribution(x)
        with data_plates(self.num_restarts, x.shape[-2], x.device):
            return pyro.sample("z", q)


def flow_guide(obs_dim: int, latent_dim: int, hidden: Sequence[int], num_restarts: int | None = None) -> FlowGuide:
    """A :class:`FlowGuide` with its defaults (``--guide flow`` resolves to the class itself, see :mod:`guides.registry`)."""
    return FlowGuide(obs_dim, latent_dim, hidden, num_restarts=num_restarts)

