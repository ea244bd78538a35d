"""Unique jobs kept in memory, for the stub broker: the semantics of ``_unique.py`` without a table.

A key is held by one message id at a time. The stub takes a message's key when it is stored, lets
it go when a worker takes the message from its queue (or, with ``unique_until="finished"``, when
the message is acknowledged or dead-lettered there), and forgets it when the queue is flushed.
A message whose earlier incarnation (same id) is still stored or running is a retry, or a delayed
message moving to its queue: it takes the key over from that incarnation, or, when another
message holds it by then, is stored without it rather than refused.
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any, NamedTuple

from ..message import Message
from ._unique import unique_key_of

__all__ = ["MemoryUniqueKeys"]


class _Holder(NamedTuple):
    message_id: str
    payload: bytes


class MemoryUniqueKeys:
    """Which message holds each unique key, and which keyed messages are stored or running."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._holders: dict[str, _Holder] = {}
        #: Message id → incarnations stored or running (a retry overlaps its predecessor briefly).
        self._alive: Counter[str] = Counter()

    def store(self, message: Message[Any], payload: bytes, put: Any) -> Message[Any] | None:
        """Call ``put()`` to store ``message`` unless another message holds its key; None, or that message."""
        unique = unique_key_of(message.options)
        if unique is None:
            put()
            return None
        with self._lock:
            holder = self._holders.get(unique.key)
            if holder is not None and holder.message_id != message.message_id:
                if not self._alive[message.message_id]:
                    return Message.decode(holder.payload)
                # A later incarnation of a message whose key another took meanwhile: kept, keyless.
            else:
                self._holders[unique.key] = _Holder(message.message_id, payload)
            self._alive[message.message_id] += 1
            put()
        return None

    def started(self, message: Message[Any]) -> None:
        """A worker took ``message`` from its (canonical) queue: the key goes, unless kept until finished."""
        unique = unique_key_of(message.options)
        if unique is not None and not unique.until_finished:
            self._let_go(unique.key, message.message_id)

    def settled(self, message: Message[Any], payload: bytes, *, on_canonical_queue: bool) -> None:
        """The incarnation of ``message`` read from ``payload`` was acknowledged, dead-lettered or flushed.

        Its key goes with it when it holds the key until finished on its queue (a retry stored
        meanwhile holds it on: another payload), or when nothing of the message is left.
        """
        unique = unique_key_of(message.options)
        if unique is None:
            return
        with self._lock:
            self._alive[message.message_id] -= 1
            gone = self._alive[message.message_id] <= 0
            if gone:
                del self._alive[message.message_id]
            holder = self._holders.get(unique.key)
            if holder is None or holder.message_id != message.message_id:
                return
            if gone or (on_canonical_queue and unique.until_finished and holder.payload == payload):
                del self._holders[unique.key]

    def _let_go(self, key: str, message_id: str) -> None:
        with self._lock:
            holder = self._holders.get(key)
            if holder is not None and holder.message_id == message_id:
                del self._holders[key]

    def clear(self) -> None:
        """Forget every key (every queue was flushed)."""
        with self._lock:
            self._holders.clear()
            self._alive.clear()
