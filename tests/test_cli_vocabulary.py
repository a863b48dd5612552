"""One vocabulary across commands, help that shows defaults, and the small promises of the CLI."""

import argparse
import json
import re

import pytest

from pyro_vae import __version__
from pyro_vae.cli import build_parser, main
from pyro_vae.cli.common import HelpFormatter


def _subparsers():
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return parser, action.choices


def test_every_argument_has_help_and_every_help_shows_defaults():
    parser, commands = _subparsers()
    assert {"train", "train-m2", "reproduce", "sample", "posterior", "runs", "evaluate"} <= set(commands)
    for name, sub in commands.items():
        text = sub.format_help()
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction) or action.help == argparse.SUPPRESS:
                continue
            assert action.help, f"{name} {action.dest} has no help"
            shown = HelpFormatter(name)._get_help_string(action)
            if action.option_strings and action.default not in (None, False):
                assert "default" in shown, f"{name} {action.option_strings[0]}: {shown}"
        assert "(default: 100)" in text or name not in ("train", "train-m2", "demo")
    assert "--version" in parser.format_help()


def test_version(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0 and capsys.readouterr().out.strip() == f"pyro-vae {__version__}"


def test_one_flag_per_idea_across_train_train_m2_and_reproduce():
    _, commands = _subparsers()
    flags = {name: {s for a in sub._actions if a.help != argparse.SUPPRESS for s in a.option_strings}
             for name, sub in commands.items()}
    for shared in ("--method", "--option", "--noise", "--epochs", "--batch-size", "--lr", "--restarts", "--seed",
                   "--data-seed", "--device", "--hidden", "--latent-dim", "--eval-samples", "--particles", "--out",
                   "--json", "--quiet", "--guide"):
        assert shared in flags["train"] and shared in flags["train-m2"], shared
    for gone in ("--param", "--objective", "--lagging", "--lin-threshold", "--lin-window", "--noise-var"):
        for name in ("train", "train-m2", "reproduce", "sample"):
            assert gone not in flags[name], (name, gone)  # hidden deprecated spellings only
    assert {"--device", "--out", "--quiet"} <= flags["reproduce"]


def test_deprecated_m2_spellings_give_the_same_config():
    from pyro_vae.cli.m2 import _config_from_args

    parser = build_parser()
    new = parser.parse_args(["train-m2", "discrete_semicircle", "--method", "lin", "--option", "threshold=0.05",
                             "--option", "window=10", "--noise", "0.02"])
    old = parser.parse_args(["train-m2", "discrete_semicircle", "--lagging", "--lin-threshold", "0.05",
                             "--lin-window", "10", "--noise-var", "0.02", "--objective", "elbo"])
    a, b = _config_from_args(new), _config_from_args(old)
    assert a == b and (a.lagging, a.lin_threshold, a.lin_window, a.noise_var, a.objective) == (True, 0.05, 10, 0.02, "elbo")
    iwae = _config_from_args(parser.parse_args(["train-m2", "discrete_semicircle", "--method", "iwae"]))
    assert iwae.objective == "iwae" and not iwae.lagging
    from pyro_vae.cli.train import _config_from_args as train_config

    cfg = train_config(parser.parse_args(["train", "case1", "--param", "theta=0.5", "--method", "lin", "--option",
                                          "threshold=0.05"]))
    assert cfg.dataset_params == {"theta": 0.5} and cfg.options == {"threshold": 0.05}


def test_methods_table_is_aligned_and_lists_iwae_particles(capsys):
    assert main(["methods"]) == 0
    lines = capsys.readouterr().out.splitlines()
    starts = {len(re.match(r"(\S+\s+\S.*?\s{2,})", line).group(1)) for line in lines}
    assert len(starts) == 1  # the description column starts at one offset
    iwae = next(line for line in lines if line.startswith("iwae "))
    assert "--particles=20" in iwae
    assert main(["methods", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["iwae"]["flags"] == ["--particles=20"] and "--option threshold=0.1" in rows["lin"]["flags"][0]


def test_negative_looking_values_reach_their_flag(capsys):
    code = main(["posterior", "figure8", "--x", "-0.5,0.3", "--x", "0.3,-0.5", "--method", "quadrature"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "x=-0.5,0.3:" in out and "x=0.3,-0.5:" in out and "0.30000001" not in out
    code = main(["posterior", "figure8", "--x", "-0.5,0.3", "--method", "quadrature", "--json"])
    point = json.loads(capsys.readouterr().out)["points"][0]
    assert point["x"] == [-0.5, 0.3]  # as typed, not float32 round-off
