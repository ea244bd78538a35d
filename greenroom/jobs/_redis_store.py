"""Job status kept in Redis: a hash per message, a hash per worker and a sorted set of workers.

Keys (``p``: ``""`` or ``"<namespace>:"``, as the Redis broker's)::

    p__job__.<message id>     HASH  field → JSON value; expires with the record
    p__job_workers__          ZSET  worker id → when its heartbeat expires (ms)
    p__job_worker__.<id>      STRING JSON of the worker's last heartbeat; expires with it
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from typing import Any

import redis

from .._redis import translate_redis_errors
from ._store import JobStore, WorkerInfo

__all__ = ["RedisJobStore"]


def _encode(fields: Mapping[str, Any]) -> dict[str, str]:
    return {name: json.dumps(value) for name, value in fields.items()}


def _decode(raw: Mapping[bytes, bytes]) -> dict[str, Any]:
    record: dict[str, Any] = {}
    for name, value in raw.items():
        try:
            record[name.decode()] = json.loads(value)
        except ValueError:
            continue  # written by something else: skipped rather than failing the whole status
    return record


class RedisJobStore(JobStore):
    """A job store on Redis.

    Parameters:
      client: A ``redis.Redis`` (the Redis broker's ``client`` when status lives beside the queues).
      namespace: Key prefix, as the Redis broker's ``namespace``.
      owns_client: :meth:`close` closes the client too.
    """

    def __init__(self, client: redis.Redis, namespace: str = "", *, owns_client: bool = False) -> None:
        self.client = client
        self._owns_client = owns_client
        self.prefix = f"{namespace}:" if namespace else ""
        self._workers_key = f"{self.prefix}__job_workers__"

    @classmethod
    def from_url(cls, url: str, namespace: str = "") -> RedisJobStore:
        """A store on the Redis at ``url``."""
        return cls(redis.Redis.from_url(url), namespace, owns_client=True)

    def _key(self, message_id: str) -> str:
        return f"{self.prefix}__job__.{message_id}"

    def update(self, message_id: str, fields: Mapping[str, Any], ttl_ms: int) -> None:
        key = self._key(message_id)
        with translate_redis_errors():
            pipe = self.client.pipeline(transaction=False)
            pipe.hset(key, mapping=_encode(fields))  # type: ignore[arg-type]  # str values are accepted
            pipe.pexpire(key, ttl_ms)
            pipe.execute()

    def get(self, message_id: str) -> dict[str, Any] | None:
        with translate_redis_errors():
            raw: dict[bytes, bytes] = self.client.hgetall(self._key(message_id))  # type: ignore[assignment]
        return _decode(raw) if raw else None

    def begin(self, message_id: str, fields: Mapping[str, Any], ttl_ms: int) -> bool:
        key = self._key(message_id)
        with translate_redis_errors():
            pipe = self.client.pipeline(transaction=False)
            pipe.hget(key, "cancel_requested")
            pipe.hset(key, mapping=_encode(fields))  # type: ignore[arg-type]
            pipe.pexpire(key, ttl_ms)
            flag: bytes | None = pipe.execute()[0]
        return flag == b"true"

    def cancel_requested(self, message_ids: Iterable[str]) -> set[str]:
        ids = list(message_ids)
        if not ids:
            return set()
        with translate_redis_errors():
            pipe = self.client.pipeline(transaction=False)
            for message_id in ids:
                pipe.hget(self._key(message_id), "cancel_requested")
            flags = pipe.execute()
        return {message_id for message_id, flag in zip(ids, flags, strict=True) if flag == b"true"}

    def beat(self, worker_id: str, info: WorkerInfo, ttl_ms: int) -> None:
        expires_ms = int(time.time() * 1000) + ttl_ms
        with translate_redis_errors():
            pipe = self.client.pipeline(transaction=False)
            pipe.set(f"{self.prefix}__job_worker__.{worker_id}", json.dumps(info), px=ttl_ms)
            pipe.zadd(self._workers_key, {worker_id: expires_ms})
            pipe.execute()

    def retire(self, worker_id: str) -> None:
        with translate_redis_errors():
            pipe = self.client.pipeline(transaction=False)
            pipe.delete(f"{self.prefix}__job_worker__.{worker_id}")
            pipe.zrem(self._workers_key, worker_id)
            pipe.execute()

    def workers(self) -> list[WorkerInfo]:
        now_ms = int(time.time() * 1000)
        with translate_redis_errors():
            self.client.zremrangebyscore(self._workers_key, "-inf", now_ms)
            ids = [raw.decode() for raw in self.client.zrange(self._workers_key, 0, -1)]  # type: ignore[union-attr]
            if not ids:
                return []
            raw_infos = self.client.mget([f"{self.prefix}__job_worker__.{worker_id}" for worker_id in ids])
        infos: list[WorkerInfo] = []
        for raw in raw_infos:
            if raw is not None:
                try:
                    infos.append(json.loads(raw))
                except ValueError:
                    continue
        return infos

    def close(self) -> None:
        if self._owns_client:  # a broker's client is the broker's to close
            self.client.close()
