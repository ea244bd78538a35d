"""Periodic jobs: ``greenroom.schedule(actor, cron=... | every=...)``, run by every ``greenroom`` command.

Each ``greenroom`` run starts a scheduler (in its first worker process, or alone with
``--scheduler-only``). Schedulers coordinate through the broker: per schedule, one of them holds
a lease and enqueues the ticks; a tick record fenced by the lease's token makes sure that no
tick is enqueued twice, whoever leads. See :mod:`greenroom.scheduling._store` for the contract
and the ``_*_store`` modules for how each broker keeps it.
"""

from ._book import schedules_of
from ._declare import schedule
from ._metrics import TickCounters
from ._plan import MAX_CATCH_UP, MISSED_AFTER_MS, MissedPolicy
from ._schedule import Schedule, ScheduleError
from ._scheduler import Clock, Scheduler, SchedulerSettings, SystemClock
from ._status import ScheduleStatus, schedule_statuses
from ._store import Holder, ScheduleStore
from ._stores import store_for

__all__ = [
    "MAX_CATCH_UP",
    "MISSED_AFTER_MS",
    "Clock",
    "Holder",
    "MissedPolicy",
    "Schedule",
    "ScheduleError",
    "ScheduleStatus",
    "ScheduleStore",
    "Scheduler",
    "SchedulerSettings",
    "SystemClock",
    "TickCounters",
    "schedule",
    "schedule_statuses",
    "schedules_of",
    "store_for",
]
