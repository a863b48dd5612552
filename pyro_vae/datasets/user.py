"""A data set read from the user's own file: observations without a known generative process.

``pyro-vae fit-data`` trains a VAE on it through the ordinary pipeline (``RunConfig`` with
``dataset="file"``), so the run lands in the run store like any benchmark run; ``pyro-vae
diagnose`` then checks it. The file is a CSV with a header row, an NPZ (array ``x``, or its only
2-D array) or an NPY (one 2-D array). An optional labels column (a CSV column name, an NPZ array
name, or an NPY column index) is kept apart from ``x`` for the semi-supervised check.

There is no truth: ``true_f`` raises, ``has_truth`` is False and the pipeline skips the metrics
that need the true p(x). A run stores the file's path and SHA-256; reloading a changed file is
an error rather than a silent mismatch.
"""

from __future__ import annotations

import csv
import hashlib
import math
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from pyro_vae.datasets.base import Dataset, Split, Splits, check_seed

DATA_EXTENSIONS = (".csv", ".npz", ".npy")
SPLIT_FRACTIONS = (5 / 9, 2 / 9, 2 / 9)  # the papers' 5000/2000/2000
MIN_ROWS = 30


class DataFileError(ValueError):
    """A data file that cannot be used: the message names the file and what is wrong."""


class DataTable(NamedTuple):
    """Observations ``x`` (N, D) float64, labels ``y`` (N,) or None, and the column names."""

    x: np.ndarray
    y: np.ndarray | None
    columns: list[str]
    label_name: str | None


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _numeric(values: list[str], where: str) -> np.ndarray:
    out = np.empty(len(values))
    for i, text in enumerate(values):
        try:
            out[i] = float(text)
        except ValueError:
            raise DataFileError(f"{where}, row {i + 2}: {text!r} is not a number") from None
    return out


def _read_csv(path: Path, labels: str | None) -> tuple[np.ndarray, np.ndarray | None, list[str]]:
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f))
    if not rows or not any(cell.strip() for cell in rows[0]):
        raise DataFileError(f"{str(path)!r} is empty: expected a header row of column names")
    header = [cell.strip() for cell in rows[0]]
    body = [row for row in rows[1:] if any(cell.strip() for cell in row)]
    for i, row in enumerate(body):
        if len(row) != len(header):
            raise DataFileError(f"{str(path)!r}, row {i + 2}: {len(row)} cells, expected {len(header)} (the header's)")
    if labels is not None and labels not in header:
        raise DataFileError(f"labels column {labels!r} is not in {str(path)!r}; its columns are {header}")
    cols = [c for c in header if c != labels]
    if not cols:
        raise DataFileError(f"{str(path)!r} has no data columns besides the labels {labels!r}")
    x = np.stack([_numeric([r[header.index(c)].strip() for r in body], f"{str(path)!r}, column {c!r}") for c in cols], 1) \
        if body else np.empty((0, len(cols)))
    y = None if labels is None else np.array([r[header.index(labels)].strip() for r in body])
    return x, y, cols


def _read_npz(path: Path, labels: str | None) -> tuple[np.ndarray, np.ndarray | None, list[str]]:
    with np.load(path, allow_pickle=False) as data:
        arrays = {name: data[name] for name in data.files}
    if labels is not None and labels not in arrays:
        raise DataFileError(f"labels array {labels!r} is not in {str(path)!r}; its arrays are {sorted(arrays)}")
    if "x" in arrays and labels != "x":
        name = "x"
    else:
        two_d = [n for n, a in arrays.items() if a.ndim == 2 and n != labels]
        if len(two_d) != 1:
            raise DataFileError(
                f"{str(path)!r}: cannot tell which array holds the data; name it 'x' (2-D arrays: {sorted(two_d)})"
            )
        name = two_d[0]
    x = arrays[name]
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2:
        raise DataFileError(f"{str(path)!r}: array {name!r} has shape {x.shape}; expected (N, D)")
    y = None if labels is None else arrays[labels]
    return x, y, [f"{name}{j + 1}" for j in range(x.shape[1])]


def _read_npy(path: Path, labels: str | None) -> tuple[np.ndarray, np.ndarray | None, list[str]]:
    table = np.load(path, allow_pickle=False)
    if table.ndim != 2:
        raise DataFileError(f"{str(path)!r} holds an array of shape {table.shape}; expected (N, D)")
    if labels is None:
        return table, None, [f"x{j + 1}" for j in range(table.shape[1])]
    try:
        index = int(labels)
    except ValueError:
        raise DataFileError(f"labels {labels!r}: an .npy file names its labels by column index (e.g. -1)") from None
    if not -table.shape[1] <= index < table.shape[1]:
        raise DataFileError(f"labels column {index} is outside the {table.shape[1]} columns of {str(path)!r}")
    index %= table.shape[1]
    keep = [j for j in range(table.shape[1]) if j != index]
    if not keep:
        raise DataFileError(f"{str(path)!r} has no data columns besides the labels column {index}")
    return table[:, keep], table[:, index], [f"x{j + 1}" for j in keep]


def _encode_labels(y: np.ndarray, path: Path) -> np.ndarray:
    """Labels as integer class indices: one-hot rows are argmax'ed, anything else is factorised."""
    if y.ndim == 2 and y.shape[1] > 1:
        if not (np.isin(y, (0, 1)).all() and (y.sum(1) == 1).all()):
            raise DataFileError(f"{str(path)!r}: 2-D labels must be one-hot rows")
        return y.argmax(1)
    y = y.reshape(-1)
    _, codes = np.unique(y.astype(str) if y.dtype.kind in "OUS" else y, return_inverse=True)
    return codes.reshape(-1)


def read_data_file(path: str | Path, labels: str | None = None) -> DataTable:
    """Read observations (and optional labels) from a CSV, NPZ or NPY file.

    Parameters
    ----------
    path : str or Path
        ``.csv`` (header row; every cell numeric except the labels column), ``.npz`` (array
        ``x`` or its only 2-D array) or ``.npy`` (one 2-D array).
    labels : str, optional
        The labels: a CSV column name, an NPZ array name, an NPY column index.

    Returns
    -------
    DataTable

    Raises
    ------
    DataFileError
        Missing file, unknown extension, unreadable or non-numeric cells, non-finite values,
        a missing labels column, fewer than 30 rows or a constant column; the message names the
        file and the problem.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in DATA_EXTENSIONS:
        raise DataFileError(f"{str(path)!r}: unknown extension {suffix or '(none)'!r}; expected one of {DATA_EXTENSIONS}")
    if not path.is_file():
        raise DataFileError(f"{str(path)!r} does not exist or is not a file")
    reader = {".csv": _read_csv, ".npz": _read_npz, ".npy": _read_npy}[suffix]
    try:
        x, y, columns = reader(path, labels)
    except DataFileError:
        raise
    except (OSError, UnicodeDecodeError, ValueError, EOFError) as err:
        raise DataFileError(f"{str(path)!r} is unreadable: {err}") from err
    try:
        x = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError):
        raise DataFileError(f"{str(path)!r}: the data are not numeric (dtype {np.asarray(x).dtype})") from None
    if x.shape[0] < MIN_ROWS:
        raise DataFileError(f"{str(path)!r} has {x.shape[0]} rows; at least {MIN_ROWS} are needed")
    bad = ~np.isfinite(x)
    if bad.any():
        row, col = map(int, np.argwhere(bad)[0])
        raise DataFileError(f"{str(path)!r}: {int(bad.sum())} non-finite values (first at row {row + 1}, column {columns[col]!r})")
    constant = [c for c, sd in zip(columns, x.std(0)) if sd == 0]
    if constant:
        raise DataFileError(f"{str(path)!r}: column {constant[0]!r} is constant; drop it")
    codes = None
    if y is not None:
        if y.shape[0] != x.shape[0]:
            raise DataFileError(f"{str(path)!r}: {y.shape[0]} labels for {x.shape[0]} rows")
        codes = _encode_labels(np.asarray(y), path)
    return DataTable(x, codes, columns, labels)


class FileData(Dataset):
    """Observations from a file, split 5/9 : 2/9 : 2/9 into train/validation/test by ``seed``.

    Parameters
    ----------
    path : str
        The data file (see :func:`read_data_file`).
    labels : str, optional
        Its labels column / array / index; kept as ``self.y`` and never trained on.
    latent_dim : int
        K of the model to fit (there is no true K).
    noise_var : float, optional
        σ² of the model (the initial value when it is learned); default 1 % of the mean
        per-column variance.
    sha256 : str, optional
        Expected SHA-256 of the file (a run records it; a changed file is an error).
    """

    name = "file"
    paper = "user data (no known generative process)"
    conditions = "unknown"
    has_truth = False

    def __init__(self, path: str | None = None, labels: str | None = None, latent_dim: int = 1,
                 noise_var: float | None = None, sha256: str | None = None):
        super().__init__()
        if path is None:
            raise ValueError("path=None: the 'file' data set reads the observations from path=FILE (.csv, .npz or .npy)")
        if isinstance(latent_dim, bool) or not isinstance(latent_dim, int) or latent_dim < 1:
            raise ValueError(f"latent_dim={latent_dim!r}: expected a positive integer")
        table = read_data_file(path, labels)
        digest = file_sha256(path)
        if sha256 is not None and sha256 != digest:
            raise DataFileError(f"{str(path)!r} changed since the run was trained (SHA-256 {digest[:12]}…, recorded {sha256[:12]}…)")
        self.table = table
        self.x = torch.as_tensor(table.x, dtype=torch.float32)
        self.y = None if table.y is None else torch.as_tensor(table.y)
        self.latent_dim, self.obs_dim = latent_dim, table.x.shape[1]
        if noise_var is None:
            noise_var = 0.01 * float(table.x.var(0).mean())
        if not (isinstance(noise_var, (int, float)) and not isinstance(noise_var, bool) and 0 < noise_var < math.inf):
            raise ValueError(f"noise_var={noise_var!r}: expected a positive number")
        self.noise_var = float(noise_var)
        n = table.x.shape[0]
        n_val = n_test = int(round(n * SPLIT_FRACTIONS[1]))
        self.sizes = (n - n_val - n_test, n_val, n_test)
        self.params = {"path": str(path), "labels": labels, "latent_dim": latent_dim,
                       "noise_var": self.noise_var, "sha256": digest}

    def true_f(self, z: torch.Tensor) -> torch.Tensor:
        raise ValueError("data set 'file' has no known generative process (no true f)")

    def sample(self, n: int, seed: int, device="cpu"):
        raise ValueError("data set 'file' cannot draw new points: it has no known generative process")

    def permutation(self, seed: int) -> torch.Tensor:
        """The row order that ``splits(seed)`` cuts into train, validation and test."""
        gen = torch.Generator().manual_seed(check_seed(seed))
        return torch.randperm(self.x.shape[0], generator=gen)

    def splits(self, seed: int = 0, device="cpu") -> Splits:
        order = self.permutation(seed)
        parts, start = [], 0
        for size in self.sizes:
            idx = order[start : start + size]
            x = self.x[idx].to(device)
            parts.append(Split(x, torch.full((size, self.latent_dim), math.nan, device=device)))
            start += size
        return Splits(*parts)
