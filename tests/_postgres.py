"""The PostgreSQL the tests use, and a schema of each test's own (dropped afterwards, with nothing else)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from tests.conftest import service_unavailable

#: The shared server of the machine (trust authentication); another can be named for a local run.
URL = os.environ.get("GREENROOM_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


def require_postgres(url: str = URL) -> None:
    """Skip (or fail in CI) when PostgreSQL or psycopg is missing."""
    try:
        import psycopg
    except ImportError as exc:
        service_unavailable("psycopg (pip install 'greenroom[postgres]')", exc)
        return
    try:
        psycopg.connect(url, connect_timeout=3).close()
    except psycopg.OperationalError as exc:
        service_unavailable("PostgreSQL", exc)


@contextmanager
def private_schema(url: str = URL) -> Iterator[str]:
    """The name of a schema no other test uses; the schema (and only it) is dropped at the end."""
    import psycopg

    require_postgres(url)
    schema = f"gr_test_{uuid.uuid4().hex[:12]}"
    try:
        yield schema
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def insert_raw(url: str, schema: str, queue_name: str, payload: bytes) -> None:
    """Insert a row as a foreign producer would: only the queue and the payload."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'INSERT INTO "{schema}".messages (queue_name, payload) VALUES (%s, %s)', (queue_name, payload))


def postgres_backend(kind: str) -> tuple[Any, Callable[[], None]]:
    """A Postgres results (``"results"``) or rate-limit (``"rate_limits"``) backend on a schema of its
    own, and the cleanup that closes it and drops the schema."""
    if kind == "results":
        from greenroom.results.backends import PostgresBackend as ResultsBackend

        make: Any = ResultsBackend
    else:
        from greenroom.rate_limits.backends import PostgresBackend as LimitsBackend

        make = LimitsBackend
    schemas = private_schema()
    schema = schemas.__enter__()
    backend = make(url=URL, schema=schema)

    def cleanup() -> None:
        backend.close()
        schemas.__exit__(None, None, None)

    return backend, cleanup
