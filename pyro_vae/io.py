"""Atomic file writing: every result file appears whole or not at all.

Each writer serialises its payload first, writes it to a temporary file in the target's
own directory (same filesystem), flushes and fsyncs it, then renames it over the target
with :func:`os.replace`. A failure at any point removes the temporary file and leaves
an existing target untouched. Checkpoints are read back with ``weights_only=True``.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import uuid
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import torch

PathLike = str | os.PathLike
ARRAY_EXTENSIONS = (".csv", ".npz")
NONFINITE_CHOICES = ("error", "null")


def _fsync_dir(directory: Path) -> None:
    """Make a rename durable; a no-op where directories cannot be opened (Windows)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _atomic_write(path: PathLike, write: Callable[[Any], None], *, binary: bool) -> Path:
    """Call ``write(file)`` on a temporary sibling of ``path``, then rename it into place."""
    target = Path(path)
    if target.is_dir():
        raise IsADirectoryError(f"cannot write {str(target)!r}: it is a directory")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:12]}.tmp")
    # os.open with 0o666 honours the umask, unlike tempfile's private 0o600.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        mode = "wb" if binary else "w"
        kwargs = {} if binary else {"encoding": "utf-8", "newline": ""}
        with os.fdopen(fd, mode, **kwargs) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(target.parent)
    return target


def atomic_write_bytes(path: PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns the path written."""
    return _atomic_write(path, lambda f: f.write(data), binary=True)


def atomic_write_text(path: PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns the path written."""
    return _atomic_write(path, lambda f: f.write(text), binary=False)


def to_jsonable(obj: Any, *, nonfinite: str = "error", where: str = "value") -> Any:
    """Plain-Python copy of ``obj`` that :mod:`json` can encode.

    Numpy and torch scalars become ``int``/``float``/``bool``, arrays and tensors become
    nested lists, tuples become lists and paths become strings.

    Parameters
    ----------
    obj : Any
        Dicts (with string keys), sequences, scalars, arrays, tensors, paths, None.
    nonfinite : {"error", "null"}
        What to do with NaN and ±inf: raise ``ValueError``, or write ``null``.
    where : str
        Name of ``obj`` used in error messages.

    Returns
    -------
    Any
        A structure of dict, list, str, int, float, bool and None.
    """
    if nonfinite not in NONFINITE_CHOICES:
        raise ValueError(f"nonfinite={nonfinite!r}: expected one of {NONFINITE_CHOICES}")
    if obj is None or isinstance(obj, (str, bool)):
        return obj
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        if math.isfinite(obj):
            return float(obj)
        if nonfinite == "null":
            return None
        raise ValueError(f"{where} is {obj!r}: JSON files may not hold NaN or infinity")
    if isinstance(obj, (np.generic, np.ndarray)):
        return to_jsonable(obj.tolist(), nonfinite=nonfinite, where=where)
    if isinstance(obj, torch.Tensor):
        return to_jsonable(obj.detach().cpu().tolist(), nonfinite=nonfinite, where=where)
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, Mapping):
        out = {}
        for key, value in obj.items():
            if isinstance(key, np.generic):
                key = key.item()
            if not isinstance(key, (str, int)) or isinstance(key, bool):
                raise ValueError(f"{where} has key {key!r}: JSON keys must be strings")
            out[str(key)] = to_jsonable(value, nonfinite=nonfinite, where=f"{where}[{key!r}]")
        return out
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v, nonfinite=nonfinite, where=f"{where}[{i}]") for i, v in enumerate(obj)]
    raise ValueError(f"{where} has type {type(obj).__name__}, which cannot be written as JSON")


def dumps_json(obj: Any, *, nonfinite: str = "error") -> str:
    """Canonical JSON text: sorted keys, 2-space indent, trailing newline."""
    data = to_jsonable(obj, nonfinite=nonfinite)
    return json.dumps(data, sort_keys=True, indent=2, allow_nan=False) + "\n"


def write_json(path: PathLike, obj: Any, *, nonfinite: str = "error") -> Path:
    """Write ``obj`` as JSON (sorted keys, indent 2) atomically.

    Parameters
    ----------
    path : str or PathLike
        Target file.
    obj : Any
        See :func:`to_jsonable`; converted before anything is written.
    nonfinite : {"error", "null"}
        NaN/inf raise ``ValueError`` (default) or are written as ``null``.

    Returns
    -------
    Path
        The path written.
    """
    return atomic_write_text(path, dumps_json(obj, nonfinite=nonfinite))


def read_json(path: PathLike) -> Any:
    """Parse a JSON file."""
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def save_state(path: PathLike, state_dict: Mapping[str, Any]) -> Path:
    """Save a state dict with :func:`torch.save`, atomically.

    Parameters
    ----------
    path : str or PathLike
        Target file (conventionally ``*.pt``).
    state_dict : Mapping
        Tensors, numbers, strings and nested dicts/lists of them, so that
        :func:`load_state` can read it with ``weights_only=True``.

    Returns
    -------
    Path
        The path written.
    """
    buffer = io.BytesIO()
    torch.save(dict(state_dict), buffer)
    return atomic_write_bytes(path, buffer.getvalue())


def load_state(path: PathLike) -> dict[str, Any]:
    """Load a state dict onto the CPU with ``torch.load(..., weights_only=True)``."""
    return torch.load(path, map_location="cpu", weights_only=True)


def _cell(value: Any) -> Any:
    if isinstance(value, (torch.Tensor, np.generic, np.ndarray)):
        size = value.numel() if isinstance(value, torch.Tensor) else value.size
        if size != 1:
            raise ValueError(f"CSV cells must be scalars, got an array of shape {tuple(value.shape)}")
        return value.item()
    return "" if value is None else value


def write_csv(path: PathLike, rows: Iterable[Mapping[str, Any]], fieldnames: Sequence[str] | None = None) -> Path:
    """Write dict rows as CSV atomically.

    Parameters
    ----------
    path : str or PathLike
        Target file.
    rows : iterable of Mapping
        One dict per row; missing keys are written as empty cells.
    fieldnames : sequence of str, optional
        Column order; defaults to the keys in order of first appearance.

    Returns
    -------
    Path
        The path written.
    """
    rows = [{str(k): _cell(v) for k, v in row.items()} for row in rows]
    if fieldnames is None:
        fieldnames = list(dict.fromkeys(k for row in rows for k in row))
    extra = sorted({k for row in rows for k in row} - set(fieldnames))
    if extra:
        raise ValueError(f"rows have columns {extra} that are not in fieldnames={list(fieldnames)}")
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=list(fieldnames), lineterminator="\n")
    if fieldnames:
        writer.writeheader()
        writer.writerows(rows)
    return atomic_write_text(path, text.getvalue())


def _parse_cell(text: str) -> Any:
    if text == "":
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def read_csv(path: PathLike) -> list[dict[str, Any]]:
    """Read a CSV written by :func:`write_csv`; numbers are parsed, empty cells are None."""
    with open(path, encoding="utf-8", newline="") as f:
        return [{k: _parse_cell(v) for k, v in row.items()} for row in csv.DictReader(f)]


def _check_array_path(path: PathLike) -> str:
    suffix = Path(path).suffix.lower()
    if suffix not in ARRAY_EXTENSIONS:
        raise ValueError(
            f"cannot save arrays to {os.fspath(path)!r}: unknown extension {suffix or '(none)'!r}; "
            f"allowed extensions are {', '.join(ARRAY_EXTENSIONS)}"
        )
    return suffix


def save_arrays(path: PathLike, **arrays: Any) -> Path:
    """Save named arrays as ``.npz`` or ``.csv`` (chosen by extension), atomically.

    In a CSV a 1-D array ``y`` becomes column ``y`` and a 2-D array ``x`` of shape
    ``(N, D)`` becomes columns ``x1 .. xD``; all arrays must share the leading size N.

    Parameters
    ----------
    path : str or PathLike
        Target ending in ``.csv`` or ``.npz``; anything else raises ``ValueError``
        before anything is written.
    **arrays : array-like
        Numpy arrays or tensors, e.g. ``x=x, z=z``.

    Returns
    -------
    Path
        The path written.
    """
    suffix = _check_array_path(path)
    if not arrays:
        raise ValueError(f"save_arrays({os.fspath(path)!r}): no arrays given")
    arrays = {
        name: (a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a))
        for name, a in arrays.items()
    }
    if suffix == ".npz":
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        return atomic_write_bytes(path, buffer.getvalue())
    columns: dict[str, np.ndarray] = {}
    for name, a in arrays.items():
        if a.ndim == 1:
            columns[name] = a
        elif a.ndim == 2:
            columns.update({f"{name}{j + 1}": a[:, j] for j in range(a.shape[1])})
        else:
            raise ValueError(f"array {name!r} has shape {a.shape}: a CSV holds 1-D or 2-D arrays only")
    sizes = {name: a.shape[0] for name, a in arrays.items()}
    if len(set(sizes.values())) > 1:
        raise ValueError(f"arrays must share their first dimension to go in one CSV, got sizes {sizes}")
    n = next(iter(sizes.values()))
    lists = {name: col.tolist() for name, col in columns.items()}
    rows = [{name: col[i] for name, col in lists.items()} for i in range(n)]
    return write_csv(path, rows, fieldnames=list(columns))


def load_arrays(path: PathLike) -> dict[str, np.ndarray]:
    """Read arrays written by :func:`save_arrays`.

    From a CSV, columns ``x1 .. xD`` are gathered back into one ``(N, D)`` array ``x``;
    other columns come back 1-D.
    """
    suffix = _check_array_path(path)
    if suffix == ".npz":
        with np.load(path, allow_pickle=False) as data:
            return {name: data[name] for name in data.files}
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.reader(f)
        header = next(reader, [])
        cells = list(reader)
    values = [np.array([_parse_cell(row[j]) for row in cells]) for j in range(len(header))]
    out: dict[str, np.ndarray] = {}
    j = 0
    while j < len(header):
        stem = header[j][:-1] if header[j].endswith("1") else None
        width = 0
        while stem and j + width < len(header) and header[j + width] == f"{stem}{width + 1}":
            width += 1
        if width:
            out[stem] = np.stack(values[j : j + width], axis=1) if cells else np.empty((0, width))
            j += width
        else:
            out[header[j]] = values[j]
            j += 1
    return out
