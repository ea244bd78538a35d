"""A results backend on memcached (pylibmc)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..._memcached import make_pool, translate_memcached_errors, ttl_seconds
from ..backend import DEFAULT_NAMESPACE, ResultBackend
from ..result import Missing

if TYPE_CHECKING:
    from ...encoder import Encoder

__all__ = ["MemcachedBackend"]


class MemcachedBackend(ResultBackend):
    """Store results in memcached; blocking gets poll.

    TTLs are rounded *up* to whole seconds (memcached's unit).

    Parameters:
      namespace: As for :class:`~greenroom.results.ResultBackend`.
      encoder: As for :class:`~greenroom.results.ResultBackend`.
      use_namespace_prefix_keys: As for :class:`~greenroom.results.ResultBackend` (keys must then
        stay free of spaces and under 250 bytes).
      pool: A ``pylibmc.ClientPool``; ``pool_size`` and ``client_params`` are ignored then.
      pool_size: How many connections the pool holds.
      client_params: Keyword arguments for ``pylibmc.Client`` (``servers`` defaults to
        ``["127.0.0.1:11211"]``).
    """

    def __init__(
        self,
        *,
        namespace: str = DEFAULT_NAMESPACE,
        encoder: Encoder | None = None,
        use_namespace_prefix_keys: bool = False,
        pool: Any = None,
        pool_size: int = 8,
        **client_params: Any,
    ) -> None:
        super().__init__(namespace=namespace, encoder=encoder, use_namespace_prefix_keys=use_namespace_prefix_keys)
        self.pool = make_pool(pool, pool_size, client_params)

    def _get(self, message_key: str) -> Any:
        with translate_memcached_errors(), self.pool.reserve(block=True) as client:
            data = client.get(message_key)
        return Missing if data is None else self._decode(data)

    def _store(self, message_key: str, result: Any, ttl: int) -> None:
        data = self._encode(result)
        with translate_memcached_errors(), self.pool.reserve(block=True) as client:
            client.set(message_key, data, time=ttl_seconds(ttl))
