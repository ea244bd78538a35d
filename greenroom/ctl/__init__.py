"""``greenroomctl``: operations on a running greenroom application, from the command line.

``greenroomctl --app APP COMMAND [--json]``. ``APP`` names the application as the ``greenroom``
command does (``module``, ``module:broker`` or ``module:callable``); it is imported, so the
commands see the same actors, schedules and broker as the workers. Commands live in modules of
this package, one each, and are listed in ``_commands.COMMANDS``; adding one (queues, dead
letters, workers...) means adding a module and a line there.

Without ``--app``, ``--url`` (or ``greenroom_broker_url``) names the broker: every command but
``schedules`` works without the application's code.

Exit codes are those of ``greenroom``: 0 done; 1 failed, refused or nothing found (an unknown
message id or queue, a cancellation of a message that already ended, a destructive command not
confirmed); 2 bad usage (a malformed id, a bad flag) or an application that does not import;
3 the broker could not be reached.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .. import __version__
from ..cli import ExitCode
from ..errors import BrokerError, QueueNotFound
from ._commands import COMMANDS
from ._context import AppContext, ContextError

__all__ = ["main", "make_argument_parser"]


def make_argument_parser() -> argparse.ArgumentParser:
    """The parser of ``greenroomctl``: global options, then one subcommand."""
    parser = argparse.ArgumentParser(prog="greenroomctl", description="Inspect and operate a greenroom application.")
    parser.add_argument("--app", help="the application: 'module', 'module:broker' or 'module:callable'")
    parser.add_argument("--url", help="the broker's URL, when no --app is given (default: greenroom_broker_url)")
    parser.add_argument(
        "--path", "-P", action="append", default=None, help="a directory to import from (repeatable; default: .)"
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    parser.add_argument("--version", action="version", version=__version__)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in COMMANDS:
        sub = commands.add_parser(command.name, help=command.help, description=command.help)
        # Also accepted after the command: ``greenroomctl --app app schedules --json``.
        sub.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON instead of text")
        command.configure(sub)
        sub.set_defaults(run=command.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``greenroomctl`` with ``argv`` (``sys.argv[1:]`` when ``None``); returns the exit code."""
    args = make_argument_parser().parse_args(argv)
    context = AppContext(args.app, tuple(args.path or (".",)), args.url)
    try:
        code: int = args.run(args, context, sys.stdout)
    except ContextError as exc:
        sys.stderr.write(f"greenroomctl: {exc}\n")
        return int(exc.code)
    except QueueNotFound as exc:
        sys.stderr.write(f"greenroomctl: unknown queue {exc}\n")
        return int(ExitCode.KILLED)
    except NotImplementedError as exc:
        sys.stderr.write(f"greenroomctl: {exc}\n")
        return int(ExitCode.KILLED)
    except BrokerError as exc:
        sys.stderr.write(f"greenroomctl: the broker could not be reached: {exc}\n")
        return int(ExitCode.CONNECTION)
    finally:
        context.close()
    return code
