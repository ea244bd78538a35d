"""Shared pieces of the PostgreSQL broker, results and rate-limit backends (psycopg 3).

The connection layer (:class:`Database`: pools per process, retries, one error translator) and the
versioned schema (:func:`migrate`) sit here, below the broker and the backends that use them.
"""

from __future__ import annotations

from ..logging import get_logger
from ._database import Database, Operation, translate_errors
from ._expiring import NOW_MS, ExpiringTable
from ._schema import CHANNEL_PREFIX, DEFAULT_SCHEMA, channel, check_schema_name, known_migrations

__all__ = [
    "CHANNEL_PREFIX",
    "DEFAULT_SCHEMA",
    "Database",
    "ExpiringTable",
    "NOW_MS",
    "Operation",
    "channel",
    "check_schema_name",
    "known_migrations",
    "migrate",
    "translate_errors",
]


def migrate(url: str, *, schema: str = DEFAULT_SCHEMA) -> int:
    """Create or upgrade greenroom's tables in ``schema`` of the database at ``url``; returns the version.

    Safe to run while workers and producers use the schema, and from several processes at once:
    the work is one transaction under the schema's advisory lock.

    Raises:
      ConnectionClosed: When the server cannot be reached.
      BrokerError: When the schema was migrated by a newer greenroom, or the server refused.
    """
    database = Database(
        url,
        schema=schema,
        retry_timeout_ms=0,
        pool_max_size=1,
        connect_timeout_s=5.0,
        logger=get_logger(__name__, "migrate"),
    )
    try:
        database.ensure_schema()
    finally:
        database.close()
    return known_migrations()[-1][0]
