"""The Postgres broker's settings."""

from __future__ import annotations

import dataclasses

from ...broker import MAX_PAYLOAD_BYTES

__all__ = ["PostgresSettings"]


@dataclasses.dataclass(frozen=True)
class PostgresSettings:
    """Tuning of :class:`PostgresBroker`; the defaults suit most applications.

    Parameters:
      lease_ms: How long a fetched message stays invisible to other consumers unless its lease is
        renewed: the longest a message of a killed worker waits before it is delivered again.
      renew_interval_ms: How often a worker process renews the leases of the messages it holds; at
        most half of ``lease_ms``. 0 means a third of ``lease_ms``.
      dead_message_ttl: How long dead letters are kept before they are purged (ms).
      retry_timeout_ms: How long producers and acknowledgements keep retrying while the server
        cannot be reached, before :class:`~greenroom.errors.ConnectionClosed` reaches the caller.
      poll_interval_ms: How often an idle consumer looks at its queue without being notified: the
        bound on the cost of a lost notification (and of a lease that ran out without a commit).
      pool_max_size: Most connections of each of a process's two pools (producers, consumers).
      connect_timeout_s: How long opening one connection may take.
      durable_enqueue: Whether an enqueue waits until its commit is flushed to disk
        (``synchronous_commit``); leases, acknowledgements and renewals never wait for that.
      max_payload_bytes: Larger payloads are dead-lettered instead of decoded.
      vacuum_interval_ms: How often a worker process vacuums the messages table (one process at a
        time); 0 leaves it to autovacuum. The index pages that acknowledged rows empty are reused
        only once a vacuum has passed over them twice: autovacuum alone (every minute at best) lets
        the indexes grow with the number of messages under sustained load.
      reindex_over_bytes: The process that vacuumed the messages table rebuilds its indexes
        (``REINDEX TABLE CONCURRENTLY``, on a thread of its own) when they have grown beyond this
        size and the table holds at most 1,000 rows: a vacuum reuses the index pages it frees but
        never gives them back, so after a burst the indexes would keep their peak size. 0: never.
    """

    lease_ms: int = 30_000
    renew_interval_ms: int = 0
    dead_message_ttl: int = 7 * 24 * 3600 * 1000
    retry_timeout_ms: int = 5_000
    poll_interval_ms: int = 1_000
    pool_max_size: int = 10
    connect_timeout_s: float = 5.0
    durable_enqueue: bool = True
    max_payload_bytes: int = MAX_PAYLOAD_BYTES
    vacuum_interval_ms: int = 10_000
    reindex_over_bytes: int = 1 << 20

    def __post_init__(self) -> None:
        if self.renew_interval_ms == 0:
            object.__setattr__(self, "renew_interval_ms", self.lease_ms // 3)
        if not 0 < self.renew_interval_ms <= self.lease_ms // 2:
            raise ValueError("renew_interval_ms must be positive and at most half of lease_ms")
        if self.poll_interval_ms <= 0 or self.pool_max_size < 1 or self.connect_timeout_s <= 0:
            raise ValueError("poll_interval_ms, pool_max_size and connect_timeout_s must be positive")
        sizes = (self.max_payload_bytes, self.reindex_over_bytes)
        if min(self.dead_message_ttl, self.retry_timeout_ms, self.vacuum_interval_ms, *sizes) < 0:
            raise ValueError("durations and sizes must not be negative")
