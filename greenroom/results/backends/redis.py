"""A results backend on Redis."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import redis

from ..._redis import make_client, translate_redis_errors
from ..backend import DEFAULT_NAMESPACE, ResultBackend
from ..result import Missing

if TYPE_CHECKING:
    from ...encoder import Encoder

__all__ = ["RedisBackend"]


class RedisBackend(ResultBackend):
    """Store results in Redis, each in a one-element list so that a blocking get can wait on it.

    The layout is Dramatiq's: ``DEL``/``LPUSH``/``PEXPIRE`` to store, ``LINDEX key 0`` to read,
    ``BRPOPLPUSH key key`` (which leaves the list as it was) to wait. Unlike Dramatiq, a blocking
    get honours sub-second timeouts.

    Parameters:
      namespace: As for :class:`~greenroom.results.ResultBackend`.
      encoder: As for :class:`~greenroom.results.ResultBackend`.
      use_namespace_prefix_keys: As for :class:`~greenroom.results.ResultBackend`.
      client: A Redis client to use; ``url`` and ``redis_params`` are ignored then.
      url: A Redis URL (``redis://host:port/db``).
      redis_params: Keyword arguments for ``redis.Redis``.
    """

    def __init__(
        self,
        *,
        namespace: str = DEFAULT_NAMESPACE,
        encoder: Encoder | None = None,
        use_namespace_prefix_keys: bool = False,
        client: redis.Redis | None = None,
        url: str | None = None,
        **redis_params: Any,
    ) -> None:
        super().__init__(namespace=namespace, encoder=encoder, use_namespace_prefix_keys=use_namespace_prefix_keys)
        self.client = make_client(client, url, redis_params)

    def _get(self, message_key: str) -> Any:
        with translate_redis_errors():
            data = self.client.lindex(message_key, 0)
        return Missing if data is None else self._decode(data)

    def _get_blocking(self, message_key: str, timeout_ms: int) -> Any:
        with translate_redis_errors():
            if timeout_ms < 1:
                data = self.client.rpoplpush(message_key, message_key)
            else:
                # Redis ≥ 6 takes fractional seconds; 0 would mean "forever", hence the floor above.
                data = self.client.brpoplpush(message_key, message_key, timeout_ms / 1000)
        return Missing if data is None else self._decode(data)

    def _store(self, message_key: str, result: Any, ttl: int) -> None:
        data = self._encode(result)
        with translate_redis_errors(), self.client.pipeline(transaction=True) as pipe:
            pipe.delete(message_key)
            pipe.lpush(message_key, data)
            pipe.pexpire(message_key, ttl)
            pipe.execute()
