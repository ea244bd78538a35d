"""The subcommands of ``greenroomctl``: one module each, listed here."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable
from typing import TextIO

from . import _dashboard, _dead, _jobs, _migrate, _queues, _schedules, _workers
from ._context import AppContext

__all__ = ["COMMANDS", "Command"]


@dataclasses.dataclass(frozen=True)
class Command:
    """A subcommand: its name and help, how it adds its arguments, and how it runs.

    ``run(args, context, out)`` gets the parsed arguments (``args.json`` among them), the
    application (imported on first use) and the stream to print to; it returns the exit code,
    or raises :class:`~greenroom.ctl._context.ContextError` or a broker error.
    """

    name: str
    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace, AppContext, TextIO], int]


#: Every subcommand, in the order ``--help`` lists them.
COMMANDS: tuple[Command, ...] = (
    Command("queues", _queues.HELP, _queues.configure, _queues.run),
    Command("dead", _dead.HELP, _dead.configure, _dead.run),
    Command("status", _jobs.STATUS_HELP, _jobs.configure_status, _jobs.run_status),
    Command("cancel", _jobs.CANCEL_HELP, _jobs.configure_cancel, _jobs.run_cancel),
    Command("workers", _workers.HELP, _workers.configure, _workers.run),
    Command("schedules", _schedules.HELP, _schedules.configure, _schedules.run),
    Command("dashboard", _dashboard.HELP, _dashboard.configure, _dashboard.run),
    Command("migrate", _migrate.HELP, _migrate.configure, _migrate.run),
)
