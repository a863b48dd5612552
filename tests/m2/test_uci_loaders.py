"""UCI loaders: parsing the original files, checksums, splits, and downloads from a loopback server.

The data files are not in the repository: the tests read the copies in ``<clone>/../shared/data/uci``
(see its README for their provenance and checksums) and are skipped where that folder is absent.
"""

from __future__ import annotations

import functools
import http.server
import io
import shutil
import socket
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from pyro_vae.datasets import LabelledSplit, get_dataset
from pyro_vae.datasets.uci import (
    UCI_FILES,
    ChecksumError,
    UCIFileError,
    default_cache_dir,
    load_uci_table,
    locate,
    parse_arff,
)

SHARED_UCI = (Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "uci").resolve()
needs_shared = pytest.mark.skipif(
    not all((SHARED_UCI / spec.filename).is_file() for spec in UCI_FILES.values()),
    reason=f"the shared UCI copies are not at {SHARED_UCI} (a clone without ../shared beside it)",
)
# name: (rows, features, class counts)
EXPECTED = {
    "diabetic_retinopathy": (1151, 19, [540, 611]),
    "contraceptive": (1473, 9, [629, 333, 511]),
    "titanic": (2201, 3, [1490, 711]),
}


@needs_shared
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_tables_have_the_documented_shapes_and_class_counts(name):
    rows, features, counts = EXPECTED[name]
    table = load_uci_table(name, SHARED_UCI)
    assert table.x.shape == (rows, features) and table.x.dtype == np.float64
    assert np.bincount(table.y).tolist() == counts
    assert len(table.classes) == len(counts) and len(table.feature_names) == features
    assert np.isfinite(table.x).all()


@needs_shared
def test_parsed_values_match_the_files():
    dr = load_uci_table("diabetic_retinopathy", SHARED_UCI)
    assert dr.x[0, :4].tolist() == [1, 1, 22, 22] and dr.x[0, 8] == pytest.approx(49.895756) and dr.y[0] == 0
    cmc = load_uci_table("contraceptive", SHARED_UCI)
    assert cmc.x[0].tolist() == [24, 2, 3, 3, 1, 1, 2, 3, 0] and cmc.y[0] == 0  # method 1 = no-use
    titanic = load_uci_table("titanic", SHARED_UCI)
    assert titanic.x[0].tolist() == [-1.87, -0.228, 0.521] and titanic.y[0] == 0
    assert titanic.x[1].tolist() == [-0.923, -0.228, -1.92] and titanic.y[1] == 1


def test_arff_parser_handles_keel_headers_and_rejects_ragged_rows():
    text = "@relation t\n@attribute A real[0,1]  \n@attribute C {a,b}\n@inputs A\n@outputs C\n% note\n@data\n0.5, a\n\n1,b\n"
    attributes, rows = parse_arff(text)
    assert attributes == [("A", "real[0,1]"), ("C", "{a,b}")] and rows == [["0.5", "a"], ["1", "b"]]
    with pytest.raises(UCIFileError, match="row 2 has 3 values"):
        parse_arff("@attribute A numeric\n@attribute C {a,b}\n@data\n1,a\n1,2,b\n")
    with pytest.raises(UCIFileError, match="no @data"):
        parse_arff("@attribute A numeric\n")


@needs_shared
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_five_splits_into_equal_thirds_with_ten_percent_labels(name):
    rows, features, counts = EXPECTED[name]
    ds = get_dataset(name, data_dir=str(SHARED_UCI))
    assert (ds.obs_dim, ds.label_dim, ds.label_kind) == (features, len(counts), "discrete")
    first = None
    for seed in range(5):
        splits = ds.splits(seed)
        sizes = [part.x.shape[0] for part in splits]
        assert sum(sizes) == rows and max(sizes) - min(sizes) <= 2 and tuple(sizes) == ds.sizes
        for part in splits:
            assert isinstance(part, LabelledSplit) and part.z.shape == (part.x.shape[0], 0)
            assert part.y.shape == (part.x.shape[0], len(counts)) and (part.y.sum(-1) == 1).all()
            assert int(part.labelled.sum()) == round(0.1 * part.x.shape[0])
        train = splits.train.x.double()
        assert torch.allclose(train.mean(0), torch.zeros(features, dtype=torch.float64), atol=1e-5)
        sd = train.std(0, unbiased=False)
        constant = sd < 1e-12  # e.g. retinopathy's "quality" column (4 zeros in 1151) can be all 1 in a third
        assert torch.all((sd[~constant] - 1).abs() < 1e-4) and constant.sum() <= 1
        # the three parts hold every row exactly once (class counts add up)
        total = sum(part.y.sum(0) for part in splits)
        assert total.tolist() == counts
        if first is None:
            first = splits
    assert not torch.equal(first.train.x, ds.splits(1).train.x)
    assert torch.equal(first.test.x, ds.splits(0).test.x)


@needs_shared
def test_labelled_fraction_and_real_data_has_no_process():
    ds = get_dataset("titanic", data_dir=str(SHARED_UCI), labelled_fraction=0.5)
    assert int(ds.splits(0).train.labelled.sum()) == round(0.5 * ds.sizes[0])
    with pytest.raises(ValueError, match="real data set"):
        ds.sample(5, seed=0)
    with pytest.raises(ValueError, match="labelled_fraction=2"):
        get_dataset("titanic", labelled_fraction=2)


def _corrupt(src: Path, dest: Path) -> Path:
    data = bytearray(src.read_bytes())
    data[len(data) // 2] ^= 0x01  # one byte changed
    dest.write_bytes(bytes(data))
    return dest


@needs_shared
def test_a_corrupted_file_is_rejected(tmp_path):
    for spec in UCI_FILES.values():
        _corrupt(SHARED_UCI / spec.filename, tmp_path / spec.filename)
    for name in UCI_FILES:
        with pytest.raises(ChecksumError, match="does not match the expected"):
            load_uci_table(name, tmp_path)


def test_missing_file_in_data_dir_says_where_to_put_it(tmp_path):
    with pytest.raises(UCIFileError, match=r"has no cmc\.data; put cmc\.data .*sha256"):
        locate("contraceptive", tmp_path)
    with pytest.raises(UCIFileError, match=rf"not in the cache {tmp_path}.*put titanic\.dat"):
        locate("titanic", cache_dir=tmp_path, download_missing=False)


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("PYRO_VAE_CACHE", str(tmp_path))
    assert default_cache_dir() == tmp_path / "uci"


# --------------------------------------------------------------------------- loopback server
class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest output clean
        pass


@pytest.fixture
def server(tmp_path):
    """An HTTP server on 127.0.0.1 (ephemeral port) serving ``tmp_path/"www"``, shut down after."""
    root = tmp_path / "www"
    root.mkdir()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(root)))
    httpd.timeout = 5
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{httpd.server_address[1]}/mirror"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def _serve_originals(root: Path) -> Path:
    mirror = root / "mirror"
    mirror.mkdir()
    shutil.copy(SHARED_UCI / "messidor_features.arff", mirror / "messidor_features.arff")
    shutil.copy(SHARED_UCI / "cmc.data", mirror / "cmc.data")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:  # KEEL ships titanic.dat inside titanic.zip
        archive.write(SHARED_UCI / "titanic.dat", "titanic.dat")
    (mirror / "titanic.zip").write_bytes(buffer.getvalue())
    return mirror


@needs_shared
def test_download_into_the_cache_from_a_loopback_server(server, tmp_path):
    root, base_url = server
    _serve_originals(root)
    cache = tmp_path / "cache"
    for name, (rows, features, counts) in EXPECTED.items():
        path = locate(name, cache_dir=cache, base_url=base_url, timeout=10)
        assert path == cache / UCI_FILES[name].filename
        assert path.read_bytes() == (SHARED_UCI / UCI_FILES[name].filename).read_bytes()
        table = load_uci_table(name, cache_dir=cache, download_missing=False)
        assert table.x.shape == (rows, features) and np.bincount(table.y).tolist() == counts
    assert sorted(p.name for p in cache.iterdir()) == sorted(spec.filename for spec in UCI_FILES.values())
    # through the registry, as the pipeline calls it
    ds = get_dataset("contraceptive", download_dir=str(tmp_path / "cache2"), base_url=base_url)
    assert ds.splits(0).train.x.shape == (491, 9)


@needs_shared
def test_a_corrupted_download_is_rejected_and_nothing_is_cached(server, tmp_path):
    root, base_url = server
    mirror = _serve_originals(root)
    _corrupt(SHARED_UCI / "cmc.data", mirror / "cmc.data")
    (mirror / "titanic.zip").write_bytes(b"not a zip")
    cache = tmp_path / "cache"
    with pytest.raises(ChecksumError, match="does not match"):
        locate("contraceptive", cache_dir=cache, base_url=base_url, timeout=10)
    with pytest.raises(UCIFileError, match="not a zip"):
        locate("titanic", cache_dir=cache, base_url=base_url, timeout=10)
    assert not cache.exists() or not any(cache.iterdir())


def test_offline_download_fails_saying_where_to_put_the_file(tmp_path):
    with socket.socket() as sock:  # a port that nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cache = tmp_path / "cache"
    with pytest.raises(UCIFileError, match=rf"could not download http://127\.0\.0\.1:{port}/cmc\.data .*put cmc\.data"):
        locate("contraceptive", cache_dir=cache, base_url=f"http://127.0.0.1:{port}", timeout=5)
    assert not cache.exists() or not any(cache.iterdir())
    with pytest.raises(ValueError, match="base_url='ftp://x'"):
        locate("contraceptive", cache_dir=cache, base_url="ftp://x")
