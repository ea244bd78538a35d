"""Which caller's connection the Postgres broker sends through: ``with broker.transaction(conn): ...``."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import psycopg

__all__ = ["bound_connection", "sending_through"]

#: (broker, connection) of the innermost ``transaction`` block of the running context (thread or
#: task): a ContextVar, so that other threads and asyncio tasks keep sending on their own.
_bound: ContextVar[tuple[object, psycopg.Connection[Any]] | None] = ContextVar(
    "greenroom_postgres_transaction", default=None
)


@contextmanager
def sending_through(broker: object, connection: psycopg.Connection[Any]) -> Iterator[psycopg.Connection[Any]]:
    """Send ``broker``'s messages through ``connection`` in this context until the block ends.

    Raises:
      TypeError: When ``connection`` is not a psycopg 3 connection (the README shows how to get
        the one under a Django connection or an SQLAlchemy session).
    """
    if not isinstance(connection, psycopg.Connection):
        raise TypeError(
            f"broker.transaction() needs a psycopg 3 connection, not {type(connection).__name__}: use "
            "django.db.connection.connection, or session.connection().connection.driver_connection"
        )
    token = _bound.set((broker, connection))
    try:
        yield connection
    finally:
        _bound.reset(token)


def bound_connection(broker: object) -> psycopg.Connection[Any] | None:
    """The connection ``broker`` sends through in this context, or ``None`` for its own."""
    bound = _bound.get()
    if bound is None or bound[0] is not broker:
        return None
    return bound[1]
