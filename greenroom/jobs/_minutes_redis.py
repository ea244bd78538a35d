"""Per-minute counts on Redis: a ``<prefix>__job_minute__.<minute>`` hash (``processed``, ``failed``) per minute."""

from __future__ import annotations

import redis

from .._redis import translate_redis_errors
from ._minutes import KEEP_MS, Counts, MinuteCounts

__all__ = ["RedisMinuteCounts"]


def _number(raw: bytes | None) -> int:
    try:
        return int(raw) if raw is not None else 0
    except ValueError:
        return 0


class RedisMinuteCounts(MinuteCounts):
    """Counts on Redis, incremented atomically by every worker process.

    Parameters:
      client: The Redis job store's client.
      prefix: Its key prefix (``""`` or ``"<namespace>:"``).
    """

    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self.client = client
        self.prefix = prefix

    def _key(self, minute: int) -> str:
        return f"{self.prefix}__job_minute__.{minute}"

    def add(self, counts: Counts) -> None:
        with translate_redis_errors():
            pipe = self.client.pipeline(transaction=False)
            for minute, (processed, failed) in counts.items():
                key = self._key(minute)
                pipe.hincrby(key, "processed", processed)
                pipe.hincrby(key, "failed", failed)
                pipe.pexpire(key, KEEP_MS)
            pipe.execute()

    def read(self, first_minute: int, last_minute: int) -> dict[int, tuple[int, int]]:
        minutes = range(first_minute, last_minute + 1)
        with translate_redis_errors():
            pipe = self.client.pipeline(transaction=False)
            for minute in minutes:
                pipe.hmget(self._key(minute), "processed", "failed")
            replies = pipe.execute()
        return {
            minute: (_number(processed), _number(failed))
            for minute, (processed, failed) in zip(minutes, replies, strict=True)
            if processed is not None or failed is not None
        }
