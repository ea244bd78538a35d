"""The consumer contract every broker implements, the message proxy consumers yield, and the payload gate.

A consumer iterates over one queue and settles what it handed out; :func:`decode_message` is the
one place where a payload becomes a message, and so the one bad-payload policy of every broker.
The public names live on in :mod:`greenroom.broker`, where Dramatiq has them.
"""

from __future__ import annotations

import abc
import warnings
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Protocol

from .errors import DecodeError
from .message import Message

__all__ = ["MAX_PAYLOAD_BYTES", "Consumer", "Demand", "MessageProxy", "decode_message"]

#: Payloads larger than this many bytes are dead-lettered instead of decoded.
MAX_PAYLOAD_BYTES = 8 * 1024 * 1024


def decode_message(data: bytes, *, max_bytes: int = MAX_PAYLOAD_BYTES, arrived_on: str | None = None) -> Message[Any]:
    """Decode a payload a consumer received: the one gate every broker's payloads pass.

    The bad-payload policy of every broker: a payload this raises for is dead-lettered by the
    consumer, with the message of the error as the reason, and never handed to a worker.

    Parameters:
      data: The payload.
      max_bytes: Larger payloads are refused unread.
      arrived_on: The queue the payload was taken from. A message that names another queue is
        refused: its actor may belong to another worker, and its acknowledgement would be routed
        to a queue it is not on.

    Raises:
      DecodeError: When the payload is too large, is not a valid message, or names another queue
        than ``arrived_on``.
    """
    if len(data) > max_bytes:
        raise DecodeError(f"payload of {len(data)} bytes is larger than the limit of {max_bytes} bytes", data, None)
    message = Message.decode(data)
    if arrived_on is not None and message.queue_name != arrived_on:
        reason = f"message names queue {message.queue_name!r} but was found on {arrived_on!r}"
        raise DecodeError(reason, data, None)
    return message


class Demand(Protocol):
    """How many messages the worker process that iterates a consumer can use (see :attr:`Consumer.demand`)."""

    def room(self) -> int:
        """How many more messages it would start soon: idle threads plus a small buffer, minus
        what already waits in memory. Changes with every message taken or finished."""
        ...

    def limit(self) -> int:
        """How many messages it wants in hand at most (running and waiting): changes rarely."""
        ...


class Consumer(abc.ABC):
    """Iterates over the messages of one queue.

    ``__next__`` blocks up to the consumer's timeout and returns a :class:`MessageProxy`, or
    ``None`` as an *idle tick* when nothing arrived, so the caller can do housekeeping. A consumer
    is driven by one thread, but ``ack`` and ``nack`` are called from worker threads and must be
    safe to call concurrently with iteration.
    """

    #: Set by the worker on the consumers of runnable (not delay) queues: brokers that fetch on
    #: demand take no more than ``demand.room()`` at a time (besides their ``prefetch`` bound), so
    #: a process whose threads are busy leaves messages to processes with idle threads. Brokers
    #: that push (RabbitMQ) may ignore it. ``None``: only ``prefetch`` bounds the consumer.
    demand: Demand | None = None

    def __iter__(self) -> Consumer:
        return self

    @abc.abstractmethod
    def __next__(self) -> MessageProxy | None:
        """The next message, or ``None`` after an idle timeout."""

    @abc.abstractmethod
    def ack(self, message: MessageProxy) -> None:
        """Acknowledge a processed message: the broker forgets it."""

    @abc.abstractmethod
    def nack(self, message: MessageProxy) -> None:
        """Move a failed message to the dead letters."""

    def requeue(self, messages: Iterable[MessageProxy]) -> None:
        """Hand unprocessed messages back to the broker (the default does nothing)."""

    def keep_alive(self, timeout_s: float) -> None:
        """Keep the consumer's connection alive for up to ``timeout_s`` seconds while it is not iterated.

        A paused worker calls this in a loop instead of ``__next__``, from the thread that iterates
        the consumer, so that a broker that needs that thread to service its connection
        (heartbeats, acknowledgements queued by worker threads) can do so without handing out
        messages. The default does nothing and returns at once; the caller waits out the rest.

        Raises:
          BrokerConnectionError: When the connection is lost; the caller reconnects later.
        """

    def close(self) -> None:
        """Release the consumer's resources."""


class MessageProxy:
    """A consumed message, with the processing state the worker and middleware attach to it.

    The message's fields are copied onto the proxy (it is read on every hook); any other
    attribute is looked up on the wrapped message.
    """

    if TYPE_CHECKING:
        copy: Callable[..., Message[Any]]
        asdict: Callable[[], dict[str, Any]]
        encode: Callable[[], bytes]
        message_datetime: Any

    def __init__(self, message: Message[Any]) -> None:
        self.failed = False
        self._message = message
        self._exception: BaseException | None = None
        #: The broker consumer that delivered the message, set by the worker: the message is
        #: settled through it even after its consumer thread moved on to a new one.
        self.delivered_by: Consumer | None = None
        self.queue_name = message.queue_name
        self.actor_name = message.actor_name
        self.args = message.args
        self.kwargs = message.kwargs
        self.options = message.options
        self.message_id = message.message_id
        self.message_timestamp = message.message_timestamp

    @property
    def message(self) -> Message[Any]:
        """The wrapped message, as the consumer decoded it."""
        return self._message

    @property
    def exception(self) -> BaseException | None:
        """The exception the message failed with, if one was remembered (see :meth:`stuff_exception`)."""
        return self._exception

    def fail(self) -> None:
        """Mark the message failed: it will be dead-lettered instead of acknowledged."""
        self.failed = True

    def stuff_exception(self, exception: BaseException) -> None:
        """Remember the exception the message failed with."""
        self._exception = exception

    def clear_exception(self) -> None:
        """Forget the remembered exception (its traceback holds frames alive)."""
        self._exception = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._message, name)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, MessageProxy):
            return self._message == other._message
        return self._message == other

    __hash__ = None  # type: ignore[assignment]

    def __lt__(self, other: object) -> bool:
        warnings.warn("Comparing message proxies is deprecated.", DeprecationWarning, stacklevel=2)
        return True

    def __str__(self) -> str:
        return str(self._message)

    def __repr__(self) -> str:
        return f"<{type(self).__qualname__} {self._message!r}>"
