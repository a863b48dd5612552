"""The semi-supervised pedagogical examples of 004 Appendix H (data only).

Both have ``z ~ N(0, 1)`` (K = 1), a label ``y``, and
``x | z, y ~ N(f(z, y), 0.01 I)`` on a semi-circle of angle
``w(y) π √Φ(z) + (1 − w(y)) π Φ(z)³`` with weight ``w(y)`` in [0, 1].

Labels: ``discrete_semicircle`` has ``y ~ Bern(1/2)``, stored one-hot (…, 2) (column 0 is
y = 0, whose weight is w = 1); ``continuous_semicircle`` has ``y ~ N(0, 1)`` stored as (…, 1),
with ``w(y) = h(y) = B⁻¹(Φ(y); 0.2, 0.2)``. Each split carries a boolean ``labelled`` mask,
with ``round(labelled_fraction · N)`` labels visible, drawn by the split's seed.
"""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import scipy.special
import torch
from torch.special import ndtr

from pyro_vae.datasets.base import Dataset, LabelledSplit

BETA_AB = 0.2


class _BetaIcdf(torch.autograd.Function):
    """Inverse CDF of Beta(a, b) via ``scipy.special.betaincinv``, with the exact gradient
    ``dh/dp = 1 / pdf(h)`` (implicit differentiation of the CDF)."""

    @staticmethod
    def forward(ctx, p: torch.Tensor, a: float, b: float) -> torch.Tensor:
        h64 = scipy.special.betaincinv(a, b, p.detach().cpu().double().numpy())
        h = torch.as_tensor(h64, dtype=p.dtype, device=p.device)
        ctx.save_for_backward(torch.as_tensor(h64, device=p.device))
        ctx.a, ctx.b = a, b
        return h

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (h,) = ctx.saved_tensors
        a, b = ctx.a, ctx.b
        log_pdf = (a - 1) * torch.log(h) + (b - 1) * torch.log1p(-h) - float(scipy.special.betaln(a, b))
        return grad * torch.exp(-log_pdf).to(grad.dtype), None, None


def beta_icdf(p: torch.Tensor, a: float = BETA_AB, b: float = BETA_AB) -> torch.Tensor:
    """``B⁻¹(p; a, b)``, differentiable in ``p`` (computed on the CPU by SciPy)."""
    return _BetaIcdf.apply(p, a, b)


class _SemiCircle(Dataset):
    """Common parts of the App. H examples: σ² = 0.01, 5000/2000/2000 points.

    Parameters
    ----------
    labelled_fraction : float
        Fraction of every split whose labels are marked visible, in [0, 1] (default 0.1).
    surrogate, surrogate_max_steps, surrogate_seed, cache_dir
        As :class:`~pyro_vae.datasets.base.Dataset`; the surrogate maps ``[z, y]`` to x.
    """

    latent_dim, obs_dim, noise_var, conditions = 1, 2, 0.01, "n/a"
    label_dim: int = 1
    label_kind: str = ""
    supports_surrogate = True

    def __init__(self, labelled_fraction: float = 0.1, surrogate: bool = False,
                 surrogate_max_steps: int = 20000, surrogate_seed: int = 0, cache_dir: str | None = None):
        super().__init__(surrogate, surrogate_max_steps, surrogate_seed, cache_dir)
        try:
            self.labelled_fraction = float(labelled_fraction)
        except (TypeError, ValueError):
            self.labelled_fraction = float("nan")
        if not 0.0 <= self.labelled_fraction <= 1.0:
            raise ValueError(f"labelled_fraction={labelled_fraction!r}: expected a number in [0, 1]")
        self.params = {"labelled_fraction": self.labelled_fraction}

    # subclasses: weight w(y) in [0, 1] of the square-root branch, label prior, label draws
    def weight(self, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def label_distribution(self, like: torch.Tensor) -> dist.TorchDistribution:
        raise NotImplementedError

    def _draw_y(self, n: int, gen: torch.Generator) -> torch.Tensor:
        raise NotImplementedError

    def true_f(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Eqs. 38/39: ``[cos α, sin α]``, ``α = w(y) π √Φ(z) + (1 − w(y)) π Φ(z)³``."""
        phi = ndtr(z)
        w = self.weight(y)
        angle = w * math.pi * torch.sqrt(phi) + (1 - w) * math.pi * phi**3
        return torch.cat([torch.cos(angle), torch.sin(angle)], dim=-1)

    def f(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Decoder mean ``f(z, y)``: (..., 1) and labels (see module doc) -> (..., 2)."""
        if self.surrogate:
            inputs = torch.cat([z, self._label_input(y).to(z)], dim=-1)
            return self.surrogate_net(z)(inputs)
        return self.true_f(z, y)

    def _label_input(self, y: torch.Tensor) -> torch.Tensor:
        return y

    def _surrogate_spec(self):
        def fn(inputs: torch.Tensor) -> torch.Tensor:
            return self.true_f(inputs[..., :1], inputs[..., 1:])

        def inputs(n: int, gen: torch.Generator) -> torch.Tensor:
            return torch.cat([self._draw_z(n, gen), self._draw_y(n, gen)], dim=-1)

        return 1 + self.label_dim, self.obs_dim, fn, inputs

    def model(self, x: torch.Tensor | None = None, n: int | None = None, *, y: torch.Tensor | None = None,
              device=None) -> torch.Tensor:
        """Ground-truth program: sites ``"z"``, ``"y"`` (observed when ``y`` is given), ``"x"``."""
        like = self._like(x, n, device)
        num = x.shape[0] if x is not None else n
        scale = self.obs_noise_var(like.device, like.dtype).sqrt()
        with pyro.plate("data", num, device=like.device):
            z = pyro.sample("z", self.prior_distribution(like))
            y = pyro.sample("y", self.label_distribution(like), obs=y)
            return pyro.sample("x", dist.Normal(self.f(z, y), scale).to_event(1), obs=x)

    def _draw(self, n: int, gen: torch.Generator) -> tuple[torch.Tensor, ...]:
        z = self._draw_z(n, gen)
        y = self._draw_y(n, gen)
        eps = torch.randn(n, self.obs_dim, generator=gen)
        with torch.no_grad():
            x = self.f(z, y) + eps * self.obs_noise_var().sqrt()
        return x, z, y

    def sample(self, n: int, seed: int, device="cpu") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Draw ``n`` points: ``(x, z, y)`` as float32 tensors, deterministic by ``seed``."""
        return super().sample(n, seed, device)

    def _make_split(self, part, gen: torch.Generator) -> LabelledSplit:
        n = part[0].shape[0]
        mask = torch.zeros(n, dtype=torch.bool)
        mask[torch.randperm(n, generator=gen)[: round(self.labelled_fraction * n)]] = True
        return LabelledSplit(*part, labelled=mask.to(part[0].device))


class DiscreteSemiCircle(_SemiCircle):
    """Discrete Semi-Circle, 004 App. H.1, Eq. 38: ``y ~ Bern(1/2)``.

    ``f(z, y)`` takes ``y`` one-hot (..., 2) (column 0 is y = 0; relaxed one-hot values
    interpolate) or as a 0/1 value of shape (..., 1). y = 0 gives the angle π√Φ(z), y = 1
    gives πΦ(z)³.
    """

    name, paper, label_dim, label_kind = "discrete_semicircle", "004 App. H.1, Eq. 38", 2, "discrete"

    def weight(self, y: torch.Tensor) -> torch.Tensor:
        if y.shape[-1] == 2:
            return y[..., :1]
        if y.shape[-1] == 1:
            return 1 - y
        raise ValueError(f"y.shape={tuple(y.shape)}: expected one-hot (..., 2) or 0/1 values (..., 1)")

    def _label_input(self, y: torch.Tensor) -> torch.Tensor:
        return y if y.shape[-1] == 2 else torch.cat([1 - y, y], dim=-1)

    def label_distribution(self, like: torch.Tensor) -> dist.TorchDistribution:
        return dist.OneHotCategorical(probs=like.new_full((2,), 0.5))

    def _draw_y(self, n: int, gen: torch.Generator) -> torch.Tensor:
        label = (torch.rand(n, generator=gen) < 0.5).long()
        return torch.nn.functional.one_hot(label, 2).float()


class ContinuousSemiCircle(_SemiCircle):
    """Continuous Semi-Circle, 004 App. H.2, Eq. 39: ``y ~ N(0, 1)``, shape (..., 1).

    ``h(y) = B⁻¹(Φ(y); 0.2, 0.2)`` is computed by SciPy's ``betaincinv`` (torch has no
    inverse regularised incomplete beta) on the CPU, with an exact custom gradient, so
    ``f(z, y)`` is differentiable in both z and y.
    """

    name, paper, label_dim, label_kind = "continuous_semicircle", "004 App. H.2, Eq. 39", 1, "continuous"

    def weight(self, y: torch.Tensor) -> torch.Tensor:
        return beta_icdf(ndtr(y))

    def label_distribution(self, like: torch.Tensor) -> dist.TorchDistribution:
        return dist.Normal(like.new_zeros(1), like.new_ones(1)).to_event(1)

    def _draw_y(self, n: int, gen: torch.Generator) -> torch.Tensor:
        return torch.randn(n, 1, generator=gen)
