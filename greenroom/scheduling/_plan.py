"""Which due ticks a leader enqueues, and which it skips, under a schedule's ``missed`` policy.

A tick is *on time* when the leader takes it up less than :data:`MISSED_AFTER_MS` after its
instant, and *missed* otherwise: nobody led when it came (the leader died and its lease had not
run out yet), the leader stalled, or the machine's clock jumped forward. On-time ticks are always
enqueued. Missed ones follow the policy:

``"latest"``
    the most recent missed tick is enqueued, the older ones are skipped;
``"all"``
    every missed tick is enqueued, oldest first, but at most :data:`MAX_CATCH_UP` of them (the
    most recent ones); older ones are skipped;
``"none"``
    every missed tick is skipped.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from ._triggers import Trigger, recent_ticks

__all__ = ["MAX_CATCH_UP", "MAX_COUNTED", "MISSED_AFTER_MS", "MissedPolicy", "Plan", "plan_ticks"]

MissedPolicy = Literal["latest", "all", "none"]

#: A tick taken up this long (ms) after its instant, or later, counts as missed.
MISSED_AFTER_MS = 1000
#: ``missed="all"`` enqueues at most this many missed ticks at once (the most recent ones).
MAX_CATCH_UP = 100
#: Skipped ticks are counted one by one up to this many per catch-up (a clock that jumped years
#: ahead must not stall the scheduler while it counts).
MAX_COUNTED = 10_000


@dataclasses.dataclass(frozen=True)
class Plan:
    """What to do with the ticks in ``(after, now]``.

    ``send`` are the ticks to enqueue, oldest first; ``skipped`` how many are dropped; ``newest``
    the most recent due tick (``None`` when none is due), which the tick record must reach even
    when it is not sent.
    """

    send: tuple[int, ...] = ()
    skipped: int = 0
    newest: int | None = None


def plan_ticks(trigger: Trigger, policy: MissedPolicy, after_ms: int, now_ms: int) -> Plan:
    """The plan for the ticks in ``(after_ms, now_ms]``."""
    recent = recent_ticks(trigger, after_ms, now_ms, MAX_CATCH_UP + 2)
    if not recent:
        return Plan()
    on_time = tuple(t for t in recent if now_ms - t < MISSED_AFTER_MS)
    missed = [t for t in recent if now_ms - t >= MISSED_AFTER_MS]
    older = 0
    if len(recent) == MAX_CATCH_UP + 2:
        # There may be more missed ticks before the ones collected.
        older = trigger.count_between(after_ms, recent[0] - 1, MAX_COUNTED)
    if policy == "all":
        kept = missed[-MAX_CATCH_UP:]
    elif policy == "latest":
        kept = missed[-1:]
    else:
        kept = []
    return Plan(send=(*kept, *on_time), skipped=older + len(missed) - len(kept), newest=recent[-1])
