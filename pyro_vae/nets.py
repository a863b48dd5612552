"""Multi-layer perceptrons with an optional leading batch of independent weights.

``num_restarts=R`` gives every weight a leading dimension of size ``R``: one network
evaluates R independent initialisations at once (the ``"restarts"`` plate of the models).
Inputs of shape ``(..., R, N, in)`` or ``(..., N, in)`` (broadcast over the restarts)
give outputs ``(..., R, N, out)``. ``num_restarts=None`` is a plain MLP.

The default architecture follows 004 Appendix D: 3 hidden layers of 50 units with
leaky-ReLU activations.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
from torch import nn

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "leaky_relu": nn.LeakyReLU,
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
}


def _check_restarts(num_restarts: int | None) -> None:
    if num_restarts is not None and (not isinstance(num_restarts, int) or num_restarts < 1):
        raise ValueError(f"num_restarts={num_restarts!r}: expected None or a positive integer")


class BatchedLinear(nn.Module):
    """Affine map ``x @ W + b`` with weights of shape ``(R, in, out)`` (or ``(in, out)``).

    Initialised like :class:`torch.nn.Linear` (uniform in ±1/sqrt(in)), independently
    for every restart.
    """

    def __init__(self, in_features: int, out_features: int, num_restarts: int | None = None):
        super().__init__()
        _check_restarts(num_restarts)
        self.in_features, self.out_features, self.num_restarts = in_features, out_features, num_restarts
        lead = () if num_restarts is None else (num_restarts,)
        bound = 1.0 / math.sqrt(in_features)
        self.weight = nn.Parameter(torch.empty(*lead, in_features, out_features).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(*lead, 1, out_features).uniform_(-bound, bound))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        restarts = self.num_restarts
        if restarts is None or x.dim() < 3 or x.shape[-3] != restarts:
            return torch.matmul(x, self.weight) + self.bias
        lead = x.shape[:-3]
        if not lead:
            return torch.baddbmm(self.bias, x, self.weight)
        # (..., R, N, in) -> one (R, ...·N, in) batched product: far cheaper than broadcasting
        # the weights over the leading (e.g. particle) dimensions.
        flat = x.movedim(-3, 0).reshape(restarts, -1, self.in_features)
        out = torch.baddbmm(self.bias, flat, self.weight)
        return out.reshape(restarts, *lead, x.shape[-2], self.out_features).movedim(0, -3)

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, restarts={self.num_restarts}"


class MLP(nn.Module):
    """Fully connected network, optionally batched over restarts.

    Parameters
    ----------
    in_dim, out_dim : int
        Input and output sizes.
    hidden : sequence of int
        Hidden layer widths (default ``(50, 50, 50)``, 004 Appendix D).
    activation : str
        One of ``ACTIVATIONS`` (default ``"leaky_relu"``).
    num_restarts : int or None
        Size of the leading batch of independent weights.
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        hidden: Sequence[int] = (50, 50, 50),
        activation: str = "leaky_relu",
        num_restarts: int | None = None,
    ):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation={activation!r}: expected one of {sorted(ACTIVATIONS)}")
        for name, value in (("in_dim", in_dim), ("out_dim", out_dim)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r}: expected a positive integer")
        if any((not isinstance(h, int)) or h < 1 for h in hidden):
            raise ValueError(f"hidden={tuple(hidden)!r}: expected positive integers")
        _check_restarts(num_restarts)
        sizes = [in_dim, *hidden, out_dim]
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            layers.append(BatchedLinear(a, b, num_restarts))
            if i < len(sizes) - 2:
                layers.append(ACTIVATIONS[activation]())
        self.net = nn.Sequential(*layers)
        self.in_dim, self.out_dim, self.num_restarts = in_dim, out_dim, num_restarts

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def select_restart(module: nn.Module, index: int) -> nn.Module:
    """An unbatched copy of restart ``index`` of a restart-batched module.

    Every submodule with a ``num_restarts`` attribute has the leading dimension of its own
    parameters indexed at ``index`` — and of the buffers it names in ``restart_buffers`` (fixed
    constants such as a family's true A stay whole, even when a dimension happens to equal R) —
    and its ``num_restarts`` set to ``None``. The copy shares no storage with the original. A
    module with its own ``select_restart(index)`` method (e.g. :class:`guides.restarts.RestartBatch`)
    is asked directly.
    """
    import copy

    own = getattr(module, "select_restart", None)
    if callable(own):
        return own(index)
    out = copy.deepcopy(module)
    for sub in out.modules():
        restarts = getattr(sub, "num_restarts", None)
        if restarts is None:
            continue
        if not 0 <= index < restarts:
            raise ValueError(f"index={index}: expected 0 <= index < num_restarts={restarts}")
        for name, value in list(sub.named_parameters(recurse=False)):
            if value.dim() > 0 and value.shape[0] == restarts:
                setattr(sub, name, nn.Parameter(value.detach()[index].clone(), value.requires_grad))
        for name in getattr(sub, "restart_buffers", ()):
            sub.register_buffer(name, getattr(sub, name)[index].clone())
        sub.num_restarts = None
    return out


def fit_to_function(
    net: nn.Module,
    fn: Callable[[torch.Tensor], torch.Tensor],
    sample_inputs: Callable[[int, torch.Generator], torch.Tensor],
    *,
    target_mse: float = 1e-4,
    max_steps: int = 20000,
    batch_size: int = 1000,
    lr: float = 1e-3,
    seed: int = 0,
) -> float:
    """Fit ``net`` to ``fn`` by supervision on fresh inputs, until the MSE is below target.

    Used for the papers' surrogate networks (004 Appendix G/H: "MSE < 1e-4") and for
    initialising a decoder at the ground truth (004 Appendix D). Returns the final MSE,
    measured on 10 000 held-out inputs; the caller decides what a miss means.
    """
    gen = torch.Generator().manual_seed(seed)
    param = next(net.parameters())
    optim = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(optim, factor=0.5, patience=500)
    held_out = sample_inputs(10000, gen).to(param)
    with torch.no_grad():
        target = fn(held_out)

    def mse() -> float:
        with torch.no_grad():
            return float(((net(held_out) - target) ** 2).mean())

    for step in range(max_steps):
        z = sample_inputs(batch_size, gen).to(param)
        loss = ((net(z) - fn(z).detach()) ** 2).mean()
        optim.zero_grad()
        loss.backward()
        optim.step()
        sched.step(loss.item())
        if step % 250 == 249 and mse() < target_mse:
            break
    return mse()


def _restart_tensors(sub: nn.Module, restarts: int):
    """(kind, name, value) of a restart-batched submodule's own restart-indexed tensors."""
    for name, value in list(sub.named_parameters(recurse=False)):
        if value.dim() > 0 and value.shape[0] == restarts:
            yield "param", name, value
    for name in getattr(sub, "restart_buffers", ()):
        yield "buffer", name, getattr(sub, name)


def _set(sub: nn.Module, kind: str, name: str, value: torch.Tensor, requires_grad: bool = True) -> None:
    if kind == "param":
        setattr(sub, name, nn.Parameter(value, requires_grad))
    else:
        sub.register_buffer(name, value)


def slice_restarts(module: nn.Module, start: int, count: int) -> nn.Module:
    """A copy of restarts ``start … start+count-1`` of a restart-batched module (still batched).

    A module with its own ``slice_restarts(start, count)`` (e.g. :class:`guides.restarts.RestartBatch`)
    is asked directly.
    """
    import copy

    own = getattr(module, "slice_restarts", None)
    if callable(own):
        return own(start, count)
    out = copy.deepcopy(module)
    for sub in out.modules():
        restarts = getattr(sub, "num_restarts", None)
        if restarts is None:
            continue
        if not (0 <= start and count >= 1 and start + count <= restarts):
            raise ValueError(f"restarts {start}..{start + count - 1}: expected within 0..{restarts - 1}")
        for kind, name, value in list(_restart_tensors(sub, restarts)):
            _set(sub, kind, name, value.detach()[start : start + count].clone(), value.requires_grad)
        sub.num_restarts = count
    return out


def stack_restarts(modules: Sequence[nn.Module]) -> nn.Module:
    """One restart-batched module holding the restarts of ``modules`` (same architecture), in order.

    The inverse of :func:`slice_restarts`: a group of runs trains as one module whose restarts
    are the runs' restarts side by side.
    """
    import copy

    if not modules:
        raise ValueError("modules: expected at least one module")
    own = getattr(type(modules[0]), "stack_restarts", None)  # e.g. guides.restarts.RestartBatch
    if callable(own):
        return own(modules)
    out = copy.deepcopy(modules[0])
    subs = [dict(m.named_modules()) for m in modules]
    for path, sub in out.named_modules():
        restarts = getattr(sub, "num_restarts", None)
        if restarts is None:
            continue
        parts = [s[path] for s in subs]
        counts = [p.num_restarts for p in parts]
        for kind, name, value in list(_restart_tensors(sub, restarts)):
            stacked = torch.cat([getattr(p, name).detach() for p in parts], 0).clone()
            _set(sub, kind, name, stacked, value.requires_grad)
        sub.num_restarts = sum(counts)
    return out
