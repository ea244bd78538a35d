"""What schedulers coordinate through: a lease per schedule and a record of the ticks taken.

Exactly one message per (schedule, tick) rests on two things a store provides:

* a **lease** per schedule, held by one scheduler at a time, which expires when its holder
  stops renewing it (dies), and comes with a **fencing token** that grows with every change of
  holder;
* a **tick record** per schedule: the newest tick taken. :meth:`ScheduleStore.record` moves it
  forward only if the caller's token is still the current one and the tick is newer, in one
  atomic step, and the caller enqueues only after that step succeeded.

A leader that was paused while its lease ran out and another process took over finds its token
refused, so two processes never both record, and so never both enqueue, the same tick. The price
of recording first: a leader killed between recording a tick and enqueuing it loses that one tick
(it is never sent twice).
"""

from __future__ import annotations

import abc
import dataclasses
import enum
import json
import os
import socket
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["Claim", "Holder", "Lease", "Recorded", "ScheduleStore"]


@dataclasses.dataclass(frozen=True)
class Holder:
    """Who leads: one scheduler in one process."""

    #: Unique per scheduler instance (a restarted process is another holder).
    id: str
    host: str
    pid: int

    @classmethod
    def for_this_process(cls) -> Holder:
        return cls(id=uuid.uuid4().hex, host=socket.gethostname(), pid=os.getpid())

    def describe(self) -> str:
        return f"{self.host} pid {self.pid}"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Holder | None:
        """The holder :meth:`to_dict` described; ``None`` when fields are missing or wrong."""
        try:
            return cls(id=str(data["id"]), host=str(data["host"]), pid=int(data["pid"]))
        except (ValueError, KeyError, TypeError):
            return None

    @classmethod
    def from_json(cls, text: str | bytes | None) -> Holder | None:
        """The holder encoded by :meth:`to_json`; ``None`` for nothing or garbage."""
        if not text:
            return None
        try:
            data = json.loads(text)
        except ValueError:
            return None
        return cls.from_dict(data) if isinstance(data, dict) else None


@dataclasses.dataclass
class Lease:
    """A schedule this scheduler leads, as the store granted it.

    ``last_tick_ms`` is the tick record when the lease was won, then kept up to date by the
    holder (the only one that writes it while the lease lasts); ``last_run_ms`` the newest tick
    that was enqueued rather than skipped.
    """

    name: str
    token: int
    last_tick_ms: int | None = None
    last_run_ms: int | None = None


@dataclasses.dataclass(frozen=True)
class Recorded:
    """What a store knows of a schedule (for ``greenroomctl``)."""

    last_tick_ms: int | None = None
    last_run_ms: int | None = None
    #: The current leader; ``None`` when nobody holds the lease.
    leader: Holder | None = None


class Claim(enum.Enum):
    """The outcome of :meth:`ScheduleStore.record`."""

    #: The tick is recorded: the caller may enqueue it.
    RECORDED = "recorded"
    #: The record already covers the tick: it was taken before; do nothing.
    TAKEN = "taken"
    #: The caller's token is no longer current: it does not lead this schedule any more.
    LOST = "lost"


class ScheduleStore(abc.ABC):
    """A broker's storage for leases and tick records (one implementation per kind of broker).

    A scheduler calls it from one thread; implementations need not be thread-safe unless they
    are shared between schedulers (the in-memory store is).
    """

    @abc.abstractmethod
    def acquire(self, names: Sequence[str], holder: Holder, lease_ms: int, now_ms: int) -> list[Lease]:
        """Try to take the leases of the schedules ``names`` (none held by ``holder``).

        Returns the leases won, each with a new fencing token and the tick record read after
        winning it. ``now_ms`` is the caller's clock; stores with a clock of their own ignore it.
        """

    @abc.abstractmethod
    def renew(self, leases: Sequence[Lease], holder: Holder, lease_ms: int, now_ms: int) -> list[Lease]:
        """Extend the leases still held by ``holder`` with the same token; returns those."""

    @abc.abstractmethod
    def record(self, lease: Lease, tick_ms: int, *, run: bool) -> Claim:
        """Move the tick record of ``lease.name`` to ``tick_ms``, atomically fenced by ``lease.token``.

        ``run`` says whether the tick is being enqueued (it then becomes the last run too).
        """

    @abc.abstractmethod
    def release(self, leases: Sequence[Lease], holder: Holder) -> None:
        """Give up leases so that another process takes over at once (a clean stop)."""

    @abc.abstractmethod
    def read(self, names: Sequence[str], now_ms: int) -> Mapping[str, Recorded]:
        """The records and current leaders of the schedules ``names``."""

    def close(self) -> None:
        """Release connections (the store reconnects if used again)."""
