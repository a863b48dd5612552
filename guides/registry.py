"""Guides by name or import path: how ``--guide`` (CLI), ``guide =`` (TOML) and ``guide=`` (Python) resolve.

A guide spec is one of

- a built-in name: ``"mean_field"`` (:class:`guides.mean_field.MeanFieldGuide`), ``"flow"``
  (:class:`guides.flow.FlowGuide`);
- the name of an installed guide: an entry point in the group ``"pyro_vae.guides"``, e.g. in
  a package's ``setup.cfg``::

      [options.entry_points]
      pyro_vae.guides =
          student_t = my_package.guides:StudentTGuide

- an import path ``"package.module:ClassOrFactory"`` (``Attr.attr`` for a nested attribute).
  A module that is not importable as it is is looked for in the current folder too (as
  ``uvicorn main:app`` does).

Every form resolves the same way (name → import path → object), and a run stores the spec in
its ``config.json``, so ``evaluate``, ``posterior --run``, ``decompose --run`` and ``report``
rebuild the guide in a fresh process. :func:`register_guide` adds a name for this process
only; runs then store the factory's import path, which later processes can import.

The factory is called as ``factory(obs_dim, latent_dim, [hidden=...], [num_restarts=R])``:
``hidden`` (the run's ``--hidden``) only if its signature takes it, ``num_restarts`` only if it
takes it — a factory that takes ``num_restarts`` promises a restart-batched guide; any other
is batched by :func:`guides.restarts.batch_restarts`. See ``guides/README.md``.
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from importlib import metadata
from typing import Any, Callable, Sequence

from guides.restarts import autoguide_error, batch_restarts, construct

__all__ = ["ENTRY_POINT_GROUP", "BUILTIN_GUIDES", "build_guide", "canonical_spec", "guide_names", "register_guide",
           "resolve_guide"]

ENTRY_POINT_GROUP = "pyro_vae.guides"
BUILTIN_GUIDES: dict[str, str] = {
    "mean_field": "guides.mean_field:MeanFieldGuide",
    "flow": "guides.flow:FlowGuide",
}
_REGISTERED: dict[str, Callable[..., Any]] = {}


def register_guide(name: str, factory: Callable[..., Any]) -> None:
    """Make ``name`` a guide spec in this process (see the module docstring)."""
    if not isinstance(name, str) or not name or ":" in name:
        raise ValueError(f"name={name!r}: expected a non-empty name without ':'")
    if name in BUILTIN_GUIDES:
        raise ValueError(f"name={name!r}: a built-in guide has that name; choose another")
    if not callable(factory):
        raise ValueError(f"factory={factory!r}: expected a class or a callable returning a guide")
    _REGISTERED[name] = factory


def _entry_points() -> dict[str, Any]:
    return {ep.name: ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}


def guide_names() -> dict[str, str]:
    """Every guide name and where it comes from: built-ins, entry points, this process's registrations."""
    out = dict(BUILTIN_GUIDES)
    for name, ep in _entry_points().items():
        out.setdefault(name, ep.value)
    for name, factory in _REGISTERED.items():
        out.setdefault(name, _import_path(factory) or f"<registered: {factory!r}>")
    return out


def _allowed() -> str:
    installed = sorted(set(_entry_points()) - set(BUILTIN_GUIDES))
    extra = f", installed {installed}" if installed else ""
    registered = f", registered {sorted(_REGISTERED)}" if _REGISTERED else ""
    return (f"expected a built-in guide {sorted(BUILTIN_GUIDES)}{extra}{registered} "
            f"(entry point group {ENTRY_POINT_GROUP!r}) or an import path 'package.module:ClassOrFactory'")


def _import_module(module: str, spec: str):
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as err:
        top = module.split(".")[0]
        cwd = os.getcwd()
        if err.name is not None and top.startswith(err.name.split(".")[0]) and cwd not in sys.path:
            sys.path.append(cwd)
            try:
                return importlib.import_module(module)
            except ModuleNotFoundError:
                sys.path.remove(cwd)
        raise ValueError(
            f"guide={spec!r}: cannot import module {module!r} ({err}); put its folder on PYTHONPATH "
            "(or run from the folder that holds it)"
        ) from None
    except Exception as err:  # a user's module that fails on import
        raise ValueError(f"guide={spec!r}: importing module {module!r} failed: {type(err).__name__}: {err}") from err


def _load_path(path: str, spec: str) -> Any:
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"guide={spec!r}: {_allowed()}")
    obj: Any = _import_module(module_name, spec)
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ValueError(f"guide={spec!r}: module {module_name!r} has no attribute {attr!r}") from None
    return obj


def resolve_guide(spec: str) -> Callable[..., Any]:
    """The guide class or factory that ``spec`` names (see the module docstring).

    Raises
    ------
    ValueError
        An unknown name, an import path that does not import, or something that is not a
        guide factory (e.g. a Pyro AutoGuide, which is not amortised).
    """
    if not isinstance(spec, str) or not spec:
        raise ValueError(f"guide={spec!r}: {_allowed()}")
    if spec in BUILTIN_GUIDES:
        obj = _load_path(BUILTIN_GUIDES[spec], spec)
    elif spec in _REGISTERED:
        obj = _REGISTERED[spec]
    elif ":" in spec:
        obj = _load_path(spec, spec)
    else:
        eps = _entry_points()
        if spec not in eps:
            raise ValueError(f"guide={spec!r}: {_allowed()}")
        obj = _load_path(eps[spec].value, spec)
    err = autoguide_error(obj)
    if err is not None:
        raise err
    from torch import nn

    if isinstance(obj, nn.Module) or not callable(obj):
        raise ValueError(f"guide={spec!r} is a {type(obj).__name__} object: expected a guide class or factory "
                         "(a run builds a new guide from it, and one per restart)")
    return obj


def _import_path(obj: Any) -> str | None:
    module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    if not module or not qualname or "<" in qualname or module == "__main__":
        return None
    path = f"{module}:{qualname}"
    try:
        return path if _load_path(path, path) is obj else None
    except ValueError:
        return None


def canonical_spec(spec: str) -> str:
    """What a run stores: ``spec`` itself, except a name registered in this process becomes its import path.

    Raises
    ------
    ValueError
        For a registered factory that later processes could not import (e.g. defined in
        ``__main__`` or inside a function).
    """
    resolve_guide(spec)
    if spec in _REGISTERED and spec not in BUILTIN_GUIDES:
        path = _import_path(_REGISTERED[spec])
        if path is None:
            raise ValueError(
                f"guide={spec!r} was registered in this process only and its factory has no import path, so "
                "evaluate/posterior/decompose could not rebuild it later; define it in an importable module "
                "and pass 'package.module:ClassOrFactory'"
            )
        return path
    return spec


def _accepts(factory: Callable[..., Any], name: str) -> bool:
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind == p.VAR_KEYWORD for p in params.values())


def build_guide(
    spec: str,
    obs_dim: int,
    latent_dim: int,
    *,
    hidden: Sequence[int] | None = None,
    num_restarts: int | None = None,
) -> Any:
    """A guide for a model with ``obs_dim``, ``latent_dim`` and ``num_restarts`` (None: unbatched).

    A factory that takes ``num_restarts`` builds the restart-batched guide itself; any other
    is called R times and batched by :func:`guides.restarts.batch_restarts`. The result must be
    an ``nn.Module`` (the run store saves its ``state_dict``).
    """
    factory = resolve_guide(spec)
    kwargs: dict[str, Any] = {}
    if hidden is not None and _accepts(factory, "hidden"):
        kwargs["hidden"] = tuple(hidden)
    aware = _accepts(factory, "num_restarts")
    try:
        if num_restarts is not None and not aware:
            return batch_restarts(factory, num_restarts, obs_dim, latent_dim, **kwargs)
        if aware:
            kwargs["num_restarts"] = num_restarts
        guide = construct(factory, obs_dim, latent_dim, **kwargs)
    except TypeError as err:
        args = ", ".join([f"obs_dim={obs_dim}", f"latent_dim={latent_dim}", *(f"{k}={v!r}" for k, v in kwargs.items())])
        raise ValueError(f"guide={spec!r}: calling it as ({args}) failed: {err}. A guide factory takes "
                         "(obs_dim, latent_dim) and optionally hidden= and num_restarts= (guides/README.md)") from err
    err = autoguide_error(guide)
    if err is not None:
        raise err
    from torch import nn

    if not isinstance(guide, nn.Module):
        raise ValueError(
            f"guide={spec!r} returned a {type(guide).__name__}, not a torch.nn.Module: runs save and reload a "
            "guide's state_dict, and pyro.param statements in a function live in Pyro's global param store. "
            "Write the guide as an nn.Module or PyroModule (see guides/README.md)"
        )
    if num_restarts is not None and getattr(guide, "num_restarts", None) != num_restarts:
        raise ValueError(
            f"guide={spec!r} takes num_restarts but returned a guide with num_restarts="
            f"{getattr(guide, 'num_restarts', None)!r}, not {num_restarts}: a factory that takes num_restarts must "
            "return a restart-batched guide (or drop the argument and let guides.restarts batch it)"
        )
    return guide
