"""The ``pyro-vae`` command line: one module per command group, ``main`` builds the parser."""

from pyro_vae.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
