"""The ``greenroom`` command line."""

from __future__ import annotations

import argparse

__all__ = ["main", "make_argument_parser"]


def make_argument_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``greenroom`` command."""
    parser = argparse.ArgumentParser(prog="greenroom", description="Run greenroom workers.")
    parser.add_argument("broker", help="the broker module, module:attribute or module:callable")
    parser.add_argument("modules", nargs="*", help="additional modules to import")
    return parser


def main(args: argparse.Namespace | None = None) -> int:
    """Run the command; returns the exit code."""
    make_argument_parser().parse_args() if args is None else args
    raise SystemExit("greenroom: the worker command line is not available yet")
