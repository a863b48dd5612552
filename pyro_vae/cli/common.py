"""What every command shares: the parser class, argument types, KEY=VALUE options, errors.

Bad input is one line on stderr naming the flag the user typed, the value and what is allowed,
and exit code 2, before anything is written. argparse's own errors (an unknown flag, a value
of the wrong type) are reduced to that one line too, without the usage text.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from typing import Any, Iterable, Mapping, Sequence

from pyro_vae.checks import one_line

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
_FLAG_VALUE = re.compile(r"-(\d|\.\d|inf\b|nan\b)", re.IGNORECASE)


class UsageError(ValueError):
    """A command line argparse cannot parse; ``str()`` is the one-line message."""


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Defaults in every help line (``(default: 100)``), wide enough to read.

    An argument whose help already says its default, or whose default is "unset" (None, or
    False for an on/off flag), gets no "(default: ...)".
    """

    def __init__(self, prog: str):
        super().__init__(prog, max_help_position=32, width=100)

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        unset = action.default is None or action.default is False or action.default == argparse.SUPPRESS
        if "default" in text or unset or not action.option_strings:
            return text
        default = " ".join(map(str, action.default)) if isinstance(action.default, (list, tuple)) else action.default
        return f"{text} (default: {default})"


class RawHelpFormatter(argparse.RawDescriptionHelpFormatter, HelpFormatter):
    """:class:`HelpFormatter` that keeps a command's description as written (line breaks, lists)."""


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (raised as :class:`UsageError`)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str):  # noqa: D102 - argparse's hook
        raise UsageError(f"{self.prog}: error: {one_line(message)}")


def add_command(sub, name: str, help: str, *, description: str | None = None) -> Parser:
    """A subcommand parser with defaults shown in its help."""
    return sub.add_parser(name, help=help, description=description or help, formatter_class=HelpFormatter)


# ------------------------------------------------------------------------------ argument types
def _typed(kind: str, check):
    def parse(text: str):
        try:
            value = int(text) if kind == "int" else float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid value {text!r}: expected {check.__doc__}") from None
        if not check(value):
            raise argparse.ArgumentTypeError(f"invalid value {text!r}: expected {check.__doc__}")
        return value

    parse.__name__ = check.__name__
    return parse


def _positive(v):
    """an integer ≥ 1"""
    return v >= 1


def _nonneg(v):
    """an integer ≥ 0"""
    return v >= 0


def _positive_number(v):
    """a finite number > 0"""
    return math.isfinite(v) and v > 0


def _nonneg_number(v):
    """a finite number ≥ 0"""
    return math.isfinite(v) and v >= 0


def _finite(v):
    """a finite number"""
    return math.isfinite(v)


def _fraction(v):
    """a number in [0, 1]"""
    return 0 <= v <= 1


positive_int = _typed("int", _positive)
nonneg_int = _typed("int", _nonneg)
positive_float = _typed("float", _positive_number)
nonneg_float = _typed("float", _nonneg_number)
finite_float = _typed("float", _finite)
fraction = _typed("float", _fraction)


def comma_list(text: str) -> list[str]:
    """Comma-separated names, e.g. ``gaussian,mobius`` (no empty name)."""
    names = [name.strip() for name in text.split(",")]
    if not all(names):
        raise argparse.ArgumentTypeError(f"invalid value {text!r}: expected comma-separated names, e.g. a,b")
    return names


def seed_int(text: str) -> int:
    """A seed: an integer in [0, 2**63 - 1]."""
    value = nonneg_int(text)
    if value > 2**63 - 1:
        raise argparse.ArgumentTypeError(f"invalid value {text!r}: expected an integer in [0, 2**63 - 1]")
    return value


# ------------------------------------------------------------------------------ KEY=VALUE pairs
def parse_value(raw: str) -> Any:
    """A KEY=VALUE value: JSON numbers, true/false/null and lists are decoded, anything else is
    a string (``threshold=0.05`` → 0.05, ``name=abc`` → "abc", ``flag=true`` → True)."""
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, RecursionError):
        return raw


def parse_key_values(pairs: Iterable[str] | None, flag: str) -> dict[str, Any]:
    """``["a=1", "b=x"]`` → ``{"a": 1, "b": "x"}``; errors name ``flag`` and the pair.

    A key is a Python identifier; each key at most once; the value is not empty.
    """
    out: dict[str, Any] = {}
    for pair in pairs or ():
        key, sep, raw = pair.partition("=")
        key = key.strip()
        if not sep:
            raise ValueError(f"{flag} {pair!r}: expected KEY=VALUE, e.g. {flag} threshold=0.05")
        if not KEY.fullmatch(key):
            raise ValueError(f"{flag} {pair!r}: the key must be a name of letters, digits and '_'")
        if not raw.strip():
            raise ValueError(f"{flag} {pair!r}: the value is empty; expected KEY=VALUE")
        if key in out:
            raise ValueError(f"{flag} {key}: given twice")
        out[key] = parse_value(raw.strip())
    return out


def parse_numbers(text: str, flag: str, count: int | None = None) -> list[float]:
    """``"0.1,-0.2"`` → ``[0.1, -0.2]``: comma-separated finite decimal numbers (``count`` of them)."""
    parts = [p.strip() for p in text.split(",")]
    want = f"{count} comma-separated" if count is not None else "comma-separated"
    if not all(NUMBER.fullmatch(p) for p in parts):
        raise ValueError(f"{flag} {text!r}: expected {want} finite numbers, e.g. {flag} {','.join(['0.5'] * (count or 2))}")
    values = [float(p) for p in parts]
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"{flag} {text!r}: expected {want} finite numbers (a value overflows)")
    if count is not None and len(values) != count:
        raise ValueError(f"{flag} {text!r}: expected {count} comma-separated numbers, got {len(values)}")
    return values


# ------------------------------------------------------------------------------ errors
def flags_of(parser: argparse.ArgumentParser) -> dict[str, str]:
    """``dest`` → the flag a user types (``batch_size`` → ``--batch-size``; positionals by name)."""
    out = {}
    for action in parser._actions:  # argparse keeps no public list
        if action.help == argparse.SUPPRESS and action.option_strings:
            continue
        longs = [s for s in action.option_strings if s.startswith("--")]
        out[action.dest] = (longs or action.option_strings or [action.dest])[0]
    return out


def name_flags(message: str, flags: Mapping[str, str]) -> str:
    """Rewrite Python names in an error (``batch_size=5001: ...``) into flags (``--batch-size 5001: ...``)."""

    def swap(match: re.Match) -> str:
        name = match.group(1)
        flag = flags.get(name)
        if flag is None:
            return match.group(0)
        return f"{flag}=" if flag.startswith("--option ") or flag.startswith("--data-option ") else f"{flag} "

    return re.sub(r"(?<![\w.-])([a-z_][a-z0-9_]*)=(?!=)", swap, message)


def prefix_error(err: Exception, prefix: str) -> ValueError:
    """A ValueError reading ``"<prefix> <message>"`` (e.g. ``--option threshold=-1: ...``)."""
    return ValueError(f"{prefix} {err}")


def join_negative_values(argv: Sequence[str]) -> list[str]:
    """``--x -0.5,0.3`` → ``--x=-0.5,0.3``: argparse would take a value that starts with a
    minus for a flag (it knows plain negative numbers only)."""
    out: list[str] = []
    for token in argv:
        prev = out[-1] if out else ""
        if (prev.startswith("--") and "=" not in prev and len(prev) > 2 and _FLAG_VALUE.match(token)
                and not token.startswith("--")):
            out[-1] = f"{prev}={token}"
        else:
            out.append(token)
    return out


def print_json(obj: Any) -> None:
    from pyro_vae.io import dumps_json

    print(dumps_json(obj, nonfinite="null"), end="")


def print_error(command: str | None, message: str, kind: str | None = "error") -> None:
    """``pyro-vae COMMAND: KIND: MESSAGE`` as one line on stderr."""
    prog = f"pyro-vae {command}" if command else "pyro-vae"
    if message.startswith("pyro-vae"):
        text = message
    else:
        text = f"{prog}: {kind}: {message}" if kind else f"{prog}: {message}"
    print(one_line(text), file=sys.stderr)
