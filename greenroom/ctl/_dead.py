"""``greenroomctl dead list|requeue|purge QUEUE``: the dead letters of a queue, put back or dropped."""

from __future__ import annotations

import argparse
import re
from typing import TextIO

from ..cli import ExitCode
from ._context import AppContext, ContextError
from ._output import confirm, print_json, print_table, when

__all__ = ["HELP", "configure", "parse_duration", "run"]

HELP = "dead letters of a queue: list them, requeue some or all, purge (older than a duration)"

_UNITS_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
_DURATION = re.compile(r"(\d+)(ms|s|m|h|d|w)")


def parse_duration(text: str) -> int:
    """``"90s"``, ``"12h"``, ``"7d"``, ``"1h30m"`` in milliseconds.

    Raises:
      argparse.ArgumentTypeError: For anything else.
    """
    parts = _DURATION.findall(text)
    if not parts or "".join(number + unit for number, unit in parts) != text:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration such as 90s, 30m, 12h, 7d or 1h30m")
    return sum(int(number) * _UNITS_MS[unit] for number, unit in parts)


def configure(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    listing = actions.add_parser("list", help="id, actor, when and reason of each dead letter, oldest first")
    listing.add_argument("queue")
    listing.add_argument("--limit", type=int, default=100, help="show at most this many (default 100)")
    requeue = actions.add_parser("requeue", help="put dead letters back on their queue, retry count reset")
    requeue.add_argument("queue")
    requeue.add_argument("ids", nargs="*", metavar="ID", help="message ids to requeue")
    requeue.add_argument("--all", action="store_true", help="requeue every dead letter of the queue")
    requeue.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    purge = actions.add_parser("purge", help="delete dead letters for good")
    purge.add_argument("queue")
    purge.add_argument("--older-than", type=parse_duration, metavar="DURATION", help="only those dead that long")
    purge.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    for sub in (listing, requeue, purge):
        sub.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON instead of text")


def run(args: argparse.Namespace, context: AppContext, out: TextIO) -> int:
    if args.action == "list":
        return _list(args, context, out)
    if args.action == "requeue":
        return _requeue(args, context, out)
    return _purge(args, context, out)


def _list(args: argparse.Namespace, context: AppContext, out: TextIO) -> int:
    if args.limit < 0:
        raise ContextError(ExitCode.IMPORT, "--limit must not be negative")
    letters = context.broker.get_dead_letters(args.queue, limit=args.limit)
    if args.json:
        items = [
            {
                "id": letter.id,
                "message_id": letter.message_id,
                "actor": letter.actor_name,
                "dead_at_ms": letter.dead_at_ms,
                "reason": letter.reason,
                "payload": letter.payload.decode("utf-8", "replace"),
            }
            for letter in letters
        ]
        print_json({"queue": args.queue, "dead_letters": items}, out)
    elif not letters:
        out.write(f"Queue {args.queue!r} has no dead letters.\n")
    else:
        rows = [
            (letter.message_id or "-", letter.actor_name or "-", when(letter.dead_at_ms), _one_line(letter.reason))
            for letter in letters
        ]
        print_table(("ID", "ACTOR", "DEAD SINCE", "REASON"), rows, out)
    return int(ExitCode.OK)


def _one_line(text: str, limit: int = 100) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _requeue(args: argparse.Namespace, context: AppContext, out: TextIO) -> int:
    if bool(args.ids) == bool(args.all):
        raise ContextError(ExitCode.IMPORT, "give the ids of the dead letters to requeue, or --all (not both)")
    what = "every dead letter" if args.all else f"{len(args.ids)} dead letter(s)"
    confirm(args, f"Requeue {what} of {args.queue!r}?")
    count = context.broker.requeue_dead_letters(args.queue, None if args.all else list(args.ids))
    if args.json:
        print_json({"queue": args.queue, "requeued": count}, out)
    else:
        out.write(f"Requeued {count} dead letter(s) of {args.queue!r}.\n")
    if args.ids and count < len(args.ids):
        return int(ExitCode.KILLED)  # some ids were not dead letters of the queue
    return int(ExitCode.OK)


def _purge(args: argparse.Namespace, context: AppContext, out: TextIO) -> int:
    scope = "every dead letter" if args.older_than is None else "the dead letters older than the given duration"
    confirm(args, f"Delete {scope} of {args.queue!r} for good?")
    count = context.broker.purge_dead_letters(args.queue, older_than_ms=args.older_than)
    if args.json:
        print_json({"queue": args.queue, "purged": count}, out)
    else:
        out.write(f"Purged {count} dead letter(s) of {args.queue!r}.\n")
    return int(ExitCode.OK)
