"""How a result was made, stored next to it (after posteriordb's reference posteriors).

The record names package versions, platform, seed, device and times, and nothing that
identifies the machine or the user (no hostname, no paths).
"""

from __future__ import annotations

import os
import platform
import subprocess
from datetime import datetime, timezone
from typing import Any

import numpy as np
import torch


def utc_now() -> str:
    """The current UTC time as ISO 8601 with milliseconds, e.g. ``2024-05-01T12:00:00.123+00:00``."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def package_versions() -> dict[str, str]:
    """Versions of python, pyro_vae, torch, pyro and numpy."""
    import pyro

    from pyro_vae import __version__

    return {
        "python": platform.python_version(),
        "pyro_vae": __version__,
        "torch": torch.__version__,
        "pyro": pyro.__version__,
        "numpy": np.__version__,
    }


def provenance_record(*, seed: Any = None, device: Any = None, start_time: str | None = None, **extra: Any) -> dict:
    """Provenance record of a run that starts now.

    Parameters
    ----------
    seed : int, optional
        The run's random seed.
    device : str, optional
        The device it runs on ("cpu", "cuda", "cuda:1").
    start_time : str, optional
        ISO-8601 start time; defaults to now.
    **extra
        More fields (e.g. ``run_id``, ``config_hash``, or NUTS settings).

    Returns
    -------
    dict
        ``versions``, ``platform``, ``torch`` settings, ``seed``, ``device``,
        ``start_time`` and ``end_time`` (None until the run ends), plus ``extra``.
    """
    device = None if device is None else str(device)
    accelerator = None
    if device is not None and device.startswith("cuda") and torch.cuda.is_available():
        accelerator = torch.cuda.get_device_name(torch.device(device))
    return {
        "versions": package_versions(),
        "platform": {"system": platform.system(), "machine": platform.machine()},
        "torch": {
            "cuda": torch.version.cuda,
            "accelerator": accelerator,
            "num_threads": torch.get_num_threads(),
            "default_dtype": str(torch.get_default_dtype()),
        },
        "seed": seed,
        "device": device,
        "start_time": start_time or utc_now(),
        "end_time": None,
        **extra,
    }


def machine_record() -> dict:
    """CPU count, torch threads and the load average now (no hostname): beside every timing."""
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "system": platform.system(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "loadavg_1_5_15": None if load is None else [round(v, 2) for v in load],
    }


def git_commit(path: str | os.PathLike | None = None) -> str | None:
    """The commit checked out where ``path`` (default: this package) lies, or None outside git."""
    where = os.fspath(path) if path is not None else os.path.dirname(os.path.abspath(__file__))
    try:
        done = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, cwd=where)
    except (OSError, subprocess.CalledProcessError):
        return None
    return done.stdout.strip() or None
