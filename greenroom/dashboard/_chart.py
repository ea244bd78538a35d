"""The geometry of the overview's throughput chart: one pair of bars per minute, drawn as inline SVG.

The template draws what :func:`bar_chart` computes, so the page needs no script and no library to
show it, and works offline.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Sequence

__all__ = ["Bar", "Chart", "bar_chart"]

#: The chart's drawing area, in SVG user units (the image scales to the page's width).
WIDTH = 720
HEIGHT = 160
#: Room left of the bars for the scale, and below them for the time labels.
LEFT = 44
BOTTOM = 20


@dataclasses.dataclass(frozen=True)
class Bar:
    """One minute: its processed bar, and its failed bar drawn over it (heights in user units)."""

    x: float
    width: float
    processed_y: float
    processed_height: float
    failed_y: float
    failed_height: float
    #: The tooltip: the minute and its counts.
    label: str


@dataclasses.dataclass(frozen=True)
class Chart:
    """What the template draws: the bars, the scale's top value and the axis labels."""

    width: int
    height: int
    left: int
    base_y: int
    bars: list[Bar]
    top: int
    processed: int
    failed: int
    first_label: str
    last_label: str


def _nice_top(largest: int) -> int:
    """The scale's top: the smallest of 1, 2 or 5 times a power of ten that is at least ``largest``."""
    power = 1
    while True:
        for factor in (1, 2, 5):
            if power * factor >= largest:
                return power * factor
        power *= 10


def _minute_label(minute: int) -> str:
    moment = datetime.datetime.fromtimestamp(minute * 60, datetime.timezone.utc)
    return moment.strftime("%H:%M UTC")


def bar_chart(series: Sequence[tuple[int, int, int]]) -> Chart:
    """The chart of ``(minute, processed, failed)`` triples, oldest first."""
    base_y = HEIGHT - BOTTOM
    top = _nice_top(max((processed for _, processed, _ in series), default=0))
    slot = (WIDTH - LEFT) / max(len(series), 1)
    bars = []
    for index, (minute, processed, failed) in enumerate(series):
        processed_height = base_y * processed / top
        failed_height = base_y * min(failed, processed) / top
        bars.append(
            Bar(
                x=round(LEFT + index * slot + slot * 0.1, 2),
                width=round(slot * 0.8, 2),
                processed_y=round(base_y - processed_height, 2),
                processed_height=round(processed_height, 2),
                failed_y=round(base_y - failed_height, 2),
                failed_height=round(failed_height, 2),
                label=f"{_minute_label(minute)}: {processed} processed, {failed} failed",
            )
        )
    return Chart(
        width=WIDTH,
        height=HEIGHT,
        left=LEFT,
        base_y=base_y,
        bars=bars,
        top=top,
        processed=sum(processed for _, processed, _ in series),
        failed=sum(failed for _, _, failed in series),
        first_label=_minute_label(series[0][0]) if series else "",
        last_label=_minute_label(series[-1][0]) if series else "",
    )
