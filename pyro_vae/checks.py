"""Checks of user input, made before any work and before any file is written.

Every check raises :class:`InputError` (a ``ValueError``) with a one-line message that names
the argument, the value and what is allowed, e.g. ``lr=inf: expected a finite number > 0``.
The command line rewrites the argument's name into the flag the user typed (``--lr inf: ...``).

What is checked:

* numbers: integers in a range, finite numbers (``inf`` and ``nan`` are refused);
* data: NumPy arrays and tensors of any real dtype are accepted and converted to the model's
  dtype and device (float64 from ``torch.from_numpy`` becomes float32); the shape must be
  ``(N, D)`` with the model's D; NaN or infinity in the data is reported as the input's fault,
  with the first offending row;
* memory: sizes whose arrays cannot fit are refused with the estimate beside what is available
  (``MemAvailable`` and the cgroup limit), e.g. ``n=100000000000: needs about 1.6 TB``;
* output paths: an empty path, a path below a file, or a folder where a file (or a temporary
  file) cannot be created is refused; the probe removes everything it created, so a refused
  command leaves the disk as it was.
"""

from __future__ import annotations

import math
import numbers
import os
import re
import uuid
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import torch

__all__ = [
    "InputError", "one_line", "integer", "positive_int", "nonneg_int", "finite_number", "positive_number",
    "nonneg_number", "data_tensor", "training_data", "available_memory", "format_bytes", "require_memory",
    "sample_bytes", "run_bytes", "check_run", "output_dir", "output_file",
]

BYTES_PER_HISTORY_ROW = 400  # one dict per epoch and restart (4 numbers): ~232 B dict + 4 boxed values
BYTES_PER_CSV_ROW_CELL = 120  # save_arrays(.csv) builds a dict row of boxed floats, then text


class InputError(ValueError):
    """Bad input to a public function or a command; the message is one line."""

    def __init__(self, message: str):
        super().__init__(one_line(message))


def one_line(text: Any) -> str:
    """``text`` on one line: each line break (with the spaces around it) becomes one space."""
    return re.sub(r"[ \t]*[\r\n]+[ \t]*", " ", str(text)).strip()


def _show(value: Any) -> str:
    if isinstance(value, (list, tuple)) and all(isinstance(v, numbers.Number) for v in value):
        return " ".join(map(str, value))  # --hidden 50 50, as typed
    return repr(value) if isinstance(value, str) else str(value)


def _named(name: str, value: Any) -> str:
    """``lr=inf`` for a Python argument, ``--out '/proc/x'`` for a flag."""
    return f"{name} {_show(value)}" if name.startswith("-") else f"{name}={_show(value)}"


# ------------------------------------------------------------------------------------- numbers
def integer(name: str, value: Any, *, low: int | None = None, high: int | None = None) -> int:
    """``value`` if it is an int (not a bool) in ``[low, high]``, else :class:`InputError`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InputError(f"{_named(name, value)}: expected an integer{_range(low, high)}")
    value = int(value)
    if (low is not None and value < low) or (high is not None and value > high):
        raise InputError(f"{_named(name, value)}: expected an integer{_range(low, high)}")
    return value


def _range(low, high) -> str:
    if low is not None and high is not None:
        return f" in [{low}, {high}]"
    if low == 1:
        return " ≥ 1"
    if low is not None:
        return f" ≥ {low}"
    return f" ≤ {high}" if high is not None else ""


def positive_int(name: str, value: Any) -> int:
    """An int ≥ 1."""
    return integer(name, value, low=1)


def nonneg_int(name: str, value: Any) -> int:
    """An int ≥ 0."""
    return integer(name, value, low=0)


def finite_number(name: str, value: Any, *, low: float | None = None, high: float | None = None,
                  low_open: bool = False, high_open: bool = False) -> float:
    """``float(value)`` if it is a finite real number within the bounds, else :class:`InputError`.

    ``low_open``/``high_open`` exclude the bound itself (``low=0, low_open=True``: > 0).
    """
    allowed = "a finite number"
    if low is not None:
        allowed += f" {'>' if low_open else '≥'} {low:g}"
    if high is not None:
        allowed += f"{' and' if low is not None else ''} {'<' if high_open else '≤'} {high:g}"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InputError(f"{_named(name, value)}: expected {allowed}")
    v = float(value)
    bad = not math.isfinite(v)
    if low is not None:
        bad = bad or v < low or (low_open and v == low)
    if high is not None:
        bad = bad or v > high or (high_open and v == high)
    if bad:
        raise InputError(f"{_named(name, value)}: expected {allowed}")
    return v


def positive_number(name: str, value: Any) -> float:
    """A finite number > 0 (``inf`` is refused: a learning rate of inf is not a learning rate)."""
    return finite_number(name, value, low=0.0, low_open=True)


def nonneg_number(name: str, value: Any) -> float:
    """A finite number ≥ 0."""
    return finite_number(name, value, low=0.0)


# ---------------------------------------------------------------------------------------- data
def _first_module_tensor(*programs: Any) -> torch.Tensor | None:
    for prog in programs:
        if isinstance(prog, torch.nn.Module):
            for t in prog.parameters():
                return t
            for t in prog.buffers():
                return t
    return None


def data_tensor(name: str, x: Any, *, width: int | None = None, dtype: torch.dtype | None = None,
                device: torch.device | str | None = None, min_rows: int = 1) -> torch.Tensor:
    """``x`` as a ``(N, D)`` floating tensor, checked: shape, width ``D``, finite values.

    Parameters
    ----------
    name : str
        The argument's name, for messages.
    x : Tensor or array-like
        Any real dtype; it is converted to ``dtype`` (default: float32 unless ``x`` already is
        floating) and moved to ``device``.
    width : int, optional
        The D that the model or data set expects.

    Raises
    ------
    InputError
        Not array-like, complex or boolean, not 2-D, fewer than ``min_rows`` rows, the wrong
        width, or NaN/inf values (the message gives the count and the first row).
    """
    if not isinstance(x, torch.Tensor):
        try:
            arr = np.asarray(x)
        except Exception as err:  # ragged lists and the like
            raise InputError(f"{name}: cannot be read as an array ({err})") from None
        if arr.dtype == object or arr.dtype.kind not in "biuf":
            raise InputError(f"{name} has dtype {arr.dtype}: expected real numbers (an (N, D) float array)")
        x = torch.from_numpy(np.ascontiguousarray(arr))
    if x.dtype == torch.bool or x.is_complex():
        raise InputError(f"{name} has dtype {x.dtype}: expected real numbers (an (N, D) float tensor)")
    if x.dim() != 2:
        raise InputError(f"{name} has shape {tuple(x.shape)}: expected (N, D), one row per data point")
    if x.shape[0] < min_rows:
        raise InputError(f"{name} has {x.shape[0]} rows: expected at least {min_rows}")
    if width is not None and x.shape[1] != width:
        raise InputError(f"{name} has {x.shape[1]} columns: the model expects D={width} (shape (N, {width}))")
    target = dtype or (x.dtype if x.is_floating_point() else torch.get_default_dtype())
    x = x.to(device=device if device is not None else x.device, dtype=target)
    finite = torch.isfinite(x)
    if not bool(finite.all()):
        bad = ~finite
        row, col = (int(i) for i in bad.nonzero()[0])
        raise InputError(
            f"{name} has {int(bad.sum())} non-finite value(s) (first at row {row}, column {col}: "
            f"{float(x[row, col])}): the input data must be finite"
        )
    return x


def training_data(model: Any, guide: Any, x_train: Any, x_val: Any = None, **numbers_: Any):
    """Check a training call's data against the model, and its numeric arguments.

    Data are converted to the model's dtype and device (:func:`data_tensor`); the width must be
    ``model.obs_dim`` when the model has one; a restart-batched model and guide must have the
    same number of restarts. Keyword arguments are checked by name: ``lr`` and ``beta`` finite
    > 0; ``epochs``, ``batch_size``, ``num_particles`` positive integers; ``alpha``, ``gamma``
    finite.

    For a *group* of runs trained together (a list of tensors, one per run), each member is
    checked as ``x_train[g]``.

    Returns
    -------
    (x_train, x_val) : Tensors, or lists of them for a group (``x_val`` None when it was None)
    """
    ref = _first_module_tensor(model, guide)
    dtype = ref.dtype if ref is not None and ref.is_floating_point() else None
    device = ref.device if ref is not None else None
    width = getattr(model, "obs_dim", None)
    width = width if isinstance(width, int) else None
    for key, value in numbers_.items():
        if value is None:
            continue
        if key in ("lr", "beta"):
            positive_number(key, value)
        elif key in ("epochs", "batch_size", "num_particles"):
            positive_int(key, value)
        else:
            finite_number(key, value)
    r_model, r_guide = getattr(model, "num_restarts", None), getattr(guide, "num_restarts", None)
    if (hasattr(model, "num_restarts") and hasattr(guide, "num_restarts") and r_model != r_guide
            and {r_model, r_guide} != {None, 1}):  # unbatched and a batch of one are both one restart
        raise InputError(f"model has num_restarts={r_model} but guide has num_restarts={r_guide}: "
                         "build both with the same number of restarts")
    guide_width = getattr(guide, "obs_dim", None)
    if isinstance(width, int) and isinstance(guide_width, int) and guide_width != width:
        raise InputError(f"guide has obs_dim={guide_width} but model has obs_dim={width}: build both for the same D")
    def convert(name, x):
        if _is_group(x):
            return [data_tensor(f"{name}[{g}]", t, width=width, dtype=dtype, device=device) for g, t in enumerate(x)]
        return data_tensor(name, x, width=width, dtype=dtype, device=device)

    x_train = convert("x_train", x_train)
    if x_val is not None:
        x_val = convert("x_val", x_val)
    return x_train, x_val


def _is_group(x: Any) -> bool:
    """A list of per-run data tensors (a group), as opposed to one array given as nested lists."""
    return isinstance(x, (list, tuple)) and len(x) > 0 and all(
        isinstance(t, (torch.Tensor, np.ndarray)) and t.ndim == 2 for t in x)


def labelled_data(model: Any, guide: Any, train: Any, val: Any = None, **numbers_: Any):
    """:func:`training_data` for the M2 trainers: ``train``/``val`` are LabelledSplits whose
    ``x`` and ``y`` are checked (finite, the model's width and dtype); returns them converted."""
    out = []
    for name, split in (("train", train), ("val", val)):
        if split is None or not all(hasattr(split, a) for a in ("x", "y", "labelled")) or not hasattr(split, "_replace"):
            out.append(split)  # the trainer's own check names what is missing
            continue
        x, _ = training_data(model, guide, split.x, None, **(numbers_ if name == "train" else {}))
        y = split.y
        if isinstance(y, torch.Tensor) and y.is_floating_point() and y.dim() in (1, 2):
            y = data_tensor(f"{name}.y", y.reshape(y.shape[0], -1), device=x.device).reshape(y.shape)
        out.append(split._replace(x=x, y=y))
    return out[0], out[1]


# -------------------------------------------------------------------------------------- memory
def _meminfo_available() -> int | None:
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _cgroup_limit() -> int | None:
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(path).read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 1 << 60:
            return int(text)
    return None


def available_memory() -> int:
    """Bytes this process may still allocate: MemAvailable, capped by a cgroup limit.

    Falls back to the physical memory size where ``/proc`` is absent.
    """
    candidates = [v for v in (_meminfo_available(), _cgroup_limit()) if v is not None]
    if not candidates:
        try:
            candidates.append(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
        except (ValueError, OSError, AttributeError):
            return 1 << 62
    return min(candidates)


def format_bytes(n: float) -> str:
    """``1.6e12`` → ``"1.6 TB"`` (powers of 1000)."""
    for unit in ("B", "kB", "MB", "GB", "TB", "PB", "EB"):
        if abs(n) < 1000 or unit == "EB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.3g} {unit}"
        n /= 1000
    return f"{n:.3g} EB"  # pragma: no cover


def require_memory(name: str, value: Any, parts: Mapping[str, float], *, available: int | None = None) -> None:
    """Refuse when the estimated bytes ``parts`` (what → bytes) exceed the available memory.

    The message names ``name=value`` (the size responsible), the total and its largest part.
    """
    total = float(sum(parts.values()))
    available = available_memory() if available is None else available
    if total <= available:
        return
    what, most = max(parts.items(), key=lambda kv: kv[1])
    detail = f" (mostly {what}: {format_bytes(most)})" if len(parts) > 1 else f" ({what})"
    raise InputError(f"{_named(name, value)}: needs about {format_bytes(total)} of memory{detail}; "
                     f"about {format_bytes(available)} is available")


def sample_bytes(n: int, columns: int, *, csv: bool = False) -> dict[str, float]:
    """Memory to draw ``n`` points of ``columns`` float32 values (x, z, y, noise, f(z)), and to
    lay them out as CSV rows when ``csv``."""
    parts = {"the drawn arrays": 4.0 * n * columns * 3}
    if csv:
        parts["the CSV rows"] = float(n) * (BYTES_PER_CSV_ROW_CELL * columns + 240)
    return parts


def _layers(width_in: int, hidden: Sequence[int], width_out: int) -> int:
    sizes = [width_in, *hidden, width_out]
    return sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))


def run_bytes(config: Any, dataset: Any) -> dict[str, tuple[str, Any, float]]:
    """Memory a training run needs, by part: ``{what: (field, value, bytes)}``.

    ``config`` is a RunConfig or M2Config (read through ``getattr``). Parts: the training
    history (one row per epoch and restart), the parameters with their gradients and Adam
    moments (encoder and decoder MLPs), one minibatch's activations (restarts × particles ×
    batch × hidden units, forward and backward) and the importance weights of the evaluation
    (eval_samples × test points, float64, with their exponentials). ``field`` is the setting most
    responsible for the part (for activations, the one furthest above its default).
    """
    restarts = int(getattr(config, "restarts", 1) or 1)
    epochs = int(getattr(config, "epochs", 1) or 1)
    hidden = getattr(config, "hidden", None)
    if hidden is None and hasattr(config, "model_hidden"):
        hidden = config.model_hidden()
    hidden = [int(h) for h in (hidden or (50, 50, 50))]
    label = int(getattr(dataset, "label_dim", 0) or 0)
    k = getattr(config, "latent_dim", None) or dataset.latent_dim
    d = dataset.obs_dim
    params = restarts * (_layers(d + label, hidden, 2 * k) + _layers(k + label, hidden, d))
    iwae = "iwae" in (getattr(config, "method", None), getattr(config, "objective", None))
    particles = int(getattr(config, "particles", 1) or 1) if iwae else 1
    batch = int(getattr(config, "batch_size", 100) or 100)
    eval_samples = int(getattr(config, "eval_samples", 1) or 1)
    test = int(dataset.sizes[2]) if hasattr(dataset, "sizes") else 1
    blame = max((("hidden", tuple(hidden), sum(hidden) / 150), ("particles", particles, particles / 20),
                 ("batch_size", batch, batch / 100), ("restarts", restarts, restarts / 10)), key=lambda t: t[2])
    return {
        "the training history": ("epochs", epochs, float(epochs) * restarts * BYTES_PER_HISTORY_ROW),
        "the parameters": ("hidden", tuple(hidden), 4.0 * 4 * params),
        "one minibatch's activations": (blame[0], blame[1], 4.0 * 3 * restarts * particles * batch * (sum(hidden) + 2 * (d + k + label))),
        "the evaluation's importance weights": ("eval_samples", eval_samples, 8.0 * 2 * eval_samples * test),
    }


def check_run(config: Any, dataset: Any, runs_dir: Any = None) -> None:
    """Before a training run: its memory estimate fits and ``runs_dir`` is writable.

    ``runs_dir=None`` skips the folder check.
    """
    parts = run_bytes(config, dataset)
    field_name, value, _ = max(parts.values(), key=lambda part: part[2])
    require_memory(field_name, value, {what: b for what, (_, _, b) in parts.items()})
    if runs_dir is not None:
        output_dir("runs_dir", runs_dir)


# --------------------------------------------------------------------------------------- paths
def _as_path(name: str, path: Any) -> Path:
    if isinstance(path, Path):
        text = str(path)
    elif isinstance(path, (str, os.PathLike)):
        text = os.fspath(path)
    else:
        raise InputError(f"{_named(name, path)}: expected a path")
    if isinstance(text, bytes) or not text.strip():
        raise InputError(f"{_named(name, text)}: expected a non-empty path")
    if "\x00" in text:
        raise InputError(f"{_named(name, text)}: a path cannot contain a NUL character")
    return Path(text)


def _probe(shown: str, folder: Path) -> None:
    """Create ``folder`` (and its missing parents) and a temporary file in it, then remove
    everything created and restore the modification time of the folder that existed, so the
    disk reads as before; :class:`InputError` if any step fails."""
    existing = folder
    missing: list[Path] = []
    while not existing.exists():
        if existing.is_symlink():  # a dangling link: mkdir would fail anyway
            break
        missing.append(existing)
        if existing.parent == existing:
            break
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        raise InputError(f"{shown}: {str(existing)!r} exists and is not a folder")
    created: list[Path] = []
    try:
        times = os.stat(existing) if existing.is_dir() else None
    except OSError:
        times = None
    try:
        for path in reversed(missing):
            path.mkdir()
            created.append(path)
        tmp = folder / f".pyro-vae-write-test-{uuid.uuid4().hex[:12]}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, b"x")
        finally:
            os.close(fd)
            os.unlink(tmp)
    except OSError as err:
        reason = err.strerror or type(err).__name__
        made = isinstance(err.filename, str) and not Path(err.filename).name.startswith(".pyro-vae-write-test-")
        what = f"cannot create the folder {err.filename!r}" if made else f"cannot write in {str(folder)!r}"
        raise InputError(f"{shown}: {what} ({reason})") from None
    finally:
        for path in reversed(created):
            try:
                path.rmdir()
            except OSError:
                pass
        if times is not None:
            try:
                os.utime(existing, ns=(times.st_atime_ns, times.st_mtime_ns))
            except OSError:
                pass


def output_dir(name: str, path: Any) -> Path:
    """A folder that can be created and written in; nothing is left behind by the check."""
    folder = _as_path(name, path)
    shown = _named(name, str(path))
    if folder.exists() and not folder.is_dir():
        raise InputError(f"{shown}: exists and is not a folder")
    _probe(shown, folder)
    return folder


def output_file(name: str, path: Any, suffixes: Iterable[str] | None = None) -> Path:
    """A file path whose folder can be created and written in; nothing is left behind.

    ``suffixes`` (e.g. ``(".csv", ".npz")``) are the allowed extensions, case-insensitive.
    """
    target = _as_path(name, path)
    shown = _named(name, str(path))
    if suffixes is not None:
        allowed = tuple(s.lower() for s in suffixes)
        if target.suffix.lower() not in allowed:
            raise InputError(f"{shown}: expected a file name ending in {' or '.join(allowed)}")
    if target.is_dir() or str(path).endswith(os.sep):
        raise InputError(f"{shown}: is a folder; expected a file name")
    if target.exists() and not os.access(target, os.W_OK):
        raise InputError(f"{shown}: the file exists and cannot be overwritten")
    _probe(shown, target.parent)
    return target
