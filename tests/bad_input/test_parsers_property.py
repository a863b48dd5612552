"""Property-based checks of the parsers of ``--x``, ``--option``/``--data-option`` and TOML configs.

Whatever text comes in, a parser either returns a value that round-trips or raises ValueError
with a one-line message naming the flag (or the file); never another exception.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from pyro_vae.cli.common import join_negative_values, parse_key_values, parse_numbers
from pyro_vae.reproduce.experiments import checked_runs, load_experiment, parse_experiment

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
finite = st.floats(allow_nan=False, allow_infinity=False, width=64)
keys = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,12}", fullmatch=True)
json_values = st.one_of(st.integers(-10**6, 10**6), finite, st.booleans(), st.none(),
                        st.text("abcdefghijklmnopqrstuvwxyz_-.", min_size=1, max_size=8))


# ---------------------------------------------------------------------------------------- --x
@SETTINGS
@given(st.lists(finite, min_size=1, max_size=6))
def test_x_round_trips_every_finite_point(values):
    text = ",".join(repr(v) for v in values)
    assert parse_numbers(text, "--x", len(values)) == values
    # a leading minus survives the command line: --x -0.5,0.3 becomes --x=-0.5,0.3
    assert join_negative_values(["posterior", "figure8", "--x", text])[-1] in (f"--x={text}", text)


@SETTINGS
@given(st.text(max_size=30), st.integers(1, 4))
def test_x_parser_returns_numbers_or_one_line_error(text, count):
    try:
        values = parse_numbers(text, "--x", count)
    except ValueError as err:
        message = str(err)
        assert message.startswith("--x ") and repr(text) in message and "\n" not in message.replace(repr(text), "")
    else:
        assert len(values) == count and all(math.isfinite(v) for v in values)


# ----------------------------------------------------------------------------- KEY=VALUE flags
@SETTINGS
@given(st.dictionaries(keys, json_values, max_size=5))
def test_key_values_round_trip(options):
    pairs = [f"{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in options.items()]
    parsed = parse_key_values(pairs, "--option")
    assert set(parsed) == set(options)
    for k, v in options.items():
        if isinstance(v, str):  # plain words stay strings unless they read as JSON
            assert parsed[k] == v or json.dumps(parsed[k]) == v
        else:
            assert parsed[k] == v


@SETTINGS
@given(st.lists(st.text(max_size=20), max_size=4), st.sampled_from(["--option", "--data-option"]))
def test_key_values_parse_or_name_the_flag(pairs, flag):
    try:
        parsed = parse_key_values(pairs, flag)
    except ValueError as err:
        assert str(err).startswith(flag + " ")
    else:
        assert len(parsed) == len(pairs)


# ------------------------------------------------------------------------------- TOML configs
BASE = {
    "name": "prop",
    "data": {"datasets": ["circle"], "versions": [0]},
    "train": {"epochs": 1, "eval_samples": 10, "hidden": [4]},
    "methods": [{"name": "vae"}, {"name": "iwae", "grid": {"particles": [2, 3]}}],
    "select": {"metric": "val_objective", "mode": "max"},
    "report": {"metrics": ["test_loglik"]},
    "quick": {"versions": [0], "train": {"restarts": 1}},
}
PATHS = [("name",), ("kind",), ("data",), ("data", "datasets"), ("data", "versions"), ("train",),
         ("train", "epochs"), ("train", "hidden"), ("train", "lr"), ("train", "restarts"), ("train", "noise"),
         ("methods",), ("methods", 0), ("methods", 0, "name"), ("methods", 1, "grid"), ("methods", 1, "grid", "particles"),
         ("methods", 1, "fixed"), ("methods", 1, "label"), ("select",), ("select", "mode"), ("report", "metrics"),
         ("quick",), ("quick", "versions"), ("quick", "train"), ("quick", "grid")]
junk = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-3, 10**13), finite, st.text(max_size=6)),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)),
    max_leaves=6,
)


def _put(data: dict, path: tuple, value) -> dict:
    data = copy.deepcopy(data)
    target = data
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return data


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(PATHS), junk), min_size=1, max_size=3), st.booleans())
@example(changes=[(("quick", "versions"), [])], quick=True)  # once accepted, then ran nothing
def test_toml_config_parses_and_validates_or_names_the_file(changes, quick):
    data = BASE
    for path, value in changes:
        try:
            data = _put(data, path, value)
        except (KeyError, IndexError, TypeError):
            pass  # a change below one that replaced its parent
    source = Path("prop.toml")
    try:
        configs = checked_runs(parse_experiment(data, source), quick=quick)
    except ValueError as err:
        message = str(err)
        assert message.startswith("prop.toml") and "\n" not in message, message
    else:
        assert configs and all(c.epochs >= 1 for c in configs)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(max_size=80))
def test_toml_text_loads_or_names_the_file(tmp_path, text):
    path = tmp_path / "any.toml"
    path.write_text(text, encoding="utf-8")
    try:
        load_experiment(path)
    except ValueError as err:
        assert str(err).startswith(str(path)) and "\n" not in str(err)


def test_the_base_config_is_valid():
    assert len(checked_runs(parse_experiment(BASE, Path("prop.toml")))) == 3


@pytest.mark.parametrize("argv, expected", [
    (["--x", "-0.5,0.3"], ["--x=-0.5,0.3"]),
    (["--lr", "-1e-3"], ["--lr=-1e-3"]),
    (["--x", "-.5,1"], ["--x=-.5,1"]),
    (["--quiet", "--json"], ["--quiet", "--json"]),
    (["-n", "-5"], ["-n", "-5"]),  # argparse reads a plain negative number itself
])
def test_join_negative_values(argv, expected):
    assert join_negative_values(argv) == expected
