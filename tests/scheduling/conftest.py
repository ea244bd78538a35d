"""Fixtures of the scheduling tests: where each real broker's schedule store lives."""

from __future__ import annotations

import uuid

import pytest

from tests.cli.conftest import trees as trees  # the CLI tests' fixture: runs stopped and reaped afterwards
from tests.conftest import service_unavailable

#: The server's default virtual host, when the test run has no virtual host of its own.
DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"


@pytest.fixture
def amqp_url(request: pytest.FixtureRequest) -> str:
    """The RabbitMQ URL to use: the run's own virtual host when the suite provides one."""
    try:
        url: str = request.getfixturevalue("rabbitmq_vhost")
    except pytest.FixtureLookupError:
        url = DEFAULT_AMQP_URL
    import pika
    import pika.exceptions

    try:
        pika.BlockingConnection(pika.URLParameters(url)).close()
    except pika.exceptions.AMQPError as exc:
        service_unavailable("RabbitMQ", exc)
    return url


def unique_name() -> str:
    """A schedule name no other test uses (schedule names are shared by everything on a broker)."""
    return f"gr-test-{uuid.uuid4().hex[:10]}"


def delete_streams(url: str, names: list[str]) -> None:
    """Delete the RabbitMQ streams (tick records) of these schedules."""
    import pika

    from greenroom.scheduling._rabbitmq_store import stream_queue

    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        for name in names:
            channel.queue_delete(stream_queue(name))
    finally:
        connection.close()
