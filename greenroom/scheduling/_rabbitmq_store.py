"""Leases and tick records on RabbitMQ, with nothing but what the broker itself provides.

Per schedule ``<name>``:

* **the lease** is the exclusive queue ``greenroom.schedule.<name>.lease``. RabbitMQ lets one
  connection declare it; any other gets ``RESOURCE_LOCKED``, and the queue goes away when its
  connection closes: at once when the leader's process dies (the kernel closes its socket), or
  after missed heartbeats when the leader hangs or its machine vanishes (the broker URL's
  ``heartbeat`` sets how long that takes);
* **the tick record** is the stream ``greenroom.schedule.<name>`` (see ``_rabbitmq_stream``).

The fencing token is the lease connection itself: a leader writes its records on the connection
that holds the lease, with publisher confirms, and enqueues a tick only once its record is
confirmed. RabbitMQ drops the lease only after that connection is closed, and then nothing more
can be written on it. A new leader first wins the lease, then reads the stream up to a marker it
wrote itself, so it sees every record the previous leader had confirmed, and never enqueues a
tick that one may have enqueued.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pika
import pika.exceptions

from ..brokers.rabbitmq._errors import _translate_pika_errors
from ..errors import ConnectionClosed
from ._rabbitmq_stream import END_OF_READ_PREFIX, STREAM_ARGUMENTS, entry, read_state
from ._store import Claim, Holder, Lease, Recorded, ScheduleStore

__all__ = ["RabbitmqStore", "lease_queue", "stream_queue"]

#: AMQP reply codes: a queue another connection holds exclusively; a queue that does not exist.
RESOURCE_LOCKED = 405
NOT_FOUND = 404


def stream_queue(name: str) -> str:
    """The stream holding the tick record of the schedule ``name``."""
    return f"greenroom.schedule.{name}"


def lease_queue(name: str) -> str:
    """The exclusive queue whose owner leads the schedule ``name``."""
    return f"greenroom.schedule.{name}.lease"


def _refused(exc: pika.exceptions.ChannelClosedByBroker, code: int) -> bool:
    return bool(exc.reply_code == code)


class _QuietExpectedRefusals(logging.Filter):
    """Drop pika's warnings about the channel closes this module asks for.

    Every scheduler that does not lead tries to take the lease a few times a second, and
    RabbitMQ answers each try by closing the channel; every stream read ends with a channel
    closed by the server on purpose (see ``_rabbitmq_stream._end_read``). pika logs each as a
    warning; here they are the expected answers, not problems worth a log line.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if END_OF_READ_PREFIX in message:
            return False
        return not ("RESOURCE_LOCKED" in message and ".lease'" in message and "greenroom.schedule." in message)


_QUIET_FILTER = _QuietExpectedRefusals()


class RabbitmqStore(ScheduleStore):
    """The store of schedulers whose broker is RabbitMQ.

    Parameters:
      connect: The calling thread's open ``pika.BlockingConnection`` (the broker's
        ``connection``), opened anew when the last one was closed. The leases live on it; the
        thread services it (heartbeats) on every lease round.
      disconnect: Closes and forgets that connection (``del broker.connection``).
    """

    def __init__(self, connect: Callable[[], Any], disconnect: Callable[[], None]) -> None:
        self._open = connect
        self._close = disconnect
        self._connection: Any = None
        #: Confirmed channel for stream entries; channels for lease declarations are short-lived
        #: (a refused declaration closes its channel).
        self._confirmed: Any = None
        self._tokens = itertools.count(1)
        #: The schedules whose lease queue this store's connection holds, and who holds them.
        self._held: dict[str, Holder] = {}
        # Added once: a filter already there is not added again.
        logging.getLogger("pika.channel").addFilter(_QUIET_FILTER)

    # -- the connection -------------------------------------------------------------------------

    def _connect(self) -> Any:
        connection = self._open()
        if connection is not self._connection:
            # Another connection: the leases of the last one went with it.
            self._held.clear()
            self._connection = connection
            self._confirmed = None
        if self._confirmed is None or not self._confirmed.is_open:
            with _translate_pika_errors("opening a channel"):
                self._confirmed = connection.channel()
                self._confirmed.confirm_delivery()
        return connection

    def _drop(self) -> None:
        self._held.clear()  # the leases go with the connection
        self._connection = None
        self._confirmed = None
        with contextlib.suppress(pika.exceptions.AMQPError, OSError):
            self._close()

    def _append(self, name: str, body: bytes) -> None:
        """Write an entry to a schedule's stream and wait for RabbitMQ's confirm."""
        self._confirmed.basic_publish(
            "", stream_queue(name), body, pika.BasicProperties(delivery_mode=2), mandatory=True
        )

    # -- the store ------------------------------------------------------------------------------

    def acquire(self, names: Sequence[str], holder: Holder, lease_ms: int, now_ms: int) -> list[Lease]:
        connection = self._connect()
        won = []
        for name in names:
            try:
                if self._take_lease(connection, name):
                    self._held[name] = holder
                    won.append(self._lead(connection, name, holder))
            except (pika.exceptions.AMQPError, OSError) as exc:
                # Leases won so far go with the connection: none is handed out half-read.
                self._drop()
                raise ConnectionClosed(f"RabbitMQ, taking the lease of schedule {name!r}: {exc!r}") from exc
        return won

    def _take_lease(self, connection: Any, name: str) -> bool:
        channel = connection.channel()
        try:
            channel.queue_declare(lease_queue(name), exclusive=True)
        except pika.exceptions.ChannelClosedByBroker as exc:
            if _refused(exc, RESOURCE_LOCKED):
                return False
            raise
        if not _queue_exists(connection, stream_queue(name)):
            # Declared only when missing: a stream made by another version may have other arguments.
            channel.queue_declare(stream_queue(name), durable=True, arguments=STREAM_ARGUMENTS)
        channel.close()
        return True

    def _lead(self, connection: Any, name: str, holder: Holder) -> Lease:
        state = read_state(connection, stream_queue(name), lambda body: self._append(name, body))
        lease = Lease(name, next(self._tokens), state.last_tick_ms, state.last_run_ms)
        # The newest entry carries the state again (a reader needs only the last chunk), and names the leader.
        self._append(name, self._state_entry("lead", lease, holder))
        return lease

    @staticmethod
    def _state_entry(kind: str, lease: Lease, holder: Holder) -> bytes:
        """An entry carrying the schedule's whole state and its leader: the newest entry is all a reader needs."""
        return entry(kind, last_tick=lease.last_tick_ms, last_run=lease.last_run_ms, holder=holder.to_dict())

    def renew(self, leases: Sequence[Lease], holder: Holder, lease_ms: int, now_ms: int) -> list[Lease]:
        connection = self._connection
        if connection is None or not connection.is_open:
            return []
        try:
            # Heartbeats go out, and a connection closed meanwhile is noticed.
            connection.process_data_events(0)
        except (pika.exceptions.AMQPError, OSError):
            self._drop()
            return []
        if not connection.is_open:
            self._drop()
            return []
        return [lease for lease in leases if lease.name in self._held]

    def record(self, lease: Lease, tick_ms: int, *, run: bool) -> Claim:
        holder = self._held.get(lease.name)
        if holder is None or self._connection is None or not self._connection.is_open:
            return Claim.LOST
        if lease.last_tick_ms is not None and tick_ms <= lease.last_tick_ms:
            return Claim.TAKEN  # this leader is the only writer: what it knows is the record
        updated = Lease(lease.name, lease.token, tick_ms, tick_ms if run else lease.last_run_ms)
        try:
            self._append(lease.name, self._state_entry("tick", updated, holder))
        except (pika.exceptions.AMQPError, OSError):
            # Not confirmed: maybe written, maybe not. Either way this process stops leading.
            self._drop()
            return Claim.LOST
        return Claim.RECORDED

    def release(self, leases: Sequence[Lease], holder: Holder) -> None:
        connection = self._connection
        if connection is None or not connection.is_open:
            return
        with _translate_pika_errors("releasing schedule leases"):
            channel = connection.channel()
            for lease in leases:
                self._held.pop(lease.name, None)
                channel.queue_delete(lease_queue(lease.name))
            channel.close()

    def read(self, names: Sequence[str], now_ms: int) -> Mapping[str, Recorded]:
        connection = self._connect()
        found = {}
        with _translate_pika_errors("reading schedules"):
            for name in names:
                found[name] = self._read_one(connection, name)
        return found

    def _read_one(self, connection: Any, name: str) -> Recorded:
        if not _queue_exists(connection, stream_queue(name)):
            return Recorded()
        state = read_state(connection, stream_queue(name), None)
        led = _queue_exists(connection, lease_queue(name))
        leader = Holder.from_dict(state.holder) if led and state.holder else None
        return Recorded(state.last_tick_ms, state.last_run_ms, leader)

    def close(self) -> None:
        self._drop()


def _queue_exists(connection: Any, queue: str) -> bool:
    """Whether ``queue`` exists (a passive declaration); an exclusive queue held by another connection does."""
    channel = connection.channel()
    try:
        channel.queue_declare(queue, passive=True)
    except pika.exceptions.ChannelClosedByBroker as exc:
        if _refused(exc, NOT_FOUND):
            return False
        if _refused(exc, RESOURCE_LOCKED):
            return True
        raise
    channel.close()
    return True
