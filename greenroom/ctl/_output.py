"""How ``greenroomctl`` commands print: aligned text tables, or JSON with ``--json``; and confirmations."""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from ..cli import ExitCode
from ._context import ContextError

__all__ = ["confirm", "print_json", "print_table", "when"]


def print_table(columns: Sequence[str], rows: Sequence[Sequence[object]], out: TextIO) -> None:
    """Print ``rows`` under ``columns``, each column as wide as its widest cell."""
    cells = [[str(cell) for cell in row] for row in (columns, *rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    for row in cells:
        out.write("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() + "\n")


def print_json(value: Any, out: TextIO) -> None:
    """Print ``value`` as indented JSON (bytes are shown as text, unknown objects with ``str``)."""
    json.dump(value, out, indent=2, default=str)
    out.write("\n")


def when(epoch_ms: int | None) -> str:
    """An epoch-milliseconds instant as local ISO time to the second, or ``-``."""
    if epoch_ms is None:
        return "-"
    return datetime.datetime.fromtimestamp(epoch_ms / 1000).astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")


def confirm(args: argparse.Namespace, question: str) -> None:
    """Ask before something destructive, unless ``--yes`` was given.

    Raises:
      ContextError: When the answer is not yes, or nobody can answer (input is not a terminal).
    """
    if getattr(args, "yes", False):
        return
    if not sys.stdin.isatty():
        raise ContextError(ExitCode.KILLED, f"{question} Not confirmed: pass --yes to run without a terminal")
    sys.stderr.write(f"{question} [y/N] ")
    sys.stderr.flush()
    answer = sys.stdin.readline().strip().lower()
    if answer not in ("y", "yes"):
        raise ContextError(ExitCode.KILLED, "aborted: nothing was changed")
