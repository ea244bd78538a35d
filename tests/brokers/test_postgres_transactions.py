"""``with broker.transaction(conn): actor.send(...)``: messages exist if and only if the caller's transaction commits.

Covered with a raw psycopg connection, with Django's connection and with an SQLAlchemy session, the
README's recipes, each against the shared PostgreSQL in a schema of the test's own.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import pytest

import greenroom
from greenroom import Worker
from greenroom.testing import wait_for
from tests._postgres import URL, private_schema

psycopg = pytest.importorskip("psycopg")

from greenroom.brokers.postgres import PostgresBroker, PostgresSettings  # noqa: E402

TIMEOUT_S = 30.0


class _Rollback(Exception):
    """Raised inside a transaction block to roll it back."""


@pytest.fixture
def broker() -> Iterator[PostgresBroker]:
    with private_schema() as schema:
        # A long fallback poll: a message a worker starts at once was announced by the commit.
        broker = PostgresBroker(url=URL, schema=schema, settings=PostgresSettings(poll_interval_ms=60_000))
        broker.emit_after("process_boot")
        greenroom.set_broker(broker)
        with psycopg.connect(URL, autocommit=True) as conn:
            conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
            conn.execute(f'CREATE TABLE "{schema}".orders (id integer PRIMARY KEY)')
        yield broker
        broker.close()


@pytest.fixture
def shipped(broker: PostgresBroker) -> tuple[Any, list[int]]:
    seen: list[int] = []

    @greenroom.actor(broker=broker)
    def ship(order_id: int) -> None:
        seen.append(order_id)

    return ship, seen


def orders(broker: PostgresBroker) -> list[int]:
    with psycopg.connect(URL, autocommit=True) as conn:
        return [row[0] for row in conn.execute(f'SELECT id FROM "{broker.schema}".orders ORDER BY id')]


def test_commit_with_a_psycopg_connection_delivers_and_wakes_the_worker(
    broker: PostgresBroker, shipped: tuple[Any, list[int]]
) -> None:
    ship, seen = shipped
    worker = Worker(broker, worker_timeout=100, worker_threads=2)
    worker.start()
    try:
        assert broker.wait_until_listening()
        with psycopg.connect(URL) as conn:  # not autocommit: statements open a transaction
            conn.execute(f'INSERT INTO "{broker.schema}".orders (id) VALUES (1)')
            with broker.transaction(conn):
                ship.send(1)
            # Written in the open transaction: invisible to everybody else until the commit.
            assert broker.get_queue_counts("default").ready == 0
            conn.commit()
        wait_for(lambda: seen == [1], timeout_s=10)  # far less than the 60 s fallback poll
    finally:
        worker.stop()
    assert orders(broker) == [1]


def test_rollback_with_a_psycopg_connection_leaves_no_message(
    broker: PostgresBroker, shipped: tuple[Any, list[int]]
) -> None:
    ship, _ = shipped

    def place_order() -> None:
        with psycopg.connect(URL, autocommit=True) as conn, conn.transaction():
            conn.execute(f'INSERT INTO "{broker.schema}".orders (id) VALUES (2)')
            with broker.transaction(conn):
                ship.send(2)
                ship.send_with_options(args=(3,), delay=1000)
                broker.enqueue_many([ship.message(4), ship.message(5)])
            raise _Rollback

    with pytest.raises(_Rollback):
        place_order()
    assert broker.get_queue_counts("default") == (0, 0, 0, 0)
    assert orders(broker) == []


def test_the_block_binds_only_its_own_context(broker: PostgresBroker, shipped: tuple[Any, list[int]]) -> None:
    """Another thread sending meanwhile uses the broker's own connections and commits at once."""
    ship, _ = shipped
    with psycopg.connect(URL) as conn, broker.transaction(conn):
        ship.send(1)
        other = threading.Thread(target=ship.send, args=(2,))
        other.start()
        other.join(TIMEOUT_S)
        assert broker.get_queue_counts("default").ready == 1  # the other thread's
        conn.rollback()
    assert broker.get_queue_counts("default").ready == 1
    with pytest.raises(TypeError, match="psycopg 3 connection"), broker.transaction(object()):  # type: ignore[arg-type]
        pass


@pytest.fixture
def django_connection() -> Iterator[Any]:
    pytest.importorskip("django")
    import django
    from django.conf import settings

    if not settings.configured:
        params = psycopg.conninfo.conninfo_to_dict(URL)
        database = {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": params.get("dbname", "test"),
            "USER": params.get("user", "postgres"),
            "HOST": params.get("host", "127.0.0.1"),
            "PORT": str(params.get("port", 5432)),
        }
        settings.configure(DATABASES={"default": database}, INSTALLED_APPS=[], USE_TZ=True)
        django.setup()
    from django.db import connection

    yield connection
    connection.close()


@pytest.mark.parametrize("outcome", ["commit", "rollback"])
def test_django_atomic(
    broker: PostgresBroker, shipped: tuple[Any, list[int]], django_connection: Any, outcome: str
) -> None:
    from django.db import transaction

    ship, _ = shipped

    def place_order() -> None:
        with transaction.atomic():
            with django_connection.cursor() as cursor:
                cursor.execute(f'INSERT INTO "{broker.schema}".orders (id) VALUES (7)')
            # The README's recipe: the psycopg connection under Django's.
            with broker.transaction(django_connection.connection):
                ship.send(7)
            if outcome == "rollback":
                raise _Rollback

    with contextlib.suppress(_Rollback):
        place_order()
    expected = 1 if outcome == "commit" else 0
    assert broker.get_queue_counts("default").ready == expected
    assert orders(broker) == [7] * expected


@pytest.mark.parametrize("outcome", ["commit", "rollback"])
def test_sqlalchemy_session(broker: PostgresBroker, shipped: tuple[Any, list[int]], outcome: str) -> None:
    sqlalchemy = pytest.importorskip("sqlalchemy")
    from sqlalchemy.orm import Session

    ship, _ = shipped
    engine = sqlalchemy.create_engine(URL.replace("postgresql://", "postgresql+psycopg://", 1))

    def place_order() -> None:
        with Session(engine) as session, session.begin():
            session.execute(sqlalchemy.text(f'INSERT INTO "{broker.schema}".orders (id) VALUES (9)'))
            # The README's recipe: the psycopg connection under the session's.
            with broker.transaction(session.connection().connection.driver_connection):
                ship.send(9)
            if outcome == "rollback":
                raise _Rollback

    try:
        with contextlib.suppress(_Rollback):
            place_order()
    finally:
        engine.dispose()
    expected = 1 if outcome == "commit" else 0
    assert broker.get_queue_counts("default").ready == expected
    assert orders(broker) == [9] * expected
