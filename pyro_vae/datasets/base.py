"""The :class:`Dataset` base class: a known generative process ``z ~ p(z)``, ``x|z ~ N(f(z), v)``.

A data set knows its decoder mean function ``f``, its per-dimension observation noise
variance ``v`` (``obs_noise_var``), its prior, and how to draw seeded train/val/test splits.
Its ground-truth ``model`` is a Pyro program with sample sites ``"z"`` and ``"x"`` inside the
plate ``"data"``. Subclasses implement :meth:`Dataset.true_f` (and set the class attributes).
"""

from __future__ import annotations

import inspect
import math
from typing import Any, NamedTuple

import pyro
import pyro.distributions as dist
import torch

from pyro_vae import checks
from pyro_vae.datasets import surrogate as _surrogate


class Split(NamedTuple):
    """One part of a data set: observations ``x`` (N, D) and the true latents ``z`` (N, K)."""

    x: torch.Tensor
    z: torch.Tensor


class LabelledSplit(NamedTuple):
    """One part of a semi-supervised data set.

    ``y`` holds every label (the truth); ``labelled`` (N,) marks the labels a learner may see.
    """

    x: torch.Tensor
    z: torch.Tensor
    y: torch.Tensor
    labelled: torch.Tensor


class Splits(NamedTuple):
    """Train, validation and test parts of a data set."""

    train: Split | LabelledSplit
    val: Split | LabelledSplit
    test: Split | LabelledSplit


def check_range(name: str, value: Any, low: float, high: float, *, hint: str = "") -> float:
    """Return ``float(value)`` if it lies in ``[low, high)``, else raise ValueError naming both."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        v = float("nan")
    if not low <= v < high:
        raise ValueError(f"{name}={value!r}: expected a number in [{low:g}, {high:g}){hint}")
    return v


def check_positive(name: str, value: Any) -> float:
    """Return ``float(value)`` if it is a finite number > 0, else raise ValueError."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        v = float("nan")
    if not (0 < v < math.inf):
        raise ValueError(f"{name}={value!r}: expected a number in (0, inf)")
    return v


def check_positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}={value!r}: expected a positive integer")
    return value


def check_seed(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed={seed!r}: expected a non-negative integer")
    return seed


class Dataset:
    """A synthetic benchmark with a known ground-truth generative process.

    Attributes
    ----------
    name, paper : str
        Registry name and the paper/equation it implements.
    latent_dim, obs_dim : int
        K and D.
    noise_var : float
        The paper's σ² (``obs_noise_var()`` gives the actual per-dimension variance of x|z).
    prior : str
        ``"normal"`` (N(0, I)) or ``"uniform"`` (U(0, 1)^K).
    conditions : str
        Which conditions of 004 Section 5.1 the process triggers: "1 and 2", "1 only",
        "2 only", "neither" or "n/a".
    sizes : tuple of int
        Train/validation/test sizes (004: 5000/2000/2000; 000: 500/500/500).

    Parameters
    ----------
    surrogate : bool
        Generate from an MLP fitted to ``f`` (MSE < 1e-4) instead of ``f`` itself, as the
        papers do (004 App. G/H introduction; 000 App. E, Mobius). Only where
        ``supports_surrogate`` is true. The fit is cached on disk (see
        :mod:`pyro_vae.datasets.surrogate`) and made on the first call of ``f``.
    surrogate_max_steps : int
        Optimisation budget of the surrogate fit (a warning names the MSE if it misses 1e-4).
    surrogate_seed : int
        Seed of the surrogate's initialisation and training inputs.
    cache_dir : str or None
        Where fitted surrogates live (default: ``$PYRO_VAE_CACHE`` or ``~/.cache/pyro-vae``).
    """

    name: str = ""
    latent_dim: int = 1
    obs_dim: int = 2
    noise_var: float = 0.01
    prior: str = "normal"
    paper: str = ""
    conditions: str = "n/a"
    sizes: tuple[int, int, int] = (5000, 2000, 2000)
    supports_surrogate: bool = False

    def __init__(
        self,
        surrogate: bool = False,
        surrogate_max_steps: int = 20000,
        surrogate_seed: int = 0,
        cache_dir: str | None = None,
    ):
        if not isinstance(surrogate, bool):
            raise ValueError(f"surrogate={surrogate!r}: expected True or False")
        if surrogate and not self.supports_surrogate:
            raise ValueError(
                f"surrogate=True: data set {self.name!r} has no surrogate network in the papers; "
                f"expected surrogate=False"
            )
        self.surrogate = surrogate
        self.surrogate_max_steps = check_positive_int("surrogate_max_steps", surrogate_max_steps)
        self.surrogate_seed = check_seed(surrogate_seed)
        self.cache_dir = cache_dir
        self.surrogate_mse: float | None = None
        self._net: torch.nn.Module | None = None
        self.params: dict[str, Any] = {}

    # ------------------------------------------------------------------ the process
    def true_f(self, z: torch.Tensor) -> torch.Tensor:
        """The paper's decoder mean function, (..., K) -> (..., D)."""
        raise NotImplementedError

    def f(self, z: torch.Tensor) -> torch.Tensor:
        """Decoder mean used to generate data: ``true_f``, or its fitted surrogate network."""
        if self.surrogate:
            return self.surrogate_net(z)(z)
        return self.true_f(z)

    def obs_noise_var(self, device=None, dtype=None) -> torch.Tensor:
        """Per-dimension variance of ``x | z``, shape (D,)."""
        return torch.full((self.obs_dim,), self.noise_var, device=device, dtype=dtype or torch.float32)

    def prior_distribution(self, like: torch.Tensor) -> dist.TorchDistribution:
        """``p(z)`` with event shape (K,) on ``like``'s device and dtype."""
        lo = like.new_zeros(self.latent_dim)
        hi = like.new_ones(self.latent_dim)
        if self.prior == "uniform":
            return dist.Uniform(lo, hi).to_event(1)
        return dist.Normal(lo, hi).to_event(1)

    def model(self, x: torch.Tensor | None = None, n: int | None = None, *, device=None) -> torch.Tensor:
        """Ground-truth Pyro program: ``z ~ p(z)``, ``x ~ N(f(z), diag(obs_noise_var))``.

        Give observations ``x`` (N, D), or a number ``n`` of points to generate (on ``device``).
        """
        like = self._like(x, n, device)
        num = x.shape[0] if x is not None else n
        scale = self.obs_noise_var(like.device, like.dtype).sqrt()
        with pyro.plate("data", num, device=like.device):
            z = pyro.sample("z", self.prior_distribution(like))
            return pyro.sample("x", dist.Normal(self.f(z), scale).to_event(1), obs=x)

    @staticmethod
    def _like(x: torch.Tensor | None, n: int | None, device) -> torch.Tensor:
        if x is None and n is None:
            raise ValueError("model(x=None, n=None): give observations x or a number of points n")
        if x is not None:
            if x.dim() != 2:
                raise ValueError(f"x.shape={tuple(x.shape)}: expected (N, D)")
            return x.new_zeros(())
        check_positive_int("n", n)
        return torch.zeros((), device=device)

    # ------------------------------------------------------------------ drawing data
    def _draw_z(self, n: int, gen: torch.Generator) -> torch.Tensor:
        if self.prior == "uniform":
            return torch.rand(n, self.latent_dim, generator=gen)
        return torch.randn(n, self.latent_dim, generator=gen)

    def _draw(self, n: int, gen: torch.Generator) -> tuple[torch.Tensor, ...]:
        """Draw ``(x, z)`` on the CPU from ``gen`` (the order of draws defines the data)."""
        z = self._draw_z(n, gen)
        eps = torch.randn(n, self.obs_dim, generator=gen)
        with torch.no_grad():
            x = self.f(z) + eps * self.obs_noise_var().sqrt()
        return x, z

    def sample(self, n: int, seed: int, device="cpu") -> tuple[torch.Tensor, ...]:
        """Draw ``n`` points: ``(x, z)`` as float32 tensors, the same for the same ``seed``.

        ``n`` whose arrays cannot fit in the available memory is refused (with the estimate)."""
        check_positive_int("n", n)
        checks.require_memory("n", n, checks.sample_bytes(n, self.obs_dim + self.latent_dim + 1))
        gen = torch.Generator().manual_seed(check_seed(seed))
        return tuple(t.to(device) for t in self._draw(n, gen))

    def _make_split(self, part: tuple[torch.Tensor, ...], gen: torch.Generator):
        return Split(*part)

    def splits(self, seed: int = 0, device="cpu") -> Splits:
        """Train/val/test parts of sizes ``self.sizes``; ``seed`` is the paper's data version."""
        gen = torch.Generator().manual_seed(check_seed(seed))
        data = self._draw(sum(self.sizes), gen)
        parts, start = [], 0
        for size in self.sizes:
            part = tuple(t[start : start + size].to(device) for t in data)
            parts.append(self._make_split(part, gen))
            start += size
        return Splits(*parts)

    # ------------------------------------------------------------------ extras
    def marginal(self) -> torch.distributions.MultivariateNormal | None:
        """Closed-form ``p(x)`` (float64) for linear-Gaussian processes, else ``None``."""
        return None

    def decoder_family(self, num_restarts: int | None = None) -> torch.nn.Module | None:
        """The paper's parametric likelihood family (000 App. E), or ``None`` for an MLP."""
        return None

    # ------------------------------------------------------------------ surrogate
    def _surrogate_spec(self):
        """``(in_dim, out_dim, fn, sample_inputs)`` of the function the surrogate fits."""

        def inputs(n: int, gen: torch.Generator) -> torch.Tensor:
            return self._draw_z(n, gen)

        return self.latent_dim, self.obs_dim, self.true_f, inputs

    def surrogate_net(self, like: torch.Tensor | None = None) -> torch.nn.Module:
        """The fitted surrogate MLP (fitted or loaded on first use), on ``like``'s device/dtype."""
        if self._net is None:
            in_dim, out_dim, fn, inputs = self._surrogate_spec()
            key = {"name": self.name, "params": self.params, "in": in_dim, "out": out_dim}
            self._net, self.surrogate_mse = _surrogate.load_or_fit(
                key, fn, in_dim, out_dim, inputs,
                max_steps=self.surrogate_max_steps, seed=self.surrogate_seed, cache_dir=self.cache_dir,
            )
        if like is not None:
            self._net.to(device=like.device, dtype=like.dtype)
        return self._net

    # ------------------------------------------------------------------ bookkeeping
    @classmethod
    def param_names(cls) -> list[str]:
        """Keyword parameters accepted by the constructor (its own and its bases').

        The surrogate options are listed only where ``supports_surrogate`` is true.
        """
        names: list[str] = []
        surrogate_options = list(inspect.signature(Dataset.__init__).parameters)[1:]
        for klass in cls.__mro__:
            init = klass.__dict__.get("__init__")
            if init is None:
                continue
            for p in inspect.signature(init).parameters.values():
                if p.name != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in names:
                    names.append(p.name)
        if not cls.supports_surrogate:
            names = [n for n in names if n not in surrogate_options]
        return names

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"{type(self).__name__}({args})" if args else f"{type(self).__name__}()"
