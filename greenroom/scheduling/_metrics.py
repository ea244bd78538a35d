"""Prometheus counters of the scheduler: ticks enqueued and ticks skipped, per schedule.

Exported next to the worker metrics (the same multiprocess directory, the same exposition
process), and only added to them: the metric set of :mod:`greenroom.middleware.prometheus` stays
as it is. ``<prefix>_schedule_ticks_enqueued_total`` and ``<prefix>_schedule_ticks_skipped_total``
carry one label, ``schedule``.
"""

from __future__ import annotations

from typing import Any, Protocol

__all__ = ["NoMetrics", "TickCounters", "TickMetrics"]


class TickMetrics(Protocol):
    """What the scheduler counts."""

    def enqueued(self, schedule: str) -> None: ...

    def skipped(self, schedule: str, count: int) -> None: ...


class NoMetrics:
    """Counts nothing (no Prometheus in this process)."""

    def enqueued(self, schedule: str) -> None:
        pass

    def skipped(self, schedule: str, count: int) -> None:
        pass


class TickCounters:
    """The two counters, in a registry of their own (needs ``prometheus_client``).

    Build it after the multiprocess directory is set in the environment (as the CLI does),
    like the Prometheus middleware.

    Parameters:
      prefix: The metric name prefix, the Prometheus middleware's.
      registry: Where to register; a private registry when ``None``.
    """

    def __init__(self, prefix: str = "greenroom", registry: Any = None) -> None:
        import prometheus_client as prom

        self.registry = registry if registry is not None else prom.CollectorRegistry(auto_describe=True)
        self._enqueued = prom.Counter(
            f"{prefix}_schedule_ticks_enqueued",
            "The ticks of a schedule whose message was enqueued.",
            ("schedule",),
            registry=self.registry,
        )
        self._skipped = prom.Counter(
            f"{prefix}_schedule_ticks_skipped",
            "The ticks of a schedule that were not enqueued (missed under its policy, or lost).",
            ("schedule",),
            registry=self.registry,
        )

    def enqueued(self, schedule: str) -> None:
        self._enqueued.labels(schedule).inc()

    def skipped(self, schedule: str, count: int) -> None:
        self._skipped.labels(schedule).inc(count)
