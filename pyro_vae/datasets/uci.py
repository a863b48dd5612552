"""The three real semi-supervised data sets of 004 (Section 7, App. D and E.3).

================================  ==========  ====================  =========================
name                              rows × x    label (classes)       file, format
================================  ==========  ====================  =========================
``diabetic_retinopathy``          1151 × 19   DR signs: 540 / 611   messidor_features.arff, ARFF
``contraceptive``                 1473 × 9    method: 629/333/511   cmc.data, headerless CSV
``titanic``                       2201 × 3    survived: 1490 / 711  titanic.dat, KEEL .dat
================================  ==========  ====================  =========================

Sources: Diabetic Retinopathy Debrecen (UCI 329; Antal & Hajdu 2014, CC BY 4.0), Contraceptive
Method Choice (UCI 30; Lim 1997, CC BY 4.0) and the KEEL Titanic table (Alcalá-Fdez et al.
2011; Dawson 1995). The files are fetched from pinned commits of public repositories that
hold byte-identical copies of the originals (:data:`UCI_FILES`), and every file is checked
against its SHA-256 before it is parsed.

Where a file is looked for: in ``data_dir`` when given (it must be there), else in the cache
``$PYRO_VAE_CACHE/uci`` (default ``~/.cache/pyro-vae/uci``). A file missing from the cache is
downloaded (``download=True``) from its URL — or from ``base_url + "/" + remote name`` — and
written atomically once its checksum matches; offline, the error says where to put the file.

Splits (004 App. D): split ``s`` (0–4 are the paper's five) permutes the rows with seed ``s``
and cuts them into train/validation/test thirds (the one or two left-over rows go to train);
in every part ``round(labelled_fraction · n)`` labels are marked visible (default 10%).
Features are standardised with the training part's mean and standard deviation; labels are
one-hot ``(n, C)``. Real data has no latent truth, so ``z`` is an empty ``(n, 0)`` tensor.
"""

from __future__ import annotations

import hashlib
import io
import os
import urllib.error
import urllib.request
import zipfile
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from pyro_vae.datasets.base import Dataset, LabelledSplit, Splits, check_seed
from pyro_vae.io import atomic_write_bytes

MAX_DOWNLOAD_BYTES = 16 * 2**20
NUM_SPLITS = 5  # 004 App. D: "split in 5 different ways"


class UCIFileError(ValueError):
    """A UCI data file is missing, cannot be fetched, or cannot be parsed; the message says
    where to put a good copy."""


class ChecksumError(UCIFileError):
    """A UCI data file's SHA-256 is not the expected one."""


class UCIFile(NamedTuple):
    """Where one data file comes from and what it must hash to."""

    filename: str  # name in data_dir / the cache
    sha256: str  # of the data file itself (for a zip: of the member)
    url: str  # pinned public URL
    remote_name: str  # the URL's last component (joined to base_url when one is given)
    member: str | None = None  # the file inside a zip download


UCI_FILES: dict[str, UCIFile] = {
    "diabetic_retinopathy": UCIFile(
        "messidor_features.arff",
        "b83485dd519127ac1ba06a95da5f1d12d4bde2a362eb32d7d353bdcabfa08a93",
        "https://raw.githubusercontent.com/samiragarwala/diabetic_retinopathy_detection/"
        "2fdf839e4da898d72efc62d4fd291ff971c65025/messidor_features.arff",
        "messidor_features.arff",
    ),
    "contraceptive": UCIFile(
        "cmc.data",
        "ad2a49da55df24b061a994ecc4d90c856aba35acd05138851aa251c4f06303c9",
        "https://raw.githubusercontent.com/sachinruk/deepschool.io/"
        "e74e54376227d9ccaa1de62e96444adb8c132e5a/data/cmc.data",
        "cmc.data",
    ),
    "titanic": UCIFile(
        "titanic.dat",
        "367671d4845539ff66774acd4ccff332e466664ea49dd179ee103193be8e0349",
        "https://raw.githubusercontent.com/leandrodinizsilva/Tp1-Alg2/"
        "cfe996bd9782115a3d150dea3e50f5177d8b8e49/data/ZipFiles/titanic.zip",
        "titanic.zip",
        member="titanic.dat",
    ),
}


class UCITable(NamedTuple):
    """A parsed table: features ``x`` (N, d) float64, labels ``y`` (N,) int64 in 0..C−1."""

    x: np.ndarray
    y: np.ndarray
    classes: tuple[str, ...]
    feature_names: tuple[str, ...]


# --------------------------------------------------------------------------- locating files
def default_cache_dir() -> Path:
    """``$PYRO_VAE_CACHE/uci``, or ``~/.cache/pyro-vae/uci``."""
    root = os.environ.get("PYRO_VAE_CACHE")
    return (Path(root) if root else Path.home() / ".cache" / "pyro-vae") / "uci"


def _spec(name: str) -> UCIFile:
    if name not in UCI_FILES:
        raise ValueError(f"name={name!r}: expected one of {sorted(UCI_FILES)}")
    return UCI_FILES[name]


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _verify(data: bytes, spec: UCIFile, where: str) -> None:
    actual = sha256_hex(data)
    if actual != spec.sha256:
        raise ChecksumError(
            f"{where}: sha256 {actual} does not match the expected {spec.sha256} of {spec.filename}; "
            f"the file is corrupted or a different version — replace it with the original from {spec.url}"
        )


def _how_to_provide(spec: UCIFile, cache: Path) -> str:
    return (f"put {spec.filename} (sha256 {spec.sha256}, from {spec.url}) in {cache} "
            f"or in a folder passed as data_dir (--data-dir)")


def _fetch(url: str, timeout: float) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (http/https only, checked)
        data = response.read(MAX_DOWNLOAD_BYTES + 1)
    if len(data) > MAX_DOWNLOAD_BYTES:
        raise UCIFileError(f"{url}: larger than {MAX_DOWNLOAD_BYTES} bytes; refusing it")
    return data


def download(name: str, cache_dir: str | os.PathLike | None = None, *, base_url: str | None = None,
             timeout: float = 30.0) -> Path:
    """Fetch the file of ``name`` into the cache, verify it, and write it atomically.

    Parameters
    ----------
    name : str
        One of :data:`UCI_FILES`.
    cache_dir : path, optional
        Default :func:`default_cache_dir`.
    base_url : str, optional
        Fetch ``base_url/<remote name>`` instead of the pinned URL (e.g. a mirror).
    timeout : float
        Seconds for the connection.

    Raises
    ------
    UCIFileError
        Offline or unreachable (the message says where to put the file by hand), or a bad zip.
    ChecksumError
        The fetched bytes hash to something else; nothing is written.
    """
    spec = _spec(name)
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    url = spec.url if base_url is None else f"{base_url.rstrip('/')}/{spec.remote_name}"
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"base_url={base_url!r}: expected an http:// or https:// URL")
    try:
        data = _fetch(url, timeout)
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise UCIFileError(f"could not download {url} ({reason}); {_how_to_provide(spec, cache)}") from err
    if spec.member is not None:
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                data = archive.read(spec.member)
        except (zipfile.BadZipFile, KeyError) as err:
            raise UCIFileError(f"{url}: not a zip holding {spec.member} ({err}); {_how_to_provide(spec, cache)}") from err
    _verify(data, spec, f"download from {url}")
    return atomic_write_bytes(cache / spec.filename, data)


def locate(name: str, data_dir: str | os.PathLike | None = None, *, cache_dir: str | os.PathLike | None = None,
           download_missing: bool = True, base_url: str | None = None, timeout: float = 30.0) -> Path:
    """Path of the verified data file of ``name`` (see the module doc for where it is looked for).

    Raises
    ------
    UCIFileError
        Missing (and not downloadable), with a message that says where to put it.
    ChecksumError
        Present but with the wrong SHA-256.
    """
    spec = _spec(name)
    if data_dir is not None:
        path = Path(data_dir) / spec.filename
        if not path.is_file():
            raise UCIFileError(f"data_dir={str(data_dir)!r} has no {spec.filename}; put {spec.filename} "
                               f"(sha256 {spec.sha256}, from {spec.url}) there, or leave data_dir out to use the cache")
        _verify(path.read_bytes(), spec, str(path))
        return path
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = cache / spec.filename
    if path.is_file():
        _verify(path.read_bytes(), spec, f"{path} (delete it to download it again)")
        return path
    if not download_missing:
        raise UCIFileError(f"{spec.filename} is not in the cache {cache} and downloading is off; "
                           f"{_how_to_provide(spec, cache)}")
    return download(name, cache, base_url=base_url, timeout=timeout)


# --------------------------------------------------------------------------- parsing
def parse_arff(text: str) -> tuple[list[tuple[str, str]], list[list[str]]]:
    """Attributes ``(name, type)`` and the comma-separated data rows of an ARFF or KEEL .dat text.

    Handles ``@relation``, ``@attribute NAME TYPE`` (a nominal type ``{a,b}`` or a KEEL
    ``real[lo,hi]``), KEEL's ``@inputs`` / ``@outputs``, ``%`` comments and blank lines.
    """
    attributes: list[tuple[str, str]] = []
    rows: list[list[str]] = []
    in_data = False
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("%"):
            continue
        if in_data:
            rows.append([cell.strip() for cell in line.split(",")])
            continue
        keyword = line.split(None, 1)[0].lower()
        if keyword == "@attribute":
            parts = line.split(None, 2)
            if len(parts) < 3:
                raise UCIFileError(f"line {number}: malformed @attribute {line!r}")
            attributes.append((parts[1], parts[2].strip()))
        elif keyword == "@data":
            in_data = True
        elif keyword not in ("@relation", "@inputs", "@outputs"):
            raise UCIFileError(f"line {number}: unexpected header line {line!r}")
    if not in_data:
        raise UCIFileError("no @data section")
    width = len(attributes)
    for i, row in enumerate(rows):
        if len(row) != width:
            raise UCIFileError(f"data row {i + 1} has {len(row)} values; the header declares {width} attributes")
    return attributes, rows


def _floats(rows: list[list[str]], columns: slice) -> np.ndarray:
    try:
        return np.array([[float(v) for v in row[columns]] for row in rows], dtype=np.float64)
    except ValueError as err:
        raise UCIFileError(f"a feature value is not a number: {err}") from err


def _codes(values: list[str], mapping: dict[str, int], what: str) -> np.ndarray:
    unknown = sorted(set(values) - set(mapping))
    if unknown:
        raise UCIFileError(f"{what}: unexpected label {unknown[0]!r}; expected one of {sorted(mapping)}")
    return np.array([mapping[v] for v in values], dtype=np.int64)


def _parse_retinopathy(data: bytes) -> UCITable:
    attributes, rows = parse_arff(data.decode("ascii"))
    x = _floats(rows, slice(0, -1))
    y = _codes([row[-1] for row in rows], {"0": 0, "1": 1}, "Class")
    return UCITable(x, y, ("no signs of DR", "signs of DR"), tuple(a for a, _ in attributes[:-1]))


CMC_COLUMNS = ("wife_age", "wife_education", "husband_education", "children", "wife_religion", "wife_working",
               "husband_occupation", "living_standard", "media_exposure")


def _parse_contraceptive(data: bytes) -> UCITable:
    rows = [line.split(",") for line in data.decode("ascii").splitlines() if line.strip()]
    if any(len(row) != 10 for row in rows):
        raise UCIFileError("cmc.data: expected 10 comma-separated values per row")
    x = _floats(rows, slice(0, 9))
    y = _codes([row[9].strip() for row in rows], {"1": 0, "2": 1, "3": 2}, "contraceptive method")
    return UCITable(x, y, ("no-use", "long-term", "short-term"), CMC_COLUMNS)


def _parse_titanic(data: bytes) -> UCITable:
    attributes, rows = parse_arff(data.decode("ascii"))
    x = _floats(rows, slice(0, -1))
    y = _codes([row[-1] for row in rows], {"-1.0": 0, "1.0": 1}, "Survived")
    return UCITable(x, y, ("died", "survived"), tuple(a for a, _ in attributes[:-1]))


_PARSERS = {"diabetic_retinopathy": _parse_retinopathy, "contraceptive": _parse_contraceptive,
            "titanic": _parse_titanic}


def load_uci_table(name: str, data_dir: str | os.PathLike | None = None, **locate_options: Any) -> UCITable:
    """Locate (and if needed download), verify and parse the raw table of ``name``."""
    path = locate(name, data_dir, **locate_options)
    return _PARSERS[name](path.read_bytes())


def standardise(x: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """``(x − mean) / sd`` with the reference rows' mean and sd (sd 0 is treated as 1)."""
    mean, sd = reference.mean(0), reference.std(0)
    return (x - mean) / np.where(sd > 0, sd, 1.0)


# --------------------------------------------------------------------------- data sets
def thirds(n: int) -> tuple[int, int, int]:
    """Train/validation/test sizes of ``n`` rows cut in thirds; train takes the remainder."""
    third = n // 3
    return n - 2 * third, third, third


class _UCIDataset(Dataset):
    """A real table with a partially observed discrete label (004 App. D, E.3).

    Parameters
    ----------
    labelled_fraction : float
        Share of each part whose labels are visible (default 0.1, 004 App. D).
    data_dir : str, optional
        Folder holding the original file (else the cache, see the module doc).
    download_dir : str, optional
        The cache folder: overrides ``$PYRO_VAE_CACHE/uci``.
    download : bool
        Fetch a file missing from the cache.
    base_url : str, optional
        Download from ``base_url/<remote name>`` instead of the pinned URL.

    Nothing is read until :meth:`splits` or :meth:`table` is called.
    """

    label_kind = "discrete"
    conditions = "n/a"
    supports_surrogate = False
    num_rows: int = 0
    classes: tuple[str, ...] = ()

    def __init__(self, labelled_fraction: float = 0.1, data_dir: str | None = None, download_dir: str | None = None,
                 download: bool = True, base_url: str | None = None):
        super().__init__()
        try:
            self.labelled_fraction = float(labelled_fraction)
        except (TypeError, ValueError):
            self.labelled_fraction = float("nan")
        if not 0.0 <= self.labelled_fraction <= 1.0:
            raise ValueError(f"labelled_fraction={labelled_fraction!r}: expected a number in [0, 1]")
        if not isinstance(download, bool):
            raise ValueError(f"download={download!r}: expected True or False")
        if base_url is not None and not str(base_url).startswith(("http://", "https://")):
            raise ValueError(f"base_url={base_url!r}: expected an http:// or https:// URL")
        self.data_dir, self.download_dir, self.download, self.base_url = data_dir, download_dir, download, base_url
        self.params = {"labelled_fraction": self.labelled_fraction}
        self._table: UCITable | None = None

    @property
    def label_dim(self) -> int:
        return len(self.classes)

    def table(self) -> UCITable:
        """The raw table (located, verified and parsed on first use)."""
        if self._table is None:
            self._table = load_uci_table(self.name, self.data_dir, cache_dir=self.download_dir,
                                         download_missing=self.download, base_url=self.base_url)
        return self._table

    def splits(self, seed: int = 0, device="cpu") -> Splits:
        """Split ``seed`` (0–4 are 004's five): standardised train/val/test thirds with label masks."""
        gen = torch.Generator().manual_seed(check_seed(seed))
        table = self.table()
        n = table.x.shape[0]
        order = torch.randperm(n, generator=gen).numpy()
        sizes = self.sizes
        bounds = np.cumsum((0, *sizes))
        index = [order[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
        x = standardise(table.x, table.x[index[0]])
        onehot = np.eye(len(self.classes), dtype=np.float32)[table.y]
        parts = []
        for idx in index:
            mask = torch.zeros(len(idx), dtype=torch.bool)
            mask[torch.randperm(len(idx), generator=gen)[: round(self.labelled_fraction * len(idx))]] = True
            parts.append(LabelledSplit(
                torch.as_tensor(x[idx], dtype=torch.float32).to(device),
                torch.zeros(len(idx), 0, device=device),
                torch.as_tensor(onehot[idx]).to(device),
                mask.to(device),
            ))
        return Splits(*parts)

    def _no_process(self, what: str):
        raise ValueError(f"{self.name!r} is a real data set: it has no known generative process ({what}); use splits()")

    def true_f(self, z, y=None):
        self._no_process("true_f")

    def f(self, z, y=None):
        self._no_process("f")

    def model(self, *args, **kwargs):
        self._no_process("model")

    def sample(self, n: int, seed: int, device="cpu"):
        self._no_process("sample")


class DiabeticRetinopathy(_UCIDataset):
    """Diabetic Retinopathy Debrecen (UCI 329): 1151 × 19 features, y = signs of DR (540 / 611)."""

    name, paper = "diabetic_retinopathy", "004 App. D, E.3 (UCI 329)"
    num_rows, obs_dim, latent_dim, noise_var = 1151, 19, 2, 0.5
    classes = ("no signs of DR", "signs of DR")
    sizes = thirds(1151)


class Contraceptive(_UCIDataset):
    """Contraceptive Method Choice (UCI 30): 1473 × 9 features, y = method (629 / 333 / 511)."""

    name, paper = "contraceptive", "004 App. D, E.3 (UCI 30)"
    num_rows, obs_dim, latent_dim, noise_var = 1473, 9, 2, 0.5
    classes = ("no-use", "long-term", "short-term")
    sizes = thirds(1473)


class Titanic(_UCIDataset):
    """Titanic, KEEL version: 2201 × 3 features (class, age, sex), y = survived (1490 / 711)."""

    name, paper = "titanic", "004 App. D, E.3 (KEEL titanic)"
    num_rows, obs_dim, latent_dim, noise_var = 2201, 3, 1, 0.5
    classes = ("died", "survived")
    sizes = thirds(2201)
