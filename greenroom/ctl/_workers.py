"""``greenroomctl workers``: the live worker processes, from the heartbeats of ``JobTracking``."""

from __future__ import annotations

import argparse
from typing import TextIO

from ..cli import ExitCode
from ..jobs import JobStoreNotConfigured, store_for
from ._context import AppContext, ContextError
from ._output import print_json, print_table, when

__all__ = ["HELP", "configure", "run"]

HELP = "live worker processes: host, pid, queues, running messages, up since (needs JobTracking)"


def configure(parser: argparse.ArgumentParser) -> None:
    """No arguments of its own besides ``--json``."""


def run(args: argparse.Namespace, context: AppContext, out: TextIO) -> int:
    try:
        workers = store_for(context.broker).workers()
    except JobStoreNotConfigured as exc:
        raise ContextError(ExitCode.KILLED, str(exc)) from exc
    workers.sort(key=lambda info: (str(info.get("host")), int(info.get("pid", 0))))
    if args.json:
        print_json({"workers": workers}, out)
    elif not workers:
        out.write("No live workers (they appear while they run with JobTracking on their broker).\n")
    else:
        rows = [
            (
                info.get("host", "-"),
                info.get("pid", "-"),
                ",".join(info.get("queues", [])) or "-",
                info.get("running", "-"),
                when(info.get("started_at_ms")),
            )
            for info in workers
        ]
        print_table(("HOST", "PID", "QUEUES", "RUNNING", "UP SINCE"), rows, out)
    return int(ExitCode.OK)
