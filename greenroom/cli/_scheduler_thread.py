"""The scheduler of periodic jobs, run by a thread of the first worker process of each ``greenroom`` run.

Every run schedules (unless ``--no-scheduler``), so that a run dying takes no schedule with it:
the schedulers of all runs share the broker's leases, one of them leads each schedule, and the
others take over when it dies. With ``--scheduler-only`` the process runs this thread and no
workers.
"""

from __future__ import annotations

import logging
import threading

from ..broker import Broker
from ..middleware.prometheus import Prometheus
from ..scheduling import Scheduler, TickCounters, schedules_of, store_for

__all__ = ["SchedulerThread", "start_scheduler"]

#: How long a stopping worker process waits for the scheduler to hand its leases back.
STOP_TIMEOUT_S = 5.0


class SchedulerThread:
    """Runs a :class:`~greenroom.scheduling.Scheduler` until :meth:`stop`."""

    def __init__(self, scheduler: Scheduler) -> None:
        self.scheduler = scheduler
        #: Set by the process's main thread to stop the scheduler thread.
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=scheduler.run, args=(self.stopping,), name="Scheduler", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        """Stop scheduling and release the leases, so that another run takes over at once."""
        self.stopping.set()
        self.thread.join(STOP_TIMEOUT_S)


def start_scheduler(broker: Broker, logger: logging.Logger) -> SchedulerThread | None:
    """Start scheduling the broker's schedules; ``None`` when it has none (or cannot coordinate them)."""
    schedules = schedules_of(broker)
    if not schedules:
        return None
    try:
        store = store_for(broker)
    except TypeError as exc:
        logger.error("Periodic jobs cannot run: %s.", exc)
        return None
    prefixes = [m.prefix for m in broker.middleware if isinstance(m, Prometheus)]
    # The counters join the worker metrics when this run exports them.
    metrics = TickCounters(prefixes[0]) if prefixes else None
    thread = SchedulerThread(Scheduler(schedules, store, metrics=metrics))
    thread.start()
    logger.info("Scheduling %s.", ", ".join(repr(s.name) for s in schedules))
    return thread
