"""``greenroomctl queues [QUEUE ...]``: per queue, messages ready, delayed, in progress and dead."""

from __future__ import annotations

import argparse
from typing import TextIO

from ..cli import ExitCode
from ._context import AppContext
from ._output import print_json, print_table

__all__ = ["HELP", "configure", "run"]

HELP = "messages ready, delayed, in progress and dead, per queue (RabbitMQ cannot count in-progress ones)"


def configure(parser: argparse.ArgumentParser) -> None:
    """Optional queue names: by default every queue the application declares."""
    parser.add_argument("queue", nargs="*", help="queues to show (default: every declared queue)")


def run(args: argparse.Namespace, context: AppContext, out: TextIO) -> int:
    broker = context.broker
    names = args.queue or sorted(broker.get_declared_queues())
    counts = {name: broker.get_queue_counts(name) for name in names}
    if args.json:
        print_json({"queues": [{"queue": name, **count._asdict()} for name, count in counts.items()]}, out)
        return int(ExitCode.OK)
    if not counts:
        out.write("No queues: give their names, or --app for the application's.\n")
        return int(ExitCode.OK)
    rows = [
        (name, c.ready, c.delayed, "?" if c.in_progress is None else c.in_progress, c.dead)
        for name, c in counts.items()
    ]
    print_table(("QUEUE", "READY", "DELAYED", "IN PROGRESS", "DEAD"), rows, out)
    return int(ExitCode.OK)
