"""Leases and tick records in memory, for brokers without shared storage (the stub broker).

Every scheduler of such a broker runs in this process, so a dictionary behind a lock is the
whole coordination; leases still expire, so tests can kill a leader and watch another take over.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Mapping, Sequence

from ._store import Claim, Holder, Lease, Recorded, ScheduleStore

__all__ = ["MemoryStore"]


@dataclasses.dataclass
class _Entry:
    token: int = 0
    holder: Holder | None = None
    expires_ms: int = 0
    last_tick_ms: int | None = None
    last_run_ms: int | None = None


class MemoryStore(ScheduleStore):
    """Leases and tick records of one process; shared by the schedulers of one broker."""

    def __init__(self) -> None:
        #: Guards _entries; every scheduler thread of the broker uses it.
        self._lock = threading.Lock()
        self._entries: dict[str, _Entry] = {}

    def acquire(self, names: Sequence[str], holder: Holder, lease_ms: int, now_ms: int) -> list[Lease]:
        won = []
        with self._lock:
            for name in names:
                entry = self._entries.setdefault(name, _Entry())
                if entry.holder is not None and entry.expires_ms > now_ms:
                    continue
                entry.token += 1
                entry.holder = holder
                entry.expires_ms = now_ms + lease_ms
                won.append(Lease(name, entry.token, entry.last_tick_ms, entry.last_run_ms))
        return won

    def renew(self, leases: Sequence[Lease], holder: Holder, lease_ms: int, now_ms: int) -> list[Lease]:
        kept = []
        with self._lock:
            for lease in leases:
                entry = self._entries.get(lease.name)
                # Expired but taken by nobody since (same token): still ours.
                if entry is not None and entry.token == lease.token and entry.holder == holder:
                    entry.expires_ms = now_ms + lease_ms
                    kept.append(lease)
        return kept

    def record(self, lease: Lease, tick_ms: int, *, run: bool) -> Claim:
        with self._lock:
            entry = self._entries.get(lease.name)
            if entry is None or entry.token != lease.token:
                return Claim.LOST
            if entry.last_tick_ms is not None and tick_ms <= entry.last_tick_ms:
                return Claim.TAKEN
            entry.last_tick_ms = tick_ms
            if run:
                entry.last_run_ms = tick_ms
            return Claim.RECORDED

    def release(self, leases: Sequence[Lease], holder: Holder) -> None:
        with self._lock:
            for lease in leases:
                entry = self._entries.get(lease.name)
                if entry is not None and entry.token == lease.token:
                    entry.token += 1  # nothing the caller still records under its token is accepted
                    entry.holder = None
                    entry.expires_ms = 0

    def read(self, names: Sequence[str], now_ms: int) -> Mapping[str, Recorded]:
        with self._lock:
            result = {}
            for name in names:
                entry = self._entries.get(name, _Entry())
                leader = entry.holder if entry.expires_ms > now_ms else None
                result[name] = Recorded(entry.last_tick_ms, entry.last_run_ms, leader)
            return result
