"""Where job status, cancellation requests and worker heartbeats are kept: the store contract.

A store keeps, per message id, a record of JSON values merged field by field (so writers that
set different fields never undo each other), and, per worker process, its last heartbeat. Every
record expires: the store is bounded however many messages pass through it.
"""

from __future__ import annotations

import abc
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["JobStore", "WorkerInfo"]

#: A worker's heartbeat record: host, pid, queues, running count, started and last-beat times.
WorkerInfo = dict[str, Any]


class JobStore(abc.ABC):
    """The storage behind job status, progress, cancellation and the worker list.

    Implementations must be safe to call from many threads and processes at once.
    """

    @abc.abstractmethod
    def update(self, message_id: str, fields: Mapping[str, Any], ttl_ms: int) -> None:
        """Merge ``fields`` into the message's record (created if missing); it expires ``ttl_ms`` from now."""

    @abc.abstractmethod
    def get(self, message_id: str) -> dict[str, Any] | None:
        """The message's record, or ``None`` when there is none (unknown or expired)."""

    def begin(self, message_id: str, fields: Mapping[str, Any], ttl_ms: int) -> bool:
        """Merge ``fields`` (an attempt starting) and say whether cancellation was requested.

        Stores that can do both in one round trip override this.
        """
        record = self.get(message_id) or {}
        self.update(message_id, fields, ttl_ms)
        return bool(record.get("cancel_requested"))

    @abc.abstractmethod
    def cancel_requested(self, message_ids: Iterable[str]) -> set[str]:
        """Those of ``message_ids`` whose cancellation was requested (one round trip for all)."""

    @abc.abstractmethod
    def beat(self, worker_id: str, info: WorkerInfo, ttl_ms: int) -> None:
        """Record a worker's heartbeat; the worker counts as gone ``ttl_ms`` after its last beat."""

    @abc.abstractmethod
    def retire(self, worker_id: str) -> None:
        """Forget a worker that stops."""

    @abc.abstractmethod
    def workers(self) -> list[WorkerInfo]:
        """The workers whose last heartbeat has not expired."""

    def close(self) -> None:
        """Release connections; the store may be used again afterwards."""
