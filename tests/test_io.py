"""Atomic writers in pyro_vae.io: round-trips, and failures that leave no trace."""

import json
import math
import os

import numpy as np
import pytest
import torch

from pyro_vae import io


def _leftovers(directory):
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


def test_text_and_bytes_round_trip(tmp_path):
    io.atomic_write_text(tmp_path / "a.txt", "héllo\nworld")
    io.atomic_write_bytes(tmp_path / "b.bin", b"\x00\x01\xff")
    assert (tmp_path / "a.txt").read_text(encoding="utf-8") == "héllo\nworld"
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01\xff"
    assert _leftovers(tmp_path) == []


def test_parent_directories_are_created(tmp_path):
    target = tmp_path / "deep" / "er" / "f.txt"
    io.atomic_write_text(target, "x")
    assert target.read_text() == "x"


def test_failed_rename_leaves_target_untouched_and_no_temp_file(tmp_path, monkeypatch):
    target = tmp_path / "metrics.json"
    target.write_text("old")

    def broken_replace(src, dst):
        raise OSError("disk on fire")

    monkeypatch.setattr(io.os, "replace", broken_replace)
    for write in (
        lambda: io.atomic_write_text(target, "new"),
        lambda: io.write_json(target, {"a": 1}),
        lambda: io.save_state(target, {"w": torch.ones(2)}),
        lambda: io.write_csv(target, [{"a": 1}]),
    ):
        with pytest.raises(OSError, match="disk on fire"):
            write()
        assert target.read_text() == "old"
        assert _leftovers(tmp_path) == []


def test_writer_failing_mid_write_removes_temp_file(tmp_path):
    target = tmp_path / "f.bin"
    target.write_bytes(b"old")

    def half_then_fail(f):
        f.write(b"partial")
        raise RuntimeError("serializer crashed")

    with pytest.raises(RuntimeError, match="serializer crashed"):
        io._atomic_write(target, half_then_fail, binary=True)
    assert target.read_bytes() == b"old"
    assert _leftovers(tmp_path) == []


def test_write_json_is_sorted_indented_and_converts_scalars(tmp_path):
    obj = {"b": np.float32(1.5), "a": torch.tensor(2), "c": (np.int64(3), np.bool_(True)), "d": np.arange(2)}
    io.write_json(tmp_path / "m.json", obj)
    text = (tmp_path / "m.json").read_text()
    assert text.index('"a"') < text.index('"b"') < text.index('"c"')
    assert text.startswith('{\n  "a": 2,')
    assert json.loads(text) == {"a": 2, "b": 1.5, "c": [3, True], "d": [0, 1]}


def test_write_json_nonfinite_raises_before_writing_or_becomes_null(tmp_path):
    target = tmp_path / "m.json"
    with pytest.raises(ValueError, match=r"\['loss'\]\[1\] is nan"):
        io.write_json(target, {"loss": [1.0, float("nan")]})
    assert not target.exists() and _leftovers(tmp_path) == []
    io.write_json(target, {"loss": np.float64(np.inf)}, nonfinite="null")
    assert io.read_json(target) == {"loss": None}
    with pytest.raises(ValueError, match="nonfinite='zero'"):
        io.write_json(target, {}, nonfinite="zero")


def test_write_json_rejects_unknown_types(tmp_path):
    with pytest.raises(ValueError, match=r"value\['f'\] has type object"):
        io.write_json(tmp_path / "m.json", {"f": object()})
    assert not (tmp_path / "m.json").exists()


def test_state_dict_round_trip_loads_weights_only(tmp_path):
    state = {"net.weight": torch.randn(3, 2), "step": 7, "nested": {"b": torch.arange(4)}}
    io.save_state(tmp_path / "params.pt", state)
    loaded = io.load_state(tmp_path / "params.pt")
    assert loaded.keys() == state.keys() and loaded["step"] == 7
    assert torch.equal(loaded["net.weight"], state["net.weight"])
    assert torch.equal(loaded["nested"]["b"], state["nested"]["b"])


def test_load_state_refuses_pickled_objects(tmp_path):
    torch.save({"obj": _Unsafe()}, tmp_path / "bad.pt")
    with pytest.raises(Exception, match="(?i)weights_only"):
        io.load_state(tmp_path / "bad.pt")


class _Unsafe:
    pass


def test_csv_round_trip_with_missing_cells(tmp_path):
    rows = [{"step": 0, "loss": np.float32(2.5)}, {"step": 1, "loss": torch.tensor(1.25), "lr": 0.1}]
    io.write_csv(tmp_path / "h.csv", rows)
    assert (tmp_path / "h.csv").read_text().splitlines()[0] == "step,loss,lr"
    assert io.read_csv(tmp_path / "h.csv") == [
        {"step": 0, "loss": 2.5, "lr": None},
        {"step": 1, "loss": 1.25, "lr": 0.1},
    ]


def test_csv_rejects_columns_outside_fieldnames(tmp_path):
    with pytest.raises(ValueError, match=r"\['b'\]"):
        io.write_csv(tmp_path / "h.csv", [{"a": 1, "b": 2}], fieldnames=["a"])
    assert not (tmp_path / "h.csv").exists()


@pytest.mark.parametrize("ext", ["csv", "npz"])
def test_save_arrays_round_trip(tmp_path, ext):
    x = np.random.default_rng(0).normal(size=(5, 3))
    z = torch.randn(5, 1)
    y = np.array([0, 1, 1, 0, 2])
    path = io.save_arrays(tmp_path / f"samples.{ext}", x=x, z=z, y=y)
    back = io.load_arrays(path)
    assert sorted(back) == ["x", "y", "z"]
    np.testing.assert_array_equal(back["x"], x)
    np.testing.assert_array_equal(back["z"], z.numpy())
    np.testing.assert_array_equal(back["y"], y)
    if ext == "csv":
        assert path.read_text().splitlines()[0] == "x1,x2,x3,z1,y"


def test_save_arrays_unknown_extension_raises_before_writing(tmp_path):
    target = tmp_path / "out" / "samples.txt"
    with pytest.raises(ValueError) as info:
        io.save_arrays(target, x=np.zeros((2, 2)))
    message = str(info.value)
    assert str(target) in message and ".csv" in message and ".npz" in message
    assert not (tmp_path / "out").exists()


def test_save_arrays_csv_shape_errors(tmp_path):
    with pytest.raises(ValueError, match="first dimension"):
        io.save_arrays(tmp_path / "a.csv", x=np.zeros((3, 2)), z=np.zeros((4, 1)))
    with pytest.raises(ValueError, match=r"'x' has shape \(2, 2, 2\)"):
        io.save_arrays(tmp_path / "a.csv", x=np.zeros((2, 2, 2)))
    assert list(tmp_path.iterdir()) == []


def test_csv_keeps_nonfinite_values(tmp_path):
    path = io.save_arrays(tmp_path / "a.csv", v=np.array([1.0, math.inf, math.nan]))
    v = io.load_arrays(path)["v"]
    assert v[0] == 1.0 and v[1] == math.inf and math.isnan(v[2])


def test_written_files_honour_umask(tmp_path):
    old = os.umask(0o022)
    try:
        io.atomic_write_text(tmp_path / "f.txt", "x")
    finally:
        os.umask(old)
    assert oct((tmp_path / "f.txt").stat().st_mode & 0o777) == oct(0o644)
