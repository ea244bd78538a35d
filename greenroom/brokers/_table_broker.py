"""What the brokers that keep their queues in database tables (SQLite, PostgreSQL) do the same way.

Their queues, delay queues and dead letters are rows; a consumer leases rows and its process's
lease keeper renews them (see :mod:`._lease_keeper`). On top of a storage layer and a dead-letter
table of their own, they share the queue operations, ``join`` and the recovery of a dead worker
process's rows, written here once.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any, Protocol

from .._operations import DeadLetter, QueueCounts, check_age, check_limit, wanted_ids
from ..broker import Broker
from ..common import q_name
from ..errors import QueueNotFound

__all__ = ["DeadLetterRows", "QueueRows", "TableBroker", "eta_ms"]

_INT64_MAX = 2**63 - 1


def eta_ms(queue_name: str, options: dict[str, Any]) -> int | None:
    """When a new row is due, if later than now: the ``eta`` of a message on a delay queue (clamped
    to what a 64-bit column holds); ``None`` for any other message, or an ``eta`` that is no number."""
    eta = options.get("eta")
    if not queue_name.endswith(".DQ") or isinstance(eta, bool) or not isinstance(eta, (int, float)):
        return None
    return max(0, min(int(eta), _INT64_MAX)) if math.isfinite(eta) else None


class QueueRows(Protocol):
    """The storage layer's part in the shared operations."""

    def flush(self, queue_name: str) -> None: ...

    def has_messages(self, queue_name: str) -> bool: ...

    def counts(self, queue_name: str) -> QueueCounts: ...

    def dead_letters(self, queue_name: str, limit: int) -> list[DeadLetter]: ...

    def unlease_process(self, process: str) -> int: ...


class DeadLetterRows(Protocol):
    """The dead-letter table's part in the shared operations."""

    def knows(self, queue_name: str) -> bool: ...

    def requeue(self, queue_name: str, message_ids: frozenset[str] | None) -> int: ...

    def purge(self, queue_name: str, older_than_ms: int) -> int: ...


class TableBroker(Broker):
    """A broker whose messages are rows: the operations API, ``join`` and recovery over its tables.

    A subclass sets ``_storage`` and ``_dead_letters`` in its constructor. A queue is known when it
    is declared here or has rows in the tables: the check costs a query only when an operation
    found nothing.
    """

    _storage: QueueRows
    _dead_letters: DeadLetterRows

    def flush(self, queue_name: str) -> None:
        """Drop every message of a queue, of its delay queue, and its dead letters."""
        self._storage.flush(queue_name)

    def queue_is_empty(self, queue_name: str) -> bool:
        """Whether a queue and its delay queue hold no message: none ready, delayed or in progress."""
        return not self._storage.has_messages(queue_name)

    def join(self, queue_name: str, *, timeout: int | None = None) -> None:
        """Wait until a queue and its delay queue hold no message: none ready, delayed or in progress.

        The check is one indexed read, repeated every 10 ms.

        Raises:
          QueueNotFound: When the queue was never declared.
          QueueJoinTimeout: When ``timeout`` ms pass first.
        """
        if q_name(queue_name) not in self.queues:
            raise QueueNotFound(queue_name)
        self._join(queue_name, timeout_ms=timeout, interval_s=0.01)

    # -- operations (see greenroom._operations.QueueOperations) -------------------------------------

    def get_queue_counts(self, queue_name: str) -> QueueCounts:
        """How many messages of a queue are ready, delayed, in progress and dead (see :class:`QueueCounts`).

        In progress: leased by a worker (prefetched or running), including due delayed messages
        being moved to their queue. Raises ``QueueNotFound`` for an unknown queue.
        """
        counts = self._storage.counts(queue_name)
        if not any(counts):
            self._require_known(queue_name)
        return counts

    def get_dead_letters(self, queue_name: str, *, limit: int = 100) -> list[DeadLetter]:
        """The oldest ``limit`` dead letters of a queue, with the reason each was dead-lettered.

        Raises ``QueueNotFound`` for an unknown queue."""
        letters = self._storage.dead_letters(queue_name, check_limit(limit))
        if not letters:
            self._require_known(queue_name)
        return letters

    def requeue_dead_letters(self, queue_name: str, message_ids: Iterable[str] | None = None) -> int:
        """Move dead letters back to their queue (all of them for ``None``); returns how many.

        Each chunk of messages is written and its dead letters deleted in one transaction, so none
        is lost or doubled. See :meth:`greenroom.broker.Broker.requeue_dead_letters`."""
        moved = self._dead_letters.requeue(queue_name, wanted_ids(message_ids))
        if not moved:
            self._require_known(queue_name)
        return moved

    def purge_dead_letters(self, queue_name: str, *, older_than_ms: int | None = None) -> int:
        """Delete the dead letters of a queue (those dead at least ``older_than_ms`` ms if given); how many."""
        deleted = self._dead_letters.purge(queue_name, check_age(older_than_ms))
        if not deleted:
            self._require_known(queue_name)
        return deleted

    def _require_known(self, queue_name: str) -> None:
        if q_name(queue_name) not in self.queues and not self._dead_letters.knows(queue_name):
            raise QueueNotFound(queue_name)

    def recover_process(self, host: str, pid: int) -> int:
        """Release the leases of a dead worker process now, rather than after ``lease_ms``: its
        messages are delivered again at once. Returns how many rows it held."""
        return self._storage.unlease_process(f"{host}:{pid}")
