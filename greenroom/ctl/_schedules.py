"""``greenroomctl --app APP schedules [--json]``: each schedule with its last and next run and its leader."""

from __future__ import annotations

import argparse
import datetime
import json
from typing import Any, TextIO
from zoneinfo import ZoneInfo

from ..cli import ExitCode
from ..scheduling import ScheduleStatus, schedule_statuses
from ._context import AppContext, ContextError

__all__ = ["HELP", "configure", "run"]

HELP = "list the schedules: expression, time zone, last and next run (local and UTC), leader"

_UTC = datetime.timezone.utc
_COLUMNS = ("NAME", "EXPRESSION", "TZ", "LAST RUN", "LAST RUN (UTC)", "NEXT RUN", "NEXT RUN (UTC)", "LEADER")


def configure(parser: argparse.ArgumentParser) -> None:
    """No arguments of its own besides ``--json``."""


def run(args: argparse.Namespace, context: AppContext, out: TextIO) -> int:
    """Print the schedules of the application's broker."""
    try:
        statuses = schedule_statuses(context.broker)
    except TypeError as exc:  # a broker greenroom cannot schedule on
        raise ContextError(ExitCode.KILLED, str(exc)) from exc
    if args.json:
        json.dump({"schedules": [_as_json(status) for status in statuses]}, out, indent=2)
        out.write("\n")
    elif not statuses:
        out.write("No schedules are declared.\n")
    else:
        _print_table([_as_row(status) for status in statuses], out)
    return int(ExitCode.OK)


def _instant(epoch_ms: int | None, tz: str) -> dict[str, Any] | None:
    if epoch_ms is None:
        return None
    utc = datetime.datetime.fromtimestamp(epoch_ms / 1000, _UTC)
    return {
        "epoch_ms": epoch_ms,
        "local": utc.astimezone(ZoneInfo(tz)).isoformat(),
        "utc": utc.isoformat().replace("+00:00", "Z"),
    }


def _as_json(status: ScheduleStatus) -> dict[str, Any]:
    leader = status.leader
    return {
        "name": status.name,
        "actor": status.actor_name,
        "queue": status.queue_name,
        "expression": status.expression,
        "tz": status.tz,
        "missed": status.missed,
        "last_run": _instant(status.last_run_ms, status.tz),
        "next_run": _instant(status.next_run_ms, status.tz),
        "leader": None if leader is None else {"host": leader.host, "pid": leader.pid, "id": leader.id},
    }


def _local_and_utc(epoch_ms: int | None, tz: str) -> tuple[str, str]:
    if epoch_ms is None:
        return "never", "-"
    utc = datetime.datetime.fromtimestamp(epoch_ms / 1000, _UTC)
    local = utc.astimezone(ZoneInfo(tz))
    return local.strftime("%Y-%m-%d %H:%M:%S %Z"), utc.strftime("%Y-%m-%d %H:%M:%S")


def _as_row(status: ScheduleStatus) -> tuple[str, ...]:
    leader = status.leader.describe() if status.leader is not None else "none"
    return (
        status.name,
        status.expression,
        status.tz,
        *_local_and_utc(status.last_run_ms, status.tz),
        *_local_and_utc(status.next_run_ms, status.tz),
        leader,
    )


def _print_table(rows: list[tuple[str, ...]], out: TextIO) -> None:
    widths = [max(len(row[i]) for row in (_COLUMNS, *rows)) for i in range(len(_COLUMNS))]
    for row in (_COLUMNS, *rows):
        out.write("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() + "\n")
