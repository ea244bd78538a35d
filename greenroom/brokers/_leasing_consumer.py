"""What the consumers of the table brokers (SQLite, PostgreSQL) share: rows leased for an owner.

A consumer leases due rows for its ``owner`` (``host:pid:<random>``, so that an operator can tell
who holds a row, and a dead process's rows can be found), decodes them into messages (a row that
is not a valid message is dead-lettered at once), and gives rows back when it cannot hand them out.
How it fetches, and how it counts the rows it holds, is each broker's own.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections import deque
from collections.abc import Iterable
from typing import Any, ClassVar, Protocol

from ..broker import Consumer, MessageProxy, decode_message
from ..common import dead_letter_reason, process_tag
from ..errors import DecodeError
from ..message import Message

__all__ = ["ConsumerRegistry", "LeasedMessage", "LeasingConsumer", "RowStorage"]


class _PayloadLimit(Protocol):
    @property
    def max_payload_bytes(self) -> int: ...


class RowStorage(Protocol):
    """What a leasing consumer asks of its broker's storage layer."""

    logger: logging.Logger

    @property
    def settings(self) -> _PayloadLimit: ...

    def unlease(self, owner: str, row_ids: list[int]) -> None:
        """Make rows ``owner`` still holds visible again at once."""

    def bury(self, row_id: int, owner: str, queue_name: str, message_id: str | None, reason: str) -> bool:
        """Dead-letter a row ``owner`` holds; False when it no longer held it."""


class ConsumerRegistry(Protocol):
    """Where a consumer is known while it holds rows: the process's lease keeper."""

    def discard(self, consumer: Any) -> None:
        """Forget a closed consumer that holds no row any more."""


class LeasedMessage(MessageProxy):
    """A consumed message and the row it was leased from."""

    def __init__(self, message: Message[Any], row_id: int, consumer: LeasingConsumer) -> None:
        super().__init__(message)
        self.row_id = row_id
        #: The consumer that leased the row: it is the one to tell when the row is released,
        #: whichever consumer the worker acks through.
        self.leased_by = consumer
        #: Acked, dead-lettered or handed back (under the leasing consumer's lock).
        self.released = False


class LeasingConsumer(Consumer):
    """Leases the rows of one queue for an owner of its own, at most ``prefetch`` at a time.

    Subclasses fetch (``__next__``), acknowledge, and count what they hold: :meth:`_unhold` and
    :meth:`release`.
    """

    #: How errors name the broker: "an SQLite broker", "a Postgres broker".
    broker_name: ClassVar[str]

    def __init__(
        self, storage: RowStorage, registry: ConsumerRegistry, queue_name: str, prefetch: int, timeout_ms: int
    ) -> None:
        self.storage = storage
        self.registry = registry
        self.logger = storage.logger
        self.queue_name = queue_name
        self.prefetch = max(1, prefetch)
        self.timeout_s = timeout_ms / 1000
        #: Names this consumer's leases in the database; host and pid tell an operator who holds a row.
        self.owner = f"{process_tag()}:{uuid.uuid4().hex[:12]}"
        #: Leased messages not handed out yet; only the consumer thread touches it.
        self._buffer: deque[LeasedMessage] = deque()
        #: Guards what the consumer thread and worker threads share (the count of rows held, and
        #: what subclasses keep beside it).
        self._lock = threading.Lock()
        self._closed = False

    def _unhold(self, row_ids: list[int]) -> None:
        """Stop counting rows this consumer leased but will not hand out (given back or dead-lettered)."""
        raise NotImplementedError

    def release(self, proxy: LeasedMessage) -> None:
        """The row of ``proxy`` was acked, dead-lettered or handed back: a slot is free."""
        raise NotImplementedError

    def _give_back(self, row_ids: list[int]) -> None:
        """Release rows leased but not admitted (an error in the middle of a batch)."""
        self._unhold(row_ids)
        try:
            self.storage.unlease(self.owner, row_ids)
        except Exception:  # noqa: BLE001 - they are no longer renewed: their leases lapse instead
            self.logger.warning("Could not release %d leased rows; their leases will lapse.", len(row_ids))

    def _admit(self, row_id: int, payload: bytes) -> None:
        """Buffer the message of a leased row, or dead-letter the row when it holds no valid message."""
        try:
            max_bytes = self.storage.settings.max_payload_bytes
            message = decode_message(payload, max_bytes=max_bytes, arrived_on=self.queue_name)
        except DecodeError as exc:
            self.logger.error("Dead-lettering row %d of queue %r: %s", row_id, self.queue_name, exc)
            try:
                self.storage.bury(row_id, self.owner, self.queue_name, None, str(exc))
            finally:
                self._unhold([row_id])
            return
        self._buffer.append(LeasedMessage(message, row_id, self))

    def _hand_back_buffered(self) -> None:
        """On close: make the rows leased but never handed out visible again at once."""
        buffered = list(self._buffer)
        self._buffer.clear()
        try:
            if buffered:
                self.requeue(buffered)
        except Exception:  # noqa: BLE001 - not renewed any more, so their leases lapse and they come back
            # (requeue released them all the same: they are no longer counted)
            self.logger.warning("Could not hand back %d messages; their leases will lapse.", len(buffered))

    def _proxy(self, message: MessageProxy) -> LeasedMessage:
        if not isinstance(message, LeasedMessage) or not isinstance(message.leased_by, type(self)):
            raise TypeError(f"{message!r} was not consumed from {self.broker_name}")
        return message

    def nack(self, message: MessageProxy) -> None:
        proxy = self._proxy(message)
        exception = proxy.exception
        reason = dead_letter_reason(exception) if exception is not None else "the message failed"
        if not self.storage.bury(proxy.row_id, proxy.leased_by.owner, proxy.queue_name, proxy.message_id, reason):
            self.logger.warning("Row %d was no longer leased by this worker; not dead-lettered here.", proxy.row_id)
        proxy.leased_by.release(proxy)

    def requeue(self, messages: Iterable[MessageProxy]) -> None:
        proxies = [self._proxy(message) for message in messages]
        try:
            for owner in {proxy.leased_by.owner for proxy in proxies}:
                self.storage.unlease(owner, [proxy.row_id for proxy in proxies if proxy.leased_by.owner == owner])
        finally:
            # Released even when the database refused: no longer renewed, their leases lapse
            # and the rows come back (renewing them forever would strand them).
            for proxy in proxies:
                proxy.leased_by.release(proxy)
