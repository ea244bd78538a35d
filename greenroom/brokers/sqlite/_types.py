"""The SQLite broker's settings."""

from __future__ import annotations

import dataclasses

from ...broker import MAX_PAYLOAD_BYTES

__all__ = ["SQLiteSettings"]

_SYNC_LEVELS = ("OFF", "NORMAL", "FULL", "EXTRA")


@dataclasses.dataclass(frozen=True)
class SQLiteSettings:
    """Tuning of :class:`SQLiteBroker`; the defaults suit most applications.

    Parameters:
      lease_ms: How long a fetched message stays invisible to other consumers unless its lease is
        renewed: the longest a message of a killed worker waits before it is delivered again.
      renew_interval_ms: How often a process renews the leases of the messages it holds; at most
        half of ``lease_ms``, so that one late renewal loses nothing. 0 means a third of ``lease_ms``.
      dead_message_ttl: How long dead letters are kept before they are purged (ms).
      busy_timeout_ms: How long one SQLite statement waits for a lock another connection holds.
      lock_retry_ms: How long an operation keeps retrying, with backoff, while the database stays
        busy, before :class:`~greenroom.errors.ConnectionClosed` reaches the caller.
      synchronous: The ``PRAGMA synchronous`` level enqueues commit with; other writes use NORMAL.
      max_payload_bytes: Larger payloads are dead-lettered instead of decoded.
    """

    lease_ms: int = 30_000
    renew_interval_ms: int = 0
    dead_message_ttl: int = 7 * 24 * 3600 * 1000
    busy_timeout_ms: int = 5_000
    lock_retry_ms: int = 60_000
    synchronous: str = "FULL"
    max_payload_bytes: int = MAX_PAYLOAD_BYTES

    def __post_init__(self) -> None:
        if self.renew_interval_ms == 0:
            object.__setattr__(self, "renew_interval_ms", self.lease_ms // 3)
        if not 0 < self.renew_interval_ms <= self.lease_ms // 2:
            raise ValueError("renew_interval_ms must be positive and at most half of lease_ms")
        if self.synchronous.upper() not in _SYNC_LEVELS:
            raise ValueError(f"synchronous must be one of {', '.join(_SYNC_LEVELS)}, not {self.synchronous!r}")
        if min(self.dead_message_ttl, self.busy_timeout_ms, self.lock_retry_ms, self.max_payload_bytes) < 0:
            raise ValueError("durations and sizes must not be negative")
