"""Surrogate networks: MLPs fitted to a data set's ``f`` by full supervision.

004 App. G and H: "for each one of these example decoder functions, we fit a surrogate
neural network fθ using full supervision (ensuring that the MSE < 1e-4) and use that fθ to
generate the actual data"; 000 App. E does the same for Mobius. Fitted weights are cached in
``$PYRO_VAE_CACHE/surrogates`` (default ``~/.cache/pyro-vae/surrogates``), written atomically
and loaded with ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable

import torch

from pyro_vae.nets import MLP, fit_to_function

TARGET_MSE = 1e-4
HIDDEN = (50, 50, 50)


def resolve_cache_dir(override: str | os.PathLike | None = None) -> Path:
    """Directory of cached surrogate weights: ``override``, ``$PYRO_VAE_CACHE/surrogates`` or
    ``~/.cache/pyro-vae/surrogates``."""
    if override is not None:
        return Path(override)
    root = os.environ.get("PYRO_VAE_CACHE")
    base = Path(root) if root else Path.home() / ".cache" / "pyro-vae"
    return base / "surrogates"


def cache_path(key: dict[str, Any], directory: Path) -> Path:
    """File holding the surrogate described by ``key`` (name plus a hash of everything)."""
    text = json.dumps(key, sort_keys=True, default=str)
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    return directory / f"{key.get('name', 'surrogate')}-{digest}.pt"


def _atomic_save(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def load_or_fit(
    key: dict[str, Any],
    fn: Callable[[torch.Tensor], torch.Tensor],
    in_dim: int,
    out_dim: int,
    sample_inputs: Callable[[int, torch.Generator], torch.Tensor],
    *,
    max_steps: int = 20000,
    seed: int = 0,
    target_mse: float = TARGET_MSE,
    cache_dir: str | os.PathLike | None = None,
) -> tuple[MLP, float]:
    """Load the surrogate for ``key`` from the cache, or fit and cache it.

    Parameters
    ----------
    key : dict
        JSON-able description of the function fitted (data set name and parameters).
    fn, sample_inputs
        The target function and a sampler ``(n, generator) -> inputs`` of its inputs.
    in_dim, out_dim : int
        Network sizes; hidden layers are ``HIDDEN`` (004 App. D architecture).
    max_steps, seed, target_mse
        Passed to :func:`pyro_vae.nets.fit_to_function`.

    Returns
    -------
    net : MLP
        Frozen network (parameters do not require gradients), on the CPU.
    mse : float
        Held-out MSE of the fit. A ``UserWarning`` names it when it is not below ``target_mse``.
    """
    full_key = dict(key, hidden=list(HIDDEN), max_steps=max_steps, seed=seed, target_mse=target_mse)
    path = cache_path(full_key, resolve_cache_dir(cache_dir))
    with torch.random.fork_rng(devices=[]):  # leave the caller's global RNG untouched
        torch.manual_seed(seed)
        net = MLP(in_dim, out_dim, hidden=HIDDEN)
    if path.exists():
        saved = torch.load(path, map_location="cpu", weights_only=True)
        net.load_state_dict(saved["state_dict"])
        mse = float(saved["mse"])
    else:
        with torch.enable_grad():  # callers may be drawing data under no_grad
            mse = fit_to_function(net, fn, sample_inputs, target_mse=target_mse, max_steps=max_steps, seed=seed)
        record = {"state_dict": net.state_dict(), "mse": mse, "key": json.dumps(full_key, default=str)}
        _atomic_save(record, path)
    if not mse < target_mse:
        warnings.warn(
            f"surrogate for {key.get('name')!r} has held-out MSE {mse:.3g}, not below the target "
            f"{target_mse:g} (max_steps={max_steps}); data come from this imperfect fit",
            stacklevel=3,
        )
    net.requires_grad_(False)
    net.eval()
    return net, mse
