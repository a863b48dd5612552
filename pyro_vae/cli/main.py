"""The ``pyro-vae`` command line: builds the parser from the command modules and runs one.

Commands: ``datasets``, ``sample`` (:mod:`.data`); ``train``, ``evaluate``, ``methods``, ``demo``
(:mod:`.train`); ``train-m2`` (:mod:`.m2`); ``posterior``, ``decompose`` (:mod:`.truth`);
``experiments``, ``reproduce``, ``report`` (:mod:`.reproduce`); ``runs`` (:mod:`.runs`); ``guides`` (:mod:`.train`).

Exit codes: 0 done; 2 bad input (one line on stderr naming the flag, the value and what is
allowed, before anything is written); 1 training failed (e.g. NaN; the run is marked failed);
130 / 143 interrupted by SIGINT / SIGTERM (the run is marked interrupted with the step reached).
"""

from __future__ import annotations

import sys
from typing import Sequence

from pyro_vae import __version__
from pyro_vae.cli import data, diagnose, figures, m2, reproduce, runs, train, truth
from pyro_vae.cli.common import (
    EXIT_FAILED, EXIT_USAGE, Parser, UsageError, join_negative_values, name_flags, print_error,
)


def build_parser() -> Parser:
    parser = Parser(prog="pyro-vae", description="Study when variational autoencoders fail.")
    parser.add_argument("--version", action="version", version=f"pyro-vae {__version__}",
                        help="print the version and exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    data.add_parsers(sub)
    train.add_parsers(sub)
    truth.add_parsers(sub)
    m2.add_parsers(sub)
    reproduce.add_parsers(sub)
    runs.add_parsers(sub)
    figures.add_parsers(sub)
    diagnose.add_parsers(sub)
    return parser


def route_m2(argv: list[str]) -> list[str]:
    """``train DATASET --method m2 ...`` is ``train-m2 DATASET ...`` (the M2 options live there)."""
    if argv[:1] != ["train"]:
        return argv
    for i, token in enumerate(argv):
        if token == "--method=m2":
            return ["train-m2", *argv[1:i], *argv[i + 1 :]]
        if token == "--method" and argv[i + 1 : i + 2] == ["m2"]:
            return ["train-m2", *argv[1:i], *argv[i + 2 :]]
    return argv


def main(argv: Sequence[str] | None = None) -> int:
    from pyro_vae.runs.progress import Interrupted, last_interrupted, signals_interrupt

    argv = route_m2(join_negative_values(list(sys.argv[1:] if argv is None else argv)))
    command = next((a for a in argv if not a.startswith("-")), None)
    try:
        args = build_parser().parse_args(argv)
    except UsageError as err:
        print_error(None, str(err))
        return EXIT_USAGE
    from pyro_vae.inference import TrainingError

    try:
        with signals_interrupt():
            return args.func(args)
    except TrainingError as err:
        print_error(args.command, str(err), kind="training failed")
        return EXIT_FAILED
    except ValueError as err:
        print_error(args.command, name_flags(str(err), getattr(args, "flag_names", {})))
        return EXIT_USAGE
    except KeyboardInterrupt as err:
        signal_name = getattr(err, "signal_name", "SIGINT")
        marked = last_interrupted()
        where = f"; run {marked[0]} marked {marked[1]}" if marked else ""
        print_error(args.command, f"interrupted by {signal_name}{where}", kind=None)
        return err.exit_code if isinstance(err, Interrupted) else 130
    except OSError as err:  # a disk that filled up or went read-only during the work
        print_error(args.command, f"{err.strerror or err}: {err.filename!r}" if err.filename else str(err),
                    kind="failed")
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
