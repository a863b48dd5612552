"""Seeded random streams that leave the caller's global RNG as it was."""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch


@contextlib.contextmanager
def isolated_rng(device: torch.device | str, seed: int) -> Iterator[None]:
    """Run a block on torch's RNG seeded with ``seed`` (CPU, and ``device`` when it is CUDA),
    then restore the caller's state: a metric or a validation pass never moves the stream
    that training draws from."""
    device = torch.device(device)
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield
