"""Benchmark data sets with known generative processes, from 000 and 004.

>>> from pyro_vae.datasets import get_dataset
>>> ds = get_dataset("figure8")
>>> splits = ds.splits(seed=0)          # seed = the paper's data version
>>> x, z = ds.sample(100, seed=1)

``get_dataset(name, **params)`` builds one; ``dataset_names()`` lists them and
``dataset_table()`` summarises them (with default parameters).
"""

from __future__ import annotations

from typing import Any

from pyro_vae.datasets.base import Dataset, LabelledSplit, Split, Splits
from pyro_vae.datasets.jte import Case1, Case2, CubicJTE, Gaussian, LinearJTE, Mobius
from pyro_vae.datasets.semicircle import ContinuousSemiCircle, DiscreteSemiCircle
from pyro_vae.datasets.toys import Floor, Variant1, Variant2, Variant3
from pyro_vae.datasets.uci import Contraceptive, DiabeticRetinopathy, Titanic
from pyro_vae.datasets.user import FileData
from pyro_vae.datasets.unsupervised import (
    AbsoluteValue,
    Circle,
    Clusters,
    ClustersIn5D,
    Figure8,
    Figure8In5D,
    SpiralDots,
)

__all__ = ["Dataset", "LabelledSplit", "Split", "Splits", "dataset_names", "dataset_table", "get_dataset"]

_REGISTRY: dict[str, type[Dataset]] = {
    cls.name: cls
    for cls in (
        Figure8, Circle, AbsoluteValue, Clusters, SpiralDots, Figure8In5D, ClustersIn5D,
        Variant1, Variant2, Variant3, Floor,
        LinearJTE, CubicJTE, Gaussian, Mobius, Case1, Case2,
        DiscreteSemiCircle, ContinuousSemiCircle,
        DiabeticRetinopathy, Contraceptive, Titanic,
    )
}


def dataset_names() -> list[str]:
    """Names accepted by :func:`get_dataset`, in the order of the papers' appendices."""
    return list(_REGISTRY)


def get_dataset(name: str, **params: Any) -> Dataset:
    """Build the data set ``name`` with keyword ``params``.

    ``"file"`` (not a benchmark, so not in :func:`dataset_names`) is the user's own data,
    :class:`pyro_vae.datasets.user.FileData` (``path=...``).

    Raises
    ------
    ValueError
        For an unknown name or parameter (the message lists the allowed ones), or a
        parameter value out of its range.
    """
    if name not in _REGISTRY and name != FileData.name:
        raise ValueError(f"name={name!r}: unknown data set; expected one of {dataset_names()} or 'file'")
    cls = _REGISTRY.get(name, FileData)
    if not cls.supports_surrogate and "surrogate" in params:
        if params.pop("surrogate") is not False:
            raise ValueError(f"surrogate=True: data set {name!r} has no surrogate network in the papers; "
                             f"expected surrogate=False")
    allowed = cls.param_names()
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        expected = f"expected some of {allowed}" if allowed else "it takes none"
        raise ValueError(f"data set {name!r} has no parameter {unknown[0]!r}; {expected}")
    return cls(**params)


def dataset_table() -> list[dict[str, Any]]:
    """One row per data set (default parameters): name, latent_dim, obs_dim, noise_var,
    prior, conditions, paper."""
    rows = []
    for name in dataset_names():
        ds = get_dataset(name)
        rows.append({key: getattr(ds, key) for key in
                     ("name", "latent_dim", "obs_dim", "noise_var", "prior", "conditions", "paper")})
    return rows
