"""Job control: the status of a message by its id, progress reported by its actor, and cancellation.

Add :class:`JobTracking` to the broker (last, in producers and workers alike), then::

    message = report.send(2026)
    greenroom.get_status(message.message_id)   # JobStatus(state="running", progress=0.4, ...)
    greenroom.cancel(message.message_id)       # CancelResult(outcome="requested", ...)

and inside the actor ``greenroom.set_progress(0.4, "4 of 10 files")``.

Status lives in the broker's own storage on SQLite and Redis, in memory with the stub broker,
and, on RabbitMQ, in a store given to the middleware (:class:`RedisJobStore` or
:class:`SQLiteJobStore`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .._lazy import import_optional
from ..errors import Cancelled
from ._api import CancelResult, cancel, get_status, set_progress
from ._history import Attempt, JobDetails, get_details, preview_arguments
from ._memory_store import MemoryJobStore
from ._middleware import JobTracking
from ._minute_stores import minute_counts_for
from ._minutes import MinuteCounts
from ._status import FINISHED, JobStatus, State
from ._store import JobStore
from ._stores import JobStoreNotConfigured, store_for

if TYPE_CHECKING:
    from ._postgres_store import PostgresJobStore
    from ._redis_store import RedisJobStore
    from ._sqlite_store import SQLiteJobStore

#: Stores imported on first use, so that importing greenroom loads no Redis library.
_LAZY = {
    "PostgresJobStore": ("._postgres_store", "postgres"),
    "RedisJobStore": ("._redis_store", "redis"),
    "SQLiteJobStore": ("._sqlite_store", "sqlite"),
}


def __getattr__(name: str) -> Any:
    return import_optional(__name__, name, _LAZY)


__all__ = [
    "FINISHED",
    "Attempt",
    "CancelResult",
    "Cancelled",
    "JobDetails",
    "JobStatus",
    "JobStore",
    "JobStoreNotConfigured",
    "JobTracking",
    "MemoryJobStore",
    "MinuteCounts",
    "PostgresJobStore",
    "RedisJobStore",
    "SQLiteJobStore",
    "State",
    "cancel",
    "get_details",
    "get_status",
    "minute_counts_for",
    "preview_arguments",
    "set_progress",
    "store_for",
]
