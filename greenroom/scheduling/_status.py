"""What ``greenroomctl schedules`` shows: each schedule's expression, last and next run, and leader."""

from __future__ import annotations

import dataclasses
import time
from typing import TYPE_CHECKING

from ._book import schedules_of
from ._store import Holder, ScheduleStore
from ._stores import store_for

if TYPE_CHECKING:
    from ..broker import Broker

__all__ = ["ScheduleStatus", "schedule_statuses"]


@dataclasses.dataclass(frozen=True)
class ScheduleStatus:
    """One schedule as declared and as its store knows it (times in epoch ms)."""

    name: str
    actor_name: str
    queue_name: str
    #: The cron expression, or ``every <interval>``.
    expression: str
    tz: str
    missed: str
    #: The newest tick enqueued; ``None`` when none was.
    last_run_ms: int | None
    #: The next tick, as the schedule stands now.
    next_run_ms: int
    #: The process leading the schedule; ``None`` when none does.
    leader: Holder | None


def schedule_statuses(
    broker: Broker, *, store: ScheduleStore | None = None, now_ms: int | None = None
) -> list[ScheduleStatus]:
    """The status of every schedule declared on ``broker``, read from its store.

    Raises:
      BrokerError: When the store cannot be read (the broker is unreachable).
      TypeError: When greenroom has no store for this kind of broker.
    """
    schedules = schedules_of(broker)
    if not schedules:
        return []
    now_ms = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    own_store = store is None
    store = store_for(broker) if store is None else store
    try:
        recorded = store.read([s.name for s in schedules], now_ms)
    finally:
        if own_store:
            store.close()
    statuses = []
    for schedule in schedules:
        record = recorded[schedule.name]
        # A record ahead of this clock (another host's clock runs fast) delays the next run.
        after_ms = max(now_ms, record.last_tick_ms or now_ms)
        statuses.append(
            ScheduleStatus(
                name=schedule.name,
                actor_name=schedule.actor.actor_name,
                queue_name=schedule.actor.queue_name,
                expression=schedule.expression,
                tz=schedule.tz_name,
                missed=schedule.missed,
                last_run_ms=record.last_run_ms,
                next_run_ms=schedule.trigger.next_after(after_ms),
                leader=record.leader,
            )
        )
    return statuses
