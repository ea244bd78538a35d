"""The operations API: what an operator's tools (``greenroomctl``, a dashboard) ask of any broker.

:class:`QueueOperations` declares the four operations, and :class:`~greenroom.broker.Broker`
inherits them. Each greenroom broker implements them over its storage layer; a broker that does
not (one written for Dramatiq, say) raises :class:`NotImplementedError`, which tools report as
"not supported". The functions below are the policy every implementation shares: how a dead
letter's payload is read, and how it is rewritten when it is put back on its queue.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, NamedTuple

from . import _globals
from .common import q_name
from .errors import DecodeError
from .message import Message

__all__ = [
    "RESET_OPTIONS",
    "DeadLetter",
    "QueueCounts",
    "QueueOperations",
    "check_age",
    "check_limit",
    "message_id_of",
    "read_payload",
    "requeue_payload",
    "wanted_ids",
]

#: Options a requeued message loses: its retry count, and the traceback and time of its last retry,
#: so that it gets every retry again.
RESET_OPTIONS = frozenset({"retries", "traceback", "requeue_timestamp"})


class QueueCounts(NamedTuple):
    """How many messages of a queue are in each state.

    ``ready``: waiting on the queue; ``delayed``: waiting for their eta (on the delay queue, or
    held by a worker until then, where the broker can tell); ``in_progress``: taken by a worker
    (prefetched or running), ``None`` where the broker cannot know it (RabbitMQ); ``dead``: dead
    letters.
    """

    ready: int
    delayed: int
    in_progress: int | None
    dead: int


class DeadLetter(NamedTuple):
    """A dead-lettered message.

    ``id`` is what the broker keeps it under: a row id (SQLite), a Redis id, a number in the
    stub broker, the position in ``<queue>.XQ`` counted from its head (RabbitMQ, which has no ids:
    it changes as the queue does). ``message_id`` is ``None`` when the payload cannot be decoded
    (or carries no id); ``payload`` holds the bytes as they were consumed; ``reason`` says why the
    message died (the ``repr`` of its exception, or what is wrong with its payload), ``""`` when
    nobody recorded one; ``dead_at_ms`` is when it died, in epoch milliseconds (0 if unknown).
    """

    id: int | str
    queue_name: str
    message_id: str | None
    payload: bytes
    reason: str
    dead_at_ms: int

    @property
    def actor_name(self) -> str | None:
        """The name of the message's actor, or ``None`` when the payload cannot be decoded."""
        message = read_payload(self.payload)
        return None if message is None else message.actor_name


def read_payload(payload: bytes) -> Message[Any] | None:
    """The message a dead letter's payload holds, or ``None`` when it is not a valid message."""
    try:
        return Message.decode(payload)
    except DecodeError:
        return None


def message_id_of(payload: bytes) -> str | None:
    """The id of the message a payload holds, or ``None`` when it is invalid or carries no id."""
    message = read_payload(payload)
    if message is None:
        return None
    # Message.decode makes an id up for a payload without one: it would change at every reading.
    # The payload was decoded once already, so this cannot fail.
    fields = _globals.get_encoder().decode(payload)
    return message.message_id if "message_id" in fields else None


def requeue_payload(payload: bytes, queue_name: str) -> bytes:
    """The payload to put back on ``queue_name`` (canonical) for a dead letter's ``payload``.

    The message loses :data:`RESET_OPTIONS`, so that it is retried as if it were new; one that died
    on the delay queue is moved to the queue itself and loses its ``eta``. A payload that cannot be
    decoded, or that names another queue, is returned unchanged: it is dead-lettered again when a
    worker reads it, as before.
    """
    message = read_payload(payload)
    if message is None or q_name(message.queue_name) != queue_name:
        return payload
    options = {key: value for key, value in message.options.items() if key not in RESET_OPTIONS}
    if message.queue_name != queue_name:
        options.pop("eta", None)
    fresh: Message[Any] = Message(
        queue_name,
        message.actor_name,
        message.args,
        message.kwargs,
        options,
        message.message_id,
        message.message_timestamp,
    )
    return fresh.encode()


def wanted_ids(message_ids: Iterable[str] | None) -> frozenset[str] | None:
    """The message ids to requeue as a set, or ``None`` for all of them.

    Raises:
      TypeError: When ``message_ids`` is a single string (a common slip for ``[message_id]``).
    """
    if message_ids is None:
        return None
    if isinstance(message_ids, str):
        raise TypeError("message_ids must be an iterable of message ids, not one string")
    return frozenset(message_ids)


def check_limit(limit: int) -> int:
    """``limit`` if it is a valid number of dead letters to list.

    Raises:
      ValueError: When it is negative.
    """
    if limit < 0:
        raise ValueError(f"limit must not be negative, not {limit}")
    return limit


def check_age(older_than_ms: int | None) -> int:
    """The age in milliseconds from which dead letters are purged: 0 for ``None`` (all of them).

    Raises:
      ValueError: When it is negative.
    """
    if older_than_ms is None:
        return 0
    if older_than_ms < 0:
        raise ValueError(f"older_than_ms must not be negative, not {older_than_ms}")
    return older_than_ms


def _unsupported(broker: object, operation: str) -> NotImplementedError:
    return NotImplementedError(f"{type(broker).__name__} does not support {operation}")


class QueueOperations:
    """The operations API every greenroom broker implements (see the module docstring).

    Every operation takes a queue's canonical name (a ``.DQ`` or ``.XQ`` suffix is ignored) and
    raises :class:`~greenroom.errors.QueueNotFound` for a queue that is neither declared on this
    broker nor known to its storage (on RabbitMQ: that does not exist on the server), and
    :class:`~greenroom.errors.BrokerConnectionError` when the broker cannot be reached.
    """

    def get_queue_counts(self, queue_name: str) -> QueueCounts:
        """How many messages of a queue are ready, delayed, in progress and dead (see :class:`QueueCounts`).

        Raises:
          QueueNotFound: When the queue is unknown.
          NotImplementedError: When the broker does not support it.
        """
        raise _unsupported(self, "get_queue_counts")

    def get_dead_letters(self, queue_name: str, *, limit: int = 100) -> list[DeadLetter]:
        """The oldest ``limit`` dead letters of a queue, oldest first, each with its reason.

        Raises:
          QueueNotFound: When the queue is unknown.
          ValueError: When ``limit`` is negative.
          NotImplementedError: When the broker does not support it.
        """
        raise _unsupported(self, "get_dead_letters")

    def requeue_dead_letters(self, queue_name: str, message_ids: Iterable[str] | None = None) -> int:
        """Put dead letters back on their queue; returns how many were put back.

        Parameters:
          queue_name: The queue whose dead letters to requeue.
          message_ids: The ids of the messages to requeue (ids that are not dead letters of the
            queue are ignored); ``None`` requeues them all, undecodable payloads included.

        Each message is stored on its queue before its dead letter is deleted, so a failure in
        between leaves a duplicate at worst, never a loss. Its retry count is reset (see
        :func:`requeue_payload`); a payload that cannot be decoded is put back as it is.

        Raises:
          QueueNotFound: When the queue is unknown.
          NotImplementedError: When the broker does not support it.
        """
        raise _unsupported(self, "requeue_dead_letters")

    def purge_dead_letters(self, queue_name: str, *, older_than_ms: int | None = None) -> int:
        """Delete the dead letters of a queue; returns how many were deleted.

        Parameters:
          queue_name: The queue whose dead letters to delete.
          older_than_ms: Delete only those that died at least this many milliseconds ago;
            ``None`` deletes them all.

        Raises:
          QueueNotFound: When the queue is unknown.
          ValueError: When ``older_than_ms`` is negative.
          NotImplementedError: When the broker does not support it.
        """
        raise _unsupported(self, "purge_dead_letters")
