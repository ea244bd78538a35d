"""pika errors translated into greenroom's, shared by the RabbitMQ broker and its consumers."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pika.exceptions

from ...errors import ConnectionClosed

__all__ = ["_is_missing_queue", "_translate_pika_errors"]


@contextmanager
def _translate_pika_errors(doing: str) -> Iterator[None]:
    """Turn every pika and socket error into :class:`ConnectionClosed`, chained to its cause."""
    try:
        yield
    except (pika.exceptions.AMQPError, OSError) as exc:
        raise ConnectionClosed(f"RabbitMQ error while {doing}: {exc!r}") from exc


def _is_missing_queue(error: ConnectionClosed) -> bool:
    """Whether RabbitMQ closed the channel with 404 NOT_FOUND (the queue does not exist)."""
    cause = error.__cause__
    return isinstance(cause, pika.exceptions.ChannelClosedByBroker) and cause.reply_code == 404
