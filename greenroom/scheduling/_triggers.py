"""When a schedule ticks: fixed intervals since the epoch, or cron expressions in a time zone.

Every tick is an instant in epoch milliseconds. A cron expression describes local wall times;
:class:`CronTrigger` turns each matching wall time into exactly one instant:

* a wall time that exists once is that instant;
* a wall time in the hour the clocks skip (spring forward) becomes the first valid instant after
  it, the moment the clocks jump: ``30 2 * * *`` in Europe/Berlin runs at 03:00 CEST that day,
  and several matches inside the skipped hour (``*/15 2 * * *``) all become that one instant, so
  they run once;
* a wall time that occurs twice (fall back) is its first occurrence: ``30 2 * * *`` runs once, at
  02:30 CEST, and the repeated hour itself brings no tick.

Mapped this way, later wall times never give earlier instants, which is what lets the methods
below walk the expression with a single croniter step.
"""

from __future__ import annotations

import datetime
from typing import Protocol
from zoneinfo import ZoneInfo

from ._cron import CronExpression

__all__ = ["CronTrigger", "IntervalTrigger", "Trigger", "recent_ticks"]

_UTC = datetime.timezone.utc
_ONE_SECOND = datetime.timedelta(seconds=1)


class Trigger(Protocol):
    """The instants (epoch ms) at which a schedule ticks."""

    def next_after(self, instant_ms: int) -> int:
        """The first tick strictly after ``instant_ms``."""

    def latest_at_or_before(self, instant_ms: int) -> int | None:
        """The last tick at or before ``instant_ms``, ``None`` if there is none."""

    def count_between(self, after_ms: int, until_ms: int, cap: int) -> int:
        """How many ticks lie in ``(after_ms, until_ms]``, counting at most ``cap`` when that takes a walk."""

    def describe(self) -> str:
        """The expression as the user wrote it (``*/5 * * * *``, ``every 30s``)."""


def recent_ticks(trigger: Trigger, after_ms: int, until_ms: int, limit: int) -> list[int]:
    """Up to ``limit`` of the most recent ticks in ``(after_ms, until_ms]``, oldest first."""
    ticks: list[int] = []
    tick = trigger.latest_at_or_before(until_ms)
    while tick is not None and tick > after_ms and len(ticks) < limit:
        ticks.append(tick)
        tick = trigger.latest_at_or_before(tick - 1)
    ticks.reverse()
    return ticks


class IntervalTrigger:
    """Ticks at every multiple of ``interval_ms`` since the epoch (so all processes agree on them)."""

    def __init__(self, interval_ms: int) -> None:
        if interval_ms <= 0:
            raise ValueError("the interval must be positive")
        self.interval_ms = interval_ms

    def next_after(self, instant_ms: int) -> int:
        return (instant_ms // self.interval_ms + 1) * self.interval_ms

    def latest_at_or_before(self, instant_ms: int) -> int | None:
        return (instant_ms // self.interval_ms) * self.interval_ms

    def count_between(self, after_ms: int, until_ms: int, cap: int) -> int:
        return max(0, until_ms // self.interval_ms - after_ms // self.interval_ms)

    def describe(self) -> str:
        return f"every {_format_interval(self.interval_ms)}"


def _format_interval(interval_ms: int) -> str:
    if interval_ms % 1000:
        return f"{interval_ms}ms"
    seconds = interval_ms // 1000
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


class CronTrigger:
    """Ticks at the wall times a cron expression matches in ``tz`` (see the module docstring for DST)."""

    def __init__(self, expression: CronExpression, tz: ZoneInfo) -> None:
        self.expression = expression
        self.tz = tz

    def describe(self) -> str:
        return self.expression.text

    def count_between(self, after_ms: int, until_ms: int, cap: int) -> int:
        return len(recent_ticks(self, after_ms, until_ms, cap))

    def next_after(self, instant_ms: int) -> int:
        second = instant_ms // 1000
        # Matches are whole seconds: one at ``second`` itself is not after instant_ms.
        start = self._naive(second)
        end = self._second_pass_end(second)
        if end is not None:
            # In the repeated hour, the wall times still ahead on the clock were already used by
            # the first pass; the next tick is the first match once the hour is over.
            start = end - _ONE_SECOND
        return self._resolve(self.expression.next_after(start))

    def latest_at_or_before(self, instant_ms: int) -> int | None:
        second = instant_ms // 1000
        end = self._second_pass_end(second)
        # Every match before ``end`` (the whole repeated hour) lies in its first pass, before now.
        start = end if end is not None else self._naive(second) + _ONE_SECOND
        try:
            wall_time = self.expression.previous_before(start)
        except ValueError:  # croniter found no earlier match within its search range
            return None
        return self._resolve(wall_time)

    # -- wall time ↔ instants -------------------------------------------------------------------

    def _naive(self, second: int) -> datetime.datetime:
        return datetime.datetime.fromtimestamp(second, self.tz).replace(tzinfo=None)

    def _offset(self, second: int) -> datetime.timedelta:
        offset = datetime.datetime.fromtimestamp(second, self.tz).utcoffset()
        assert offset is not None  # a ZoneInfo always has one
        return offset

    def _resolve(self, wall_time: datetime.datetime) -> int:
        """The instant (ms) of a local wall time: its first occurrence, or the end of the gap it falls in."""
        first = wall_time.replace(tzinfo=self.tz, fold=0)
        back = first.astimezone(_UTC).astimezone(self.tz).replace(tzinfo=None)
        if back == wall_time:
            return int(first.timestamp()) * 1000
        # Skipped by the clocks. Read with the offset after the jump it lies before the jump,
        # with the offset before it after the jump: the jump is in between.
        second = wall_time.replace(tzinfo=self.tz, fold=1)
        low, high = sorted((int(first.timestamp()), int(second.timestamp())))
        return self._transition(low, high) * 1000

    def _transition(self, low: int, high: int) -> int:
        """The first second in ``(low, high]`` with the UTC offset of ``high`` (the offset changes once there)."""
        target = self._offset(high)
        while high - low > 1:
            middle = (low + high) // 2
            if self._offset(middle) == target:
                high = middle
            else:
                low = middle
        return high

    def _second_pass_end(self, second: int) -> datetime.datetime | None:
        """When ``second`` lies in the second pass of a repeated hour: the wall time at which that hour ends."""
        local = datetime.datetime.fromtimestamp(second, self.tz)
        if not local.fold:
            return None
        first_offset = local.replace(fold=0).utcoffset()
        assert first_offset is not None
        length = first_offset - self._offset(second)
        # The second pass began within ``length`` before ``second``: find the moment it began.
        began = self._transition(second - int(length.total_seconds()), second)
        return self._naive(began) + length
