"""The scheduler: lead schedules through a store's leases, enqueue each of their ticks once.

One :meth:`Scheduler.run_once` renews or takes leases when due, enqueues the due ticks of the
schedules this scheduler leads (see ``_plan`` for missed ticks), and says how long to sleep: until
the next tick of a led schedule, or the next lease round, whichever comes first. ``run`` repeats
it in a thread until told to stop. Tests drive ``run_once`` with a fake clock instead.

Ticks are instants on the wall clock; lease rounds are paced by the monotonic clock, so a wall
clock that jumps neither stops the lease renewals nor makes them race.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from ..errors import BrokerError
from ..logging import get_logger
from ._metrics import NoMetrics, TickMetrics
from ._plan import plan_ticks
from ._store import Claim, Holder, Lease, ScheduleStore

if TYPE_CHECKING:
    from ._schedule import Schedule

__all__ = ["Clock", "Scheduler", "SchedulerSettings", "SystemClock"]


@dataclasses.dataclass(frozen=True)
class SchedulerSettings:
    """How leases are kept.

    Parameters:
      lease_ms: How long a lease lasts unless renewed: a dead leader is replaced within about
        this plus ``acquire_interval_ms`` (less on RabbitMQ, where the lease goes with the
        leader's connection).
      renew_interval_ms: How often a leader renews its leases.
      acquire_interval_ms: How often a scheduler tries to take the leases nobody holds.
      retry_pause_ms: The pause after the store failed (unreachable broker).
    """

    lease_ms: int = 3000
    renew_interval_ms: int = 500
    acquire_interval_ms: int = 500
    retry_pause_ms: int = 1000

    def __post_init__(self) -> None:
        if not 0 < self.renew_interval_ms <= self.lease_ms // 2:
            raise ValueError("renew_interval_ms must be positive and at most half of lease_ms")
        if self.acquire_interval_ms <= 0 or self.retry_pause_ms <= 0:
            raise ValueError("acquire_interval_ms and retry_pause_ms must be positive")


class Clock(Protocol):
    """The scheduler's two clocks, in milliseconds."""

    def wall_ms(self) -> int:
        """Epoch milliseconds: what ticks are measured in."""

    def monotonic_ms(self) -> float:
        """A clock that never jumps: what lease rounds are paced by."""


class SystemClock:
    """The machine's clocks."""

    def wall_ms(self) -> int:
        return time.time_ns() // 1_000_000

    def monotonic_ms(self) -> float:
        return time.monotonic() * 1000


class Scheduler:
    """Enqueues the ticks of ``schedules`` that this scheduler leads.

    Parameters:
      schedules: What to schedule (names unique).
      store: Where leases and tick records live (``store_for(broker)``).
      settings: Lease timing.
      clock: Wall and monotonic time (tests pass a fake one).
      metrics: Counts enqueued and skipped ticks.
      holder: Who this scheduler is, as shown to others; a new identity when ``None``.

    Only the thread running :meth:`run` (or calling :meth:`run_once`) may use it, and
    :meth:`close` once that thread is done.
    """

    def __init__(
        self,
        schedules: Sequence[Schedule],
        store: ScheduleStore,
        *,
        settings: SchedulerSettings | None = None,
        clock: Clock | None = None,
        metrics: TickMetrics | None = None,
        holder: Holder | None = None,
    ) -> None:
        self.schedules = {s.name: s for s in schedules}
        self.store = store
        self.settings = settings or SchedulerSettings()
        self.clock: Clock = clock or SystemClock()
        self.metrics: TickMetrics = metrics or NoMetrics()
        self.holder = holder or Holder.for_this_process()
        self.logger = get_logger("greenroom.scheduling", type(self))
        #: The schedules this scheduler leads, by name.
        self.leases: dict[str, Lease] = {}
        self._next_renew_ms = 0.0
        self._next_acquire_ms = 0.0
        #: Set after a failure while enqueuing: the due ticks are tried again then.
        self._retry_at_ms: float | None = None

    @property
    def leading(self) -> frozenset[str]:
        """The names of the schedules this scheduler leads now."""
        return frozenset(self.leases)

    # -- one round ------------------------------------------------------------------------------

    def run_once(self) -> float:
        """Keep the leases, enqueue due ticks; returns how long (s) to wait before the next round."""
        self._keep_leases(self.clock.monotonic_ms())
        now_ms = self.clock.wall_ms()
        self._retry_at_ms = None
        for lease in list(self.leases.values()):
            try:
                self._fire(lease, now_ms)
            except BrokerError as exc:
                self.logger.warning("Could not enqueue the due ticks of schedule %r: %s", lease.name, exc)
                self._retry_at_ms = self.clock.monotonic_ms() + self.settings.retry_pause_ms
        return self._wait_s()

    def _keep_leases(self, mono_ms: float) -> None:
        settings = self.settings
        try:
            if self.leases and mono_ms >= self._next_renew_ms:
                self._next_renew_ms = mono_ms + settings.renew_interval_ms
                self._renew()
            free = [name for name in self.schedules if name not in self.leases]
            if free and mono_ms >= self._next_acquire_ms:
                self._next_acquire_ms = mono_ms + settings.acquire_interval_ms
                self._acquire(free)
        except BrokerError as exc:
            self.logger.warning("Could not keep the schedule leases: %s", exc)
            self._next_renew_ms = mono_ms + settings.retry_pause_ms
            self._next_acquire_ms = mono_ms + settings.retry_pause_ms

    def _renew(self) -> None:
        held = list(self.leases.values())
        kept = {lease.name for lease in self.store.renew(held, self.holder, self.settings.lease_ms, self._now_ms())}
        for lease in held:
            if lease.name not in kept:
                self._lose(lease.name)

    def _acquire(self, names: list[str]) -> None:
        now_ms = self._now_ms()
        for lease in self.store.acquire(names, self.holder, self.settings.lease_ms, now_ms):
            if lease.last_tick_ms is None:
                # Never ran: start from now rather than from the beginning of time.
                lease.last_tick_ms = now_ms
            self.leases[lease.name] = lease
            self.logger.info("Leading schedule %r.", lease.name)

    def _lose(self, name: str) -> None:
        if self.leases.pop(name, None) is not None:
            self.logger.warning("No longer leading schedule %r: another process took it over.", name)

    def _now_ms(self) -> int:
        return self.clock.wall_ms()

    # -- ticks ----------------------------------------------------------------------------------

    def _fire(self, lease: Lease, now_ms: int) -> None:
        schedule = self.schedules[lease.name]
        assert lease.last_tick_ms is not None  # set when the lease was won
        plan = plan_ticks(schedule.trigger, schedule.missed, lease.last_tick_ms, now_ms)
        if plan.newest is None:
            return
        if plan.skipped:
            self.logger.info(
                "Skipping %d missed ticks of schedule %r (missed=%r).", plan.skipped, lease.name, schedule.missed
            )
            self.metrics.skipped(lease.name, plan.skipped)
        for tick_ms in plan.send:
            if not self._send(lease, schedule, tick_ms):
                return
        if lease.last_tick_ms < plan.newest:
            # The newest due tick was skipped: the record moves past it all the same.
            if self.store.record(lease, plan.newest, run=False) is Claim.LOST:
                self._lose(lease.name)
            else:
                lease.last_tick_ms = plan.newest

    def _send(self, lease: Lease, schedule: Schedule, tick_ms: int) -> bool:
        """Record the tick, then enqueue it; ``False`` when the lease turned out to be lost."""
        claim = self.store.record(lease, tick_ms, run=True)
        if claim is Claim.LOST:
            self._lose(lease.name)
            return False
        lease.last_tick_ms = tick_ms
        if claim is Claim.TAKEN:
            return True
        lease.last_run_ms = tick_ms
        try:
            schedule.actor.send_with_options(args=schedule.args, kwargs=dict(schedule.kwargs), scheduled_at=tick_ms)
        except Exception:  # the tick is recorded: lost, never sent twice; the scheduler goes on
            self.logger.exception("Could not enqueue tick %d of schedule %r; it is lost.", tick_ms, lease.name)
            self.metrics.skipped(lease.name, 1)
            return True
        self.metrics.enqueued(lease.name)
        if self.logger.isEnabledFor(logging.DEBUG):
            self.logger.debug("Enqueued tick %d of schedule %r.", tick_ms, lease.name)
        return True

    def _wait_s(self) -> float:
        now_ms = self.clock.wall_ms()
        mono_ms = self.clock.monotonic_ms()
        moments = [self._next_renew_ms if self.leases else self._next_acquire_ms]
        if self.leases and len(self.leases) < len(self.schedules):
            moments.append(self._next_acquire_ms)
        if self._retry_at_ms is not None:
            moments.append(self._retry_at_ms)
        waits_ms = [moment - mono_ms for moment in moments]
        for lease in self.leases.values():
            after_ms = max(now_ms, lease.last_tick_ms or now_ms)
            waits_ms.append(self.schedules[lease.name].trigger.next_after(after_ms) - now_ms)
        return max(0.0, min(waits_ms) / 1000)

    # -- running --------------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Run rounds until ``stop`` is set, then release the leases."""
        try:
            while not stop.is_set():
                try:
                    wait_s = self.run_once()
                except Exception:  # thread top level: log, pause, go on
                    self.logger.exception("The scheduler failed; trying again.")
                    wait_s = self.settings.retry_pause_ms / 1000
                stop.wait(wait_s)
        finally:
            self.close()

    def close(self) -> None:
        """Give up the leases (so that another process takes over at once) and the store's connections."""
        leases = list(self.leases.values())
        self.leases.clear()
        try:
            if leases:
                self.store.release(leases, self.holder)
        except BrokerError as exc:
            self.logger.warning("Could not release the schedule leases (they will expire): %s", exc)
        finally:
            self.store.close()
