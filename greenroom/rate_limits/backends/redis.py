"""A rate-limiter backend on Redis."""

from __future__ import annotations

from typing import Any

import redis

from ..._redis import make_client, translate_redis_errors
from ..backend import Compute, UpdatingBackend

__all__ = ["RedisBackend"]


class RedisBackend(UpdatingBackend):
    """Counters in Redis, as decimal strings, updated with optimistic transactions (WATCH/MULTI).

    Keys are Dramatiq's (no prefix) unless ``namespace`` is given, in which case every key is
    ``<namespace>:<key>``. Blocking waits use ``BRPOPLPUSH`` on a list that ``wait_notify`` fills.

    Parameters:
      client: A Redis client to use; ``url`` and ``redis_params`` are ignored then.
      url: A Redis URL.
      namespace: A prefix for every key (none by default, as in Dramatiq).
      redis_params: Keyword arguments for ``redis.Redis``.
    """

    def __init__(
        self, *, client: redis.Redis | None = None, url: str | None = None, namespace: str = "", **redis_params: Any
    ) -> None:
        self.client = make_client(client, url, redis_params)
        self.namespace = namespace

    def _key(self, key: str) -> str:
        return f"{self.namespace}:{key}" if self.namespace else key

    def add(self, key: str, value: int, ttl: int) -> bool:
        with translate_redis_errors():
            return bool(self.client.set(self._key(key), value, px=ttl, nx=True))

    def _update(self, key: str, ttl: int, compute: Compute, others: list[str]) -> bool:
        """Set ``key`` to ``compute(current, others_sum)`` unless it is None, atomically.

        ``key`` and ``others`` are read under WATCH and ``key`` is written in MULTI; a concurrent
        write to any of them aborts the transaction, and the whole read-compute-write is retried.
        """
        key = self._key(key)
        watched = [key, *(self._key(k) for k in others)]
        with translate_redis_errors(), self.client.pipeline(transaction=True) as pipe:
            while True:
                try:
                    pipe.watch(*watched)  # type: ignore[no-untyped-call]
                    current, *rest = (int(v or 0) for v in pipe.mget(watched))
                    new_value = compute(current, sum(rest))
                    if new_value is None:
                        pipe.unwatch()
                        return False
                    pipe.multi()
                    pipe.set(key, new_value, px=ttl)
                    pipe.execute()
                    return True
                except redis.WatchError:
                    continue

    def wait(self, key: str, timeout: int | None) -> bool:
        key = self._key(key)
        with translate_redis_errors():
            if timeout is not None and timeout < 1:
                value = self.client.rpoplpush(key, key)
            else:
                # 0 means "forever" to Redis; fractional seconds need Redis ≥ 6.
                value = self.client.brpoplpush(key, key, 0 if timeout is None else timeout / 1000)
        return value in (b"x", "x")  # "x" when the client decodes responses

    def wait_notify(self, key: str, ttl: int) -> None:
        key = self._key(key)
        with translate_redis_errors(), self.client.pipeline(transaction=True) as pipe:
            pipe.rpush(key, b"x")
            pipe.pexpire(key, ttl)
            pipe.execute()
