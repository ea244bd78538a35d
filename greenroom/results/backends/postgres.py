"""A results backend on PostgreSQL: the ``results`` table of greenroom's schema."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..._postgres import DEFAULT_SCHEMA, ExpiringTable
from ..backend import DEFAULT_NAMESPACE, ResultBackend
from ..result import Missing

if TYPE_CHECKING:
    from ...encoder import Encoder

__all__ = ["PostgresBackend"]


class PostgresBackend(ResultBackend):
    """Store results in the ``results`` table of greenroom's schema in a PostgreSQL database.

    Pass the Postgres broker's URL and schema to keep queues and results in one place (the table is
    created with the broker's, on first use). Expiry uses the server's clock; expired rows are
    invisible at once and deleted by later stores. Blocking gets poll, at most every
    ``poll_max_backoff_ms``.

    Parameters:
      url: A ``postgresql://`` URL or a libpq connection string.
      schema: The schema of greenroom's tables.
      namespace: As for :class:`~greenroom.results.ResultBackend`.
      encoder: As for :class:`~greenroom.results.ResultBackend`.
      use_namespace_prefix_keys: As for :class:`~greenroom.results.ResultBackend`.
      retry_timeout: How long, in milliseconds, an operation retries while the server is away.
    """

    poll_max_backoff_ms = 200
    poll_min_backoff_ms = 10

    def __init__(
        self,
        *,
        url: str = "postgresql://",
        schema: str = DEFAULT_SCHEMA,
        namespace: str = DEFAULT_NAMESPACE,
        encoder: Encoder | None = None,
        use_namespace_prefix_keys: bool = False,
        retry_timeout: int = 5000,
    ) -> None:
        super().__init__(namespace=namespace, encoder=encoder, use_namespace_prefix_keys=use_namespace_prefix_keys)
        self.url = url
        self.schema = schema
        self._table = ExpiringTable(url, schema=schema, table="results", retry_timeout_ms=retry_timeout)

    def _get(self, message_key: str) -> Any:
        data = self._table.get(message_key)
        return Missing if data is None else self._decode(bytes(data))

    def _store(self, message_key: str, result: Any, ttl: int) -> None:
        data = self._encode(result)
        self._table.run(lambda conn: self._table.put(conn, message_key, data, ttl))

    def close(self) -> None:
        """Close this backend's idle connections (they reopen on next use)."""
        self._table.close()
