"""How many tracked messages were processed, and how many of them failed, minute by minute.

Worker processes count the attempts that end in memory (:class:`MinuteTally`, no round trip per
message); the job-watch thread adds the counts to the store every heartbeat and when the worker
stops. The counts live beside the job status (:func:`~greenroom.jobs.minute_counts_for` picks
the kind of store) for :data:`KEEP_MS`, so the dashboard can chart the last hour on every broker
without Prometheus.

A minute is ``epoch_ms // 60_000``. "Processed" counts every attempt that ended (succeeded,
failed, about to be retried, or cancelled); "failed" those of them that ended in an exception.
"""

from __future__ import annotations

import abc
import threading
from collections.abc import Mapping

from ..common import current_millis

__all__ = ["KEEP_MS", "MINUTE_MS", "Counts", "MemoryMinuteCounts", "MinuteCounts", "MinuteTally"]

#: Milliseconds in a minute: the width of one count.
MINUTE_MS = 60_000
#: How long the counts of a minute are kept, in milliseconds.
KEEP_MS = 2 * 3600 * 1000

#: ``minute → (processed, failed)``
Counts = Mapping[int, tuple[int, int]]


class MinuteCounts(abc.ABC):
    """Per-minute counts of processed and failed messages, shared by every process of a broker."""

    @abc.abstractmethod
    def add(self, counts: Counts) -> None:
        """Add ``counts`` (``minute → (processed, failed)``) to what is stored."""

    @abc.abstractmethod
    def read(self, first_minute: int, last_minute: int) -> dict[int, tuple[int, int]]:
        """The stored counts of the minutes from ``first_minute`` to ``last_minute`` (both included)."""

    def last_hour(self, now_ms: int | None = None) -> list[tuple[int, int, int]]:
        """``(minute, processed, failed)`` for each of the 60 minutes that end with the current one, oldest first."""
        last = (current_millis() if now_ms is None else now_ms) // MINUTE_MS
        stored = self.read(last - 59, last)
        return [(minute, *stored.get(minute, (0, 0))) for minute in range(last - 59, last + 1)]

    def close(self) -> None:
        """Release connections; the counts may be used again afterwards."""


class MemoryMinuteCounts(MinuteCounts):
    """Counts in the memory of one process: those of the stub broker's job store."""

    def __init__(self) -> None:
        #: Guards _counts; taken by the job-watch thread and by readers.
        self._lock = threading.Lock()
        self._counts: dict[int, tuple[int, int]] = {}

    def add(self, counts: Counts) -> None:
        oldest = (current_millis() - KEEP_MS) // MINUTE_MS
        with self._lock:
            for minute, (processed, failed) in counts.items():
                before = self._counts.get(minute, (0, 0))
                self._counts[minute] = (before[0] + processed, before[1] + failed)
            for minute in [minute for minute in self._counts if minute < oldest]:
                del self._counts[minute]

    def read(self, first_minute: int, last_minute: int) -> dict[int, tuple[int, int]]:
        with self._lock:
            return {minute: pair for minute, pair in self._counts.items() if first_minute <= minute <= last_minute}


class MinuteTally:
    """The counts of one worker process not yet added to the store.

    Worker threads call :meth:`count`; the job-watch thread calls :meth:`flush`.
    """

    def __init__(self) -> None:
        #: Guards _counts; taken by every worker thread and the job-watch thread.
        self._lock = threading.Lock()
        self._counts: dict[int, tuple[int, int]] = {}

    def count(self, *, failed: bool, now_ms: int | None = None) -> None:
        """Count one attempt that ended (``failed``: in an exception)."""
        minute = (current_millis() if now_ms is None else now_ms) // MINUTE_MS
        with self._lock:
            processed, failures = self._counts.get(minute, (0, 0))
            self._counts[minute] = (processed + 1, failures + int(failed))

    def flush(self, target: MinuteCounts | None) -> None:
        """Add the counts to ``target`` and forget them; ``None`` (no place to keep them) only forgets them.

        When the store fails, the counts are kept for the next flush (minutes older than
        :data:`KEEP_MS` are dropped) and the error is raised.
        """
        with self._lock:
            counts, self._counts = self._counts, {}
        if not counts or target is None:
            return
        try:
            target.add(counts)
        except BaseException:
            oldest = (current_millis() - KEEP_MS) // MINUTE_MS
            with self._lock:
                for minute, (processed, failed) in counts.items():
                    if minute >= oldest:
                        later = self._counts.get(minute, (0, 0))
                        self._counts[minute] = (processed + later[0], failed + later[1])
            raise
