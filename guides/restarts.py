"""Independent restarts of any single guide, trained in one batch (see ``guides/README.md``).

The models of :mod:`pyro_vae.models` run ``R`` restarts as a batch: their sites sit in the
plates ``"restarts"`` (dim −2) and ``"data"`` (dim −1) and their parameters carry a leading
dimension of size R. A guide for such a model must give each restart its own ``q(z | x)``.
The built-in guides do it with restart-batched networks (``num_restarts=R``); any other guide
module — a ``torch.nn.Module`` or a ``PyroModule`` written for one run — is batched here:

>>> guide = batch_restarts(StudentTGuide, 3, obs_dim=2, latent_dim=1)   # doctest: +SKIP

:class:`RestartBatch` holds R copies made by calling the factory R times (so each starts from
its own initialisation), runs each copy on the same arguments, and presents their sample
sites as one site per name whose batch has the restarts at dim −2: the value of restart r is
copy r's draw and its log-density is copy r's. Restart r draws its noise from its own random
stream, derived from one draw of Pyro's global generator per call and from r, so restart r of
a batch is exactly the single run ``RestartBatch([copy_r], restart_ids=[r])`` with the same
seed (tested), and no two restarts share a parameter or a draw.

What cannot be batched is refused with one error: a plain function (its ``pyro.param``
statements live in Pyro's global param store, so R "copies" would share them), a factory that
returns the same module twice or modules sharing parameters, and Pyro's ``AutoGuide``s (they
learn one q per data point of a fixed data set, not an amortised ``q(z | x)``).
:func:`check_restart_guide` is the guard the trainer runs: a model with R > 1 restarts and a
guide whose sites are not in the plate ``"restarts"`` would share one guide across restarts.

Copies that are ``PyroModule``s are built and run with Pyro's ``module_local_params=True``, so
their parameters stay in the modules (two instances of the same class would otherwise share
the global param store's entries by name). The ``pyro.param`` sites of copy r are renamed
``"restart{r}/NAME"``, so ``pyro.infer.SVI`` with a Pyro optimiser also sees every copy's
parameters.
"""

from __future__ import annotations

import contextlib
import copy
import warnings
from typing import Any, Callable, Sequence

import numpy as np
import pyro
import pyro.poutine as poutine
import torch
from pyro.distributions import TorchDistribution
from torch.distributions import biject_to
from pyro.poutine.broadcast_messenger import BroadcastMessenger
from pyro.poutine.indep_messenger import CondIndepStackFrame, IndepMessenger
from pyro.poutine.messenger import Messenger
from pyro.poutine.runtime import _PYRO_STACK
from pyro.poutine.util import site_is_subsample
from torch import nn

__all__ = [
    "RestartBatch",
    "batch_restarts",
    "check_restart_guide",
    "is_restart_aware",
    "local_params",
    "LocalParams",
]

RESTARTS_PLATE, RESTARTS_DIM = "restarts", -2


# --------------------------------------------------------------------------- refusals
def autoguide_error(obj: Any) -> ValueError | None:
    """The error for a Pyro AutoGuide (class or instance), or None for anything else."""
    from pyro.infer.autoguide import AutoGuide

    is_auto = isinstance(obj, AutoGuide) or (isinstance(obj, type) and issubclass(obj, AutoGuide))
    if not is_auto:
        return None
    name = obj.__name__ if isinstance(obj, type) else type(obj).__name__
    return ValueError(
        f"guide {name} is a Pyro AutoGuide: it learns one q(z) per data point of the data it first saw "
        "(parameters of shape (N, K)), not an amortised q(z | x), so it cannot score new minibatches, "
        "validation or test points. Use an amortised guide: 'mean_field' (guides.mean_field:MeanFieldGuide), "
        "'flow', or your own module that maps x to the parameters of q(z | x) (see guides/README.md)"
    )


def _not_a_module_error(obj: Any, num_restarts: int) -> ValueError:
    kind = type(obj).__name__
    return ValueError(
        f"guide {getattr(obj, '__qualname__', kind)!r} is a {kind}, not a torch.nn.Module: its pyro.param "
        f"statements live in Pyro's global param store, so {num_restarts} restarts would share them. Write it as "
        "an nn.Module or PyroModule (a class or a factory that returns a new one per call; see guides/README.md), "
        "or train it with one restart"
    )


# --------------------------------------------------------------------------- PyroModule parameters
def local_params():
    """Pyro's ``module_local_params=True`` for the block: PyroModule parameters stay in their modules."""
    return pyro.settings.context(module_local_params=True)


def _is_pyro_module(module: Any) -> bool:
    from pyro.nn import PyroModule

    return isinstance(module, nn.Module) and any(isinstance(m, PyroModule) for m in module.modules())


class LocalParams(nn.Module):
    """Run a ``PyroModule`` guide with ``module_local_params=True`` (see the module docstring).

    Without it two PyroModule guides of the same class read and write the same entries of
    Pyro's global param store, so a run could start from another run's trained values.
    """

    def __init__(self, guide: nn.Module):
        super().__init__()
        self.guide = guide

    def forward(self, *args, **kwargs):
        with local_params():
            return self.guide(*args, **kwargs)

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self._modules["guide"], name)


def construct(factory: Callable[..., Any], *args, **kwargs) -> Any:
    """``factory(*args, **kwargs)`` with PyroModule parameters kept local; PyroModules come back wrapped."""
    with local_params():
        guide = factory(*args, **kwargs)
    return LocalParams(guide) if _is_pyro_module(guide) and not isinstance(guide, LocalParams) else guide


# --------------------------------------------------------------------------- stacked sites
class _Stacked(TorchDistribution):
    """Per-restart distributions of one site as one batch, with restarts at batch dim −2.

    Holds the draws the copies made; ``rsample()`` returns them (so their gradients flow to
    the copies' parameters) and ``log_prob(v)`` scores slice r of ``v`` under copy r's
    distribution.
    """

    arg_constraints: dict = {}

    def __init__(self, parts: Sequence, values: torch.Tensor, event_dim: int):
        self.parts, self.values, self._event_dim = list(parts), values, event_dim
        batch = values.shape[: values.dim() - event_dim]
        event = values.shape[values.dim() - event_dim :]
        self._rsample = all(p.has_rsample for p in self.parts)
        super().__init__(batch, event, validate_args=False)

    @property
    def has_rsample(self) -> bool:
        return self._rsample

    @has_rsample.setter
    def has_rsample(self, value: bool) -> None:
        self._rsample = bool(value)

    @property
    def support(self):
        return self.parts[0].support

    def expand(self, batch_shape, _instance=None):
        if tuple(batch_shape) != tuple(self.batch_shape):
            raise ValueError(
                f"a restart-batched site of batch shape {tuple(self.batch_shape)} cannot be expanded to "
                f"{tuple(batch_shape)}: the copies already ran inside the enclosing plates"
            )
        return self

    def rsample(self, sample_shape=torch.Size()):
        if len(sample_shape):
            raise ValueError("a restart-batched site holds the copies' draws: sample it inside plates, not with a sample_shape")
        return self.values

    def sample(self, sample_shape=torch.Size()):
        return self.rsample(sample_shape).detach()

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        dim = value.dim() - self._event_dim + RESTARTS_DIM
        out = []
        for r, part in enumerate(self.parts):
            lp = part.log_prob(value.narrow(dim, r, 1))
            out.append(_pad_batch(lp, 0))
        return torch.cat(out, RESTARTS_DIM)


def _pad_batch(t: torch.Tensor, event_dim: int) -> torch.Tensor:
    """Prepend size-1 dimensions until ``t`` has the restarts' batch dim (−2)."""
    while t.dim() - event_dim < -RESTARTS_DIM:
        t = t.unsqueeze(0)
    return t


class _OuterFrames(Messenger):
    """Give a copy's sites the enclosing vectorised plates (e.g. the particles) without re-entering them."""

    def __init__(self, frames: tuple):
        super().__init__()
        self.frames = frames

    def _process_message(self, msg) -> None:
        if msg["type"] != "sample" or not self.frames:
            return
        msg["cond_indep_stack"] = msg["cond_indep_stack"] + self.frames
        BroadcastMessenger._pyro_sample(msg)


class _PrefixParams(Messenger):
    """Rename ``pyro.param`` sites ``NAME`` → ``PREFIX/NAME`` (each copy its own param-store entries)."""

    def __init__(self, prefix: str):
        super().__init__()
        self.prefix = prefix

    def _process_message(self, msg) -> None:
        if msg["type"] == "param":
            name = f"{self.prefix}/{msg['name']}"
            msg["name"] = name
            if msg["args"]:
                msg["args"] = (name,) + tuple(msg["args"][1:])
            if "name" in msg["kwargs"]:
                msg["kwargs"] = {**msg["kwargs"], "name": name}


def _enclosing_frames() -> tuple:
    """The vectorised plates active around the call, innermost first (as Pyro orders a site's frames)."""
    frames = []
    for messenger in reversed(_PYRO_STACK):
        if isinstance(messenger, IndepMessenger) and messenger._vectorized and messenger.dim is not None:
            frames.append(CondIndepStackFrame(messenger.name, messenger.dim, messenger.size, messenger.counter))
    return tuple(frames)


def _device_of(args, kwargs) -> torch.device:
    for value in (*args, *kwargs.values()):
        if isinstance(value, torch.Tensor):
            return value.device
    return torch.device("cpu")


@contextlib.contextmanager
def _stream(seed: int, device: torch.device):
    """Run the block on its own random stream, leaving the global generators as they were."""
    devices = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.default_generator.manual_seed(seed)
        if devices:
            torch.cuda.default_generators[devices[0]].manual_seed(seed)
        yield


def _stream_seed(call_seed: int, restart_id: int) -> int:
    return int(np.random.SeedSequence([call_seed, restart_id]).generate_state(1, np.uint64)[0] >> np.uint64(1))


class RestartBatch(nn.Module):
    """R independent copies of a guide, presented as one restart-batched guide.

    Parameters
    ----------
    guides : sequence of nn.Module
        The copies (distinct modules sharing no parameter), e.g. from :func:`batch_restarts`.
    restart_ids : sequence of int, optional
        The stream index of each copy (default ``0 … R−1``); ``RestartBatch([copy_r],
        restart_ids=[r])`` reproduces restart r of a batch run alone.

    Notes
    -----
    ``guide(*args)`` runs copy r on its own random stream (on its own rows when a tensor
    argument is stacked by restart, ``(R, B, D)``: a group of runs), then samples each of the copies'
    sites once, in the plates ``"restarts"`` (dim −2) and the copies' own plates, with the
    copies' draws stacked along the restarts. Returns the last site's stacked value.
    """

    def __init__(self, guides: Sequence[nn.Module], restart_ids: Sequence[int] | None = None):
        super().__init__()
        guides = list(guides)
        _check_copies(guides)
        self.copies = nn.ModuleList(guides)
        ids = list(range(len(guides))) if restart_ids is None else [int(i) for i in restart_ids]
        if len(ids) != len(guides) or len(set(ids)) != len(ids):
            raise ValueError(f"restart_ids={restart_ids!r}: expected {len(guides)} distinct integers")
        self.restart_ids = ids
        self.num_restarts = len(guides)
        first = guides[0]
        for attr in ("obs_dim", "latent_dim"):
            if hasattr(first, attr):
                setattr(self, attr, getattr(first, attr))

    def select_restart(self, index: int) -> nn.Module:
        """An independent copy of restart ``index``'s guide (what :func:`pyro_vae.nets.select_restart` returns)."""
        if not 0 <= index < self.num_restarts:
            raise ValueError(f"index={index}: expected 0 <= index < num_restarts={self.num_restarts}")
        return copy.deepcopy(self.copies[index])

    def slice_restarts(self, start: int, count: int) -> "RestartBatch":
        """Restarts ``start … start+count−1`` (copies), still batched (:func:`pyro_vae.nets.slice_restarts`)."""
        if not (0 <= start and count >= 1 and start + count <= self.num_restarts):
            raise ValueError(f"restarts {start}..{start + count - 1}: expected within 0..{self.num_restarts - 1}")
        return RestartBatch([copy.deepcopy(g) for g in self.copies[start : start + count]],
                            restart_ids=self.restart_ids[start : start + count])

    @classmethod
    def stack_restarts(cls, batches: Sequence["RestartBatch"]) -> "RestartBatch":
        """The restarts of several batches side by side, renumbered (:func:`pyro_vae.nets.stack_restarts`)."""
        if not all(isinstance(b, RestartBatch) for b in batches):
            raise ValueError("stack_restarts: every module must be a RestartBatch")
        guides = [copy.deepcopy(g) for b in batches for g in b.copies]
        return cls(guides)

    def forward(self, *args, **kwargs):
        outer = _enclosing_frames()
        device = _device_of(args, kwargs)
        call_seed = int(torch.randint(0, 2**62, (), device="cpu"))
        sites: dict[str, list] = {}
        for r, guide in enumerate(self.copies):
            r_args, r_kwargs = self._own_data(r, args, kwargs)
            with _stream(_stream_seed(call_seed, self.restart_ids[r]), device), local_params():
                with poutine.block(hide_types=["sample"]), _PrefixParams(f"restart{r}"):
                    with poutine.trace() as tr, _OuterFrames(outer):
                        guide(*r_args, **r_kwargs)
            for name, site in tr.trace.nodes.items():
                if site["type"] != "sample" or site["is_observed"] or site_is_subsample(site):
                    continue
                sites.setdefault(name, []).append(site)
        value = None
        for name, per_restart in sites.items():
            if len(per_restart) != self.num_restarts:
                raise ValueError(f"guide site {name!r} was sampled by {len(per_restart)} of {self.num_restarts} copies: "
                                 "every copy must sample the same sites")
            value = self._emit(name, per_restart, outer)
        return value

    def _own_data(self, r: int, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        """Restart r's slice of data stacked by restart (a group of runs: ``x`` of shape (R, B, D))."""
        def pick(value):
            if isinstance(value, torch.Tensor) and value.dim() == 3 and value.shape[0] == self.num_restarts:
                return value[r]
            return value

        return tuple(pick(a) for a in args), {k: pick(v) for k, v in kwargs.items()}

    def _emit(self, name: str, per_restart: list, outer: tuple) -> torch.Tensor:
        first = per_restart[0]
        event_dim = first["fn"].event_dim
        values = torch.cat([_pad_batch(s["value"], event_dim) for s in per_restart], RESTARTS_DIM - event_dim)
        own = [f for f in first["cond_indep_stack"] if f not in outer and f.vectorized]
        if any(f.dim == RESTARTS_DIM for f in own):
            raise ValueError(f"guide site {name!r} is in a plate at dim {RESTARTS_DIM} ({[f.name for f in own]}): "
                             "that dim holds the restarts; a guide's sites sit in the plate 'data' (dim -1)")
        fn = _Stacked([s["fn"] for s in per_restart], values, event_dim)
        with contextlib.ExitStack() as stack:
            stack.enter_context(pyro.plate(RESTARTS_PLATE, self.num_restarts, dim=RESTARTS_DIM))
            for frame in sorted(own, key=lambda f: f.dim):
                stack.enter_context(pyro.plate(frame.name, frame.size, dim=frame.dim))
            return pyro.sample(name, fn, infer=dict(first["infer"]))


def _check_copies(guides: list) -> None:
    if not guides:
        raise ValueError("guides: expected at least one guide module")
    for g in guides:
        err = autoguide_error(g)
        if err is not None:
            raise err
        if not isinstance(g, nn.Module):
            raise _not_a_module_error(g, len(guides))
    if len({id(g) for g in guides}) != len(guides):
        raise ValueError(f"the factory returned the same {type(guides[0]).__name__} object more than once: "
                         "restarts would share it; return a new module per call")
    seen: dict[int, int] = {}
    for r, g in enumerate(guides):
        for pname, p in g.named_parameters():
            if id(p) in seen and seen[id(p)] != r:
                raise ValueError(f"guides {seen[id(p)]} and {r} share the parameter {pname!r}: restarts would not be "
                                 "independent; build every tensor inside the factory")
            seen[id(p)] = r


def batch_restarts(factory: Callable[..., Any], num_restarts: int, *args, **kwargs) -> nn.Module:
    """Turn a single guide into ``num_restarts`` independent restarts.

    Parameters
    ----------
    factory : class or callable
        Called ``num_restarts`` times with ``*args, **kwargs``; each call must return a new
        ``nn.Module``/``PyroModule`` guide (its own, freshly initialised parameters).
    num_restarts : int
        R ≥ 1.

    Returns
    -------
    RestartBatch
        For a model with ``num_restarts=R`` (:func:`pyro_vae.models.build_vae_model`);
        ``pyro_vae.nets.select_restart(guide, r)`` gives restart r's guide alone.

    Raises
    ------
    ValueError
        For anything that cannot be batched (see the module docstring), before any training.
    """
    if isinstance(num_restarts, bool) or not isinstance(num_restarts, int) or num_restarts < 1:
        raise ValueError(f"num_restarts={num_restarts!r}: expected a positive integer")
    err = autoguide_error(factory)
    if err is not None:
        raise err
    guides = [construct(factory, *args, **kwargs) for _ in range(num_restarts)]
    if any(not isinstance(g, nn.Module) for g in guides):
        bad = next(g for g in guides if not isinstance(g, nn.Module))
        raise _not_a_module_error(bad if callable(bad) else factory, num_restarts)
    batch = RestartBatch(guides)
    if num_restarts > 1 and _all_equal(guides):
        warnings.warn(
            f"the {num_restarts} restarts of {getattr(factory, '__qualname__', factory)!r} start from identical "
            "parameters (a deterministic initialisation): they differ only by their random streams",
            RuntimeWarning,
            stacklevel=2,
        )
    return batch


def _all_equal(guides: list) -> bool:
    states = [list(g.state_dict().values()) for g in guides]
    if not states[0]:
        return True
    return all(
        len(s) == len(states[0]) and all(torch.equal(a, b) for a, b in zip(s, states[0])) for s in states[1:]
    )


# --------------------------------------------------------------------------- the trainer's guard
class _NoDraw(Messenger):
    """Give latent sites a point of their support instead of a draw (a shape-only run draws nothing)."""

    def _process_message(self, msg) -> None:
        if msg["type"] != "sample" or msg["is_observed"] or msg["value"] is not None or site_is_subsample(msg):
            return
        fn = msg["fn"]
        try:
            msg["value"] = biject_to(fn.support)(torch.zeros(fn.shape()))
        except (NotImplementedError, TypeError, ValueError, RuntimeError, AttributeError):
            return  # e.g. a discrete site: let it draw (on the forked stream)


def is_restart_aware(guide: Any) -> bool:
    """Whether ``guide`` declares itself restart-batched (a ``num_restarts`` attribute that is not None)."""
    return getattr(guide, "num_restarts", None) is not None


def check_restart_guide(model: Callable, guide: Callable, *args, **kwargs) -> None:
    """Refuse a guide that would be shared across a restart-batched model's restarts.

    With ``model.num_restarts = R > 1`` every sample site of ``guide(*args, **kwargs)`` must
    sit in the plate ``"restarts"`` of size R. Runs the guide once (on its own random stream:
    the global generators are left as they were).

    Raises
    ------
    ValueError
        Naming the site and what to use instead (:func:`batch_restarts`).
    """
    restarts = getattr(model, "num_restarts", None) or 1
    err = autoguide_error(guide)
    if err is not None:
        raise err
    if restarts <= 1:
        return
    with torch.random.fork_rng(devices=[]), torch.no_grad(), poutine.block(), _NoDraw(), poutine.trace() as tr:
        guide(*args, **kwargs)
    for name, site in tr.trace.nodes.items():
        if site["type"] != "sample" or site["is_observed"] or site_is_subsample(site):
            continue
        frames = {f.name: f for f in site["cond_indep_stack"]}
        frame = frames.get(RESTARTS_PLATE)
        if frame is None or frame.size != restarts:
            what = "outside the plate 'restarts'" if frame is None else f"in a plate 'restarts' of size {frame.size}"
            raise ValueError(
                f"the model has num_restarts={restarts} but guide site {name!r} is {what}: one guide would be shared "
                f"by all {restarts} restarts. Batch a single guide with guides.restarts.batch_restarts(factory, "
                f"{restarts}, ...) (see guides/README.md), or build the model with num_restarts=None"
            )
