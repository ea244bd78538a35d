"""Declaring schedules: ``greenroom.schedule(actor, cron=... | every=...)``, checked at once."""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from typing import Any, get_args
from zoneinfo import ZoneInfo

from ..actor import Actor
from ._book import book_of
from ._cron import CronExpression, InvalidCron
from ._plan import MissedPolicy
from ._schedule import Schedule, ScheduleError
from ._triggers import CronTrigger, IntervalTrigger, Trigger

__all__ = ["MAX_NAME_BYTES", "MIN_INTERVAL_MS", "schedule"]

#: Schedule names are at most this long in UTF-8 (RabbitMQ builds queue names of them).
MAX_NAME_BYTES = 200
#: The shortest ``every=`` interval.
MIN_INTERVAL_MS = 1000


def schedule(
    actor: Actor[Any, Any],
    *,
    cron: str | None = None,
    every: float | datetime.timedelta | None = None,
    tz: str = "UTC",
    name: str | None = None,
    args: Sequence[Any] = (),
    kwargs: Mapping[str, Any] | None = None,
    missed: MissedPolicy = "latest",
) -> Schedule:
    """Send a message to ``actor`` at every tick of a cron expression or a fixed interval.

    Declare schedules next to the actors, in the module the ``greenroom`` command imports. Each
    ``greenroom`` run schedules (unless started with ``--no-scheduler``); however many run, each
    tick is enqueued once, with ``options["scheduled_at"]`` set to the tick's instant in epoch
    milliseconds.

    Parameters:
      actor: The actor to send to (its broker coordinates the runs).
      cron: Five fields (``"*/5 * * * *"``), six with a leading seconds field
        (``"*/10 * * * * *"``), or an alias: ``@hourly``, ``@daily``/``@midnight``, ``@weekly``,
        ``@monthly``, ``@yearly``/``@annually``. Evaluated in ``tz``.
      every: Seconds (at least 1) or a :class:`~datetime.timedelta`; the ticks are the multiples
        of the interval since the epoch, so every process agrees on them.
      tz: The IANA time zone of ``cron``. A wall time the clocks skip runs once, at the first
        valid instant after it; a wall time that occurs twice runs once, at its first occurrence.
      name: Unique per broker; defaults to the actor's name.
      args: Positional arguments of every message.
      kwargs: Keyword arguments of every message.
      missed: What happens to ticks missed while no process led (or the leader was stalled):
        ``"latest"`` runs the most recent one, ``"all"`` runs them all (at most 100, the most
        recent), ``"none"`` runs none.

    Returns:
      The schedule, as registered with the actor's broker.

    Raises:
      ScheduleError: On any bad input, naming the schedule.
    """
    schedule_name = name if name is not None else getattr(actor, "actor_name", repr(actor))
    if not isinstance(actor, Actor):
        raise ScheduleError(str(schedule_name), f"{actor!r} is not an actor")
    _check_name(schedule_name)
    zone = _zone(schedule_name, tz)
    declared = Schedule(
        name=schedule_name,
        actor=actor,
        trigger=_trigger(schedule_name, cron, every, zone),
        tz_name=zone.key,
        tz=zone,
        args=tuple(args),
        kwargs=dict(kwargs or {}),
        missed=_missed(schedule_name, missed),
    )
    try:
        actor.message_with_options(args=declared.args, kwargs=dict(declared.kwargs)).encode()
    except (TypeError, ValueError) as exc:
        raise ScheduleError(schedule_name, f"its arguments cannot be encoded: {exc}") from exc
    if not book_of(actor.broker).add(declared):
        raise ScheduleError(schedule_name, "declared twice on the same broker; give one of them another name=")
    return declared


def _check_name(name: object) -> None:
    if not isinstance(name, str) or not name or name != name.strip() or not name.isprintable():
        raise ScheduleError(str(name), "a name must be a non-empty printable string without surrounding spaces")
    if len(name.encode()) > MAX_NAME_BYTES:
        raise ScheduleError(name, f"a name must be at most {MAX_NAME_BYTES} bytes long")


def _zone(name: str, tz: object) -> ZoneInfo:
    if isinstance(tz, ZoneInfo):
        return tz
    if not isinstance(tz, str):
        raise ScheduleError(name, f"tz must be an IANA time zone name, not {tz!r}")
    try:
        return ZoneInfo(tz)
    except (KeyError, ValueError, OSError):  # ZoneInfoNotFoundError is a KeyError; bad keys are ValueErrors
        raise ScheduleError(name, f"unknown time zone {tz!r}") from None


def _trigger(name: str, cron: str | None, every: object, zone: ZoneInfo) -> Trigger:
    if (cron is None) == (every is None):
        given = "both" if cron is not None else "neither"
        raise ScheduleError(name, f"give exactly one of cron= and every= (got {given})")
    if cron is not None:
        if not isinstance(cron, str):
            raise ScheduleError(name, f"cron must be a string, not {cron!r}")
        try:
            return CronTrigger(CronExpression(cron), zone)
        except InvalidCron as exc:
            raise ScheduleError(name, f"invalid cron expression {cron!r}: {exc}") from exc
    return IntervalTrigger(_interval_ms(name, every))


def _interval_ms(name: str, every: object) -> int:
    if isinstance(every, datetime.timedelta):
        seconds = every.total_seconds()
    elif isinstance(every, (int, float)) and not isinstance(every, bool):
        seconds = float(every)
    else:
        raise ScheduleError(name, f"every must be a number of seconds or a timedelta, not {every!r}")
    if not seconds * 1000 >= MIN_INTERVAL_MS:  # also refuses NaN
        raise ScheduleError(name, f"every must be at least {MIN_INTERVAL_MS // 1000} second, not {every!r}")
    if seconds == float("inf"):
        raise ScheduleError(name, "every must be finite")
    return round(seconds * 1000)


def _missed(name: str, missed: object) -> MissedPolicy:
    choices: tuple[MissedPolicy, ...] = get_args(MissedPolicy)
    for choice in choices:
        if missed == choice:
            return choice
    raise ScheduleError(name, f"missed must be one of {', '.join(map(repr, choices))}, not {missed!r}")
