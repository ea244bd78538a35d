"""Job status kept in the memory of one process: the store of the stub broker, for tests."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from typing import Any

from ..common import current_millis
from ._store import JobStore, WorkerInfo

__all__ = ["MemoryJobStore"]


class MemoryJobStore(JobStore):
    """A job store in a dictionary; expired records are dropped when they are next looked at."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        #: key → (expires at, in ms; record)
        self._records: dict[str, tuple[int, dict[str, Any]]] = {}

    def _live(self, key: str, now_ms: int) -> dict[str, Any] | None:
        entry = self._records.get(key)
        if entry is None:
            return None
        if entry[0] <= now_ms:
            del self._records[key]
            return None
        return entry[1]

    def update(self, message_id: str, fields: Mapping[str, Any], ttl_ms: int) -> None:
        self.begin(message_id, fields, ttl_ms)

    def begin(self, message_id: str, fields: Mapping[str, Any], ttl_ms: int) -> bool:
        key = f"job:{message_id}"
        now_ms = current_millis()
        with self._lock:
            before = self._live(key, now_ms) or {}
            self._records[key] = (now_ms + ttl_ms, {**before, **fields})
        return bool(before.get("cancel_requested"))

    def get(self, message_id: str) -> dict[str, Any] | None:
        with self._lock:
            record = self._live(f"job:{message_id}", current_millis())
            return None if record is None else dict(record)

    def cancel_requested(self, message_ids: Iterable[str]) -> set[str]:
        now_ms = current_millis()
        with self._lock:
            return {
                message_id
                for message_id in message_ids
                if (self._live(f"job:{message_id}", now_ms) or {}).get("cancel_requested")
            }

    def beat(self, worker_id: str, info: WorkerInfo, ttl_ms: int) -> None:
        with self._lock:
            self._records[f"worker:{worker_id}"] = (current_millis() + ttl_ms, dict(info))

    def retire(self, worker_id: str) -> None:
        with self._lock:
            self._records.pop(f"worker:{worker_id}", None)

    def workers(self) -> list[WorkerInfo]:
        now_ms = current_millis()
        with self._lock:
            keys = [key for key in self._records if key.startswith("worker:")]
            return [dict(info) for info in (self._live(key, now_ms) for key in sorted(keys)) if info is not None]
