"""The operations API on the Redis broker's keys: counts, and the dead letters of ``<cq>.XQ``.

Dead letters are three keys (see the package docstring): the ZSET ``<cq>.XQ`` (redis id → when,
in ms of the server's clock), the HASH ``<cq>.XQ.msgs`` (payloads) and the HASH
``<cq>.XQ.reasons``. Requeueing and purging run as scripts, so each dead letter moves or goes in
one atomic step.
"""

from __future__ import annotations

from collections.abc import Set
from typing import Any

from ..._operations import DeadLetter, QueueCounts, message_id_of, requeue_payload
from ...common import dq_name, q_name
from ...errors import QueueNotFound
from ._storage import RedisStorage

__all__ = ["RedisQueueOps"]

#: Dead letters read, moved or deleted per round trip.
_CHUNK = 500


def _text(value: bytes | None) -> str:
    return "" if value is None else value.decode("utf-8", "replace")


class RedisQueueOps:
    """The operations on one queue's keys, through the storage layer of this process.

    A queue is known when the broker declared it or when one of its keys exists (Redis deletes
    empty keys, so a queue with no message and no dead letter left is unknown unless declared).

    Parameters:
      storage: The broker's storage layer in this process.
      declared: The canonical names of the queues the broker declared.
    """

    def __init__(self, storage: RedisStorage, declared: Set[str]) -> None:
        self.storage = storage
        self.declared = declared

    def _canonical(self, queue_name: str, found: bool) -> str:
        """The canonical name, once the queue is known to exist (``found``: an operation found something).

        Raises:
          QueueNotFound: When the queue is neither declared nor has a key.
        """
        name = q_name(queue_name)
        if found or name in self.declared:
            return name
        keys, delayed = self.storage.keys.queue(name), self.storage.keys.queue(dq_name(name))
        names = (keys.messages, keys.payloads, delayed.messages, delayed.payloads, keys.dead, keys.dead_payloads)
        if not self.storage.execute("EXISTS", *names):
            raise QueueNotFound(queue_name)
        return name

    def counts(self, queue_name: str) -> QueueCounts:
        """Ready: ids on the queue; delayed: every message of the delay queue not yet moved (waiting,
        or held by a worker until its eta); in progress: fetched from the queue and not yet settled."""
        name = q_name(queue_name)
        keys, delayed = self.storage.keys.queue(name), self.storage.keys.queue(dq_name(name))
        reads: list[tuple[Any, ...]] = [
            ("LLEN", keys.messages),
            ("HLEN", keys.payloads),
            ("HLEN", delayed.payloads),
            ("ZCARD", keys.dead),
            # Only to tell whether the queue exists:
            ("LLEN", delayed.messages),
            ("HLEN", keys.dead_payloads),
        ]
        # One transaction: a message fetched between two reads must not count twice.
        replies = self.storage.round_trip([("MULTI",), *reads, ("EXEC",)])[-1]
        self._canonical(queue_name, found=any(replies))
        ready, unsettled, waiting, dead = (int(reply) for reply in replies[:4])
        return QueueCounts(ready, waiting, max(0, unsettled - ready), dead)

    def dead_letters(self, queue_name: str, limit: int) -> list[DeadLetter]:
        """The oldest ``limit`` dead letters (those whose payload is gone are left out)."""
        name = q_name(queue_name)
        keys = self.storage.keys.queue(name)
        scored = self.storage.execute("ZRANGE", keys.dead, 0, limit - 1, "WITHSCORES") if limit else []
        self._canonical(queue_name, found=bool(scored))
        # RESP3 answers [id, score] pairs, RESP2 a flat list.
        pairs = scored if scored and isinstance(scored[0], list) else list(zip(scored[0::2], scored[1::2], strict=True))
        if not pairs:
            return []
        ids, scores = [pair[0] for pair in pairs], [pair[1] for pair in pairs]
        payloads, reasons = self.storage.round_trip(
            [("HMGET", keys.dead_payloads, *ids), ("HMGET", keys.dead_reasons, *ids)]
        )
        return [
            DeadLetter(_text(redis_id), name, message_id_of(payload), payload, _text(reason), int(float(score)))
            for redis_id, score, payload, reason in zip(ids, scores, payloads, reasons, strict=True)
            if payload is not None
        ]

    def requeue(self, queue_name: str, message_ids: frozenset[str] | None) -> int:
        """Move dead letters back to the queue (``None``: all there are when the call starts)."""
        name = q_name(queue_name)
        keys = self.storage.keys.queue(name)
        script_keys = (*keys.for_enqueue(), keys.dead, keys.dead_payloads, keys.dead_reasons)
        ids = self.storage.execute("ZRANGE", keys.dead, 0, -1)  # oldest first: they are requeued in order
        self._canonical(queue_name, found=bool(ids))
        moved = 0
        for start in range(0, len(ids), _CHUNK):
            chunk = ids[start : start + _CHUNK]
            args: list[bytes] = []
            for redis_id, payload in zip(chunk, self.storage.execute("HMGET", keys.dead_payloads, *chunk), strict=True):
                if payload is not None and (message_ids is None or message_id_of(payload) in message_ids):
                    args += (redis_id, requeue_payload(payload, name))
            if args:
                moved += int(self.storage.run_script("requeue_dead", script_keys, args))
        return moved

    def purge(self, queue_name: str, older_than_ms: int) -> int:
        """Delete the dead letters that died ``older_than_ms`` or more ago (by the server's clock)."""
        name = q_name(queue_name)
        keys = self.storage.keys.queue(name)
        (seconds, microseconds), total = self.storage.round_trip([("TIME",), ("ZCARD", keys.dead)])
        self._canonical(queue_name, found=bool(total))
        dead_by_ms = int(seconds) * 1000 + int(microseconds) // 1000 - older_than_ms
        script_keys = (keys.dead, keys.dead_payloads, keys.dead_reasons)
        deleted = 0
        for _ in range(int(total) // _CHUNK + 1):  # every round but the last deletes a full chunk
            count = int(self.storage.run_script("purge_dead", script_keys, (dead_by_ms, _CHUNK)))
            deleted += count
            if count < _CHUNK:
                break
        return deleted
