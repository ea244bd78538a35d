"""A schedule's tick record on RabbitMQ: an append-only stream queue, read without consuming it.

Each entry is a small JSON object. Entries written by a leader carry the schedule's whole state
(``last_tick`` and ``last_run``, epoch ms), so the newest of them is all a reader needs; markers
(``{"kind": "mark"}``) carry none. The stream keeps about a megabyte (retention drops its oldest
segments), which bounds the rare full read.
"""

from __future__ import annotations

import dataclasses
import json
import time
import uuid
from typing import Any

import pika
import pika.exceptions

__all__ = ["END_OF_READ_PREFIX", "STREAM_ARGUMENTS", "StreamState", "entry", "read_state"]

#: Arguments of every schedule stream: retention by size, in small segments (retention drops
#: whole segments, and the default segment of 500 MB would never be dropped).
STREAM_ARGUMENTS: dict[str, Any] = {
    "x-queue-type": "stream",
    "x-max-length-bytes": 1_000_000,
    "x-stream-max-segment-size-bytes": 100_000,
}
#: Deliveries in flight while reading a stream.
PREFETCH = 500
#: How long a read may take before it is abandoned.
READ_TIMEOUT_S = 10.0
#: Without a marker to wait for, a read ends once nothing more arrived for this long.
IDLE_END_S = 0.3
#: A read ends by asking for a queue of this prefix that nobody declares (see ``_end_read``).
END_OF_READ_PREFIX = "greenroom.end-of-read."


@dataclasses.dataclass(frozen=True)
class StreamState:
    """What a read found: the newest state, and the leader the newest entry names."""

    last_tick_ms: int | None = None
    last_run_ms: int | None = None
    holder: dict[str, Any] | None = None
    #: Whether any entry carried a state (a stream never written by a leader has none).
    found: bool = False


def entry(kind: str, **fields: Any) -> bytes:
    """The body of a stream entry."""
    return json.dumps({"kind": kind, **fields}, separators=(",", ":")).encode()


class _Reader:
    """Collects the entries a stream consumer delivers, up to a marker, or (without one) up to the
    first state read from the last chunk, or a quiet spell."""

    def __init__(self, marker: str | None, offset: str) -> None:
        self.marker = marker
        self.offset = offset
        self.seen_marker = False
        self.state = StreamState()
        # Without a marker, the first delivery gets a moment longer than the gaps after it.
        self.last_delivery_s = time.monotonic() + (0.0 if marker is not None else IDLE_END_S)

    def on_message(self, channel: Any, method: Any, properties: Any, body: bytes) -> None:
        self.last_delivery_s = time.monotonic()
        # Stream consumers must acknowledge to receive more (the acks only return credit).
        channel.basic_ack(method.delivery_tag)
        try:
            data = json.loads(body)
        except ValueError:
            return
        if not isinstance(data, dict):
            return
        if data.get("kind") == "mark" and data.get("id") == self.marker:
            self.seen_marker = True
        if "last_tick" in data:
            self._merge(data)

    def _merge(self, data: dict[str, Any]) -> None:
        state = self.state
        # The newest tick wins, whatever the order of the entries (a late write of a dead leader).
        last_tick = _newest(state.last_tick_ms, data.get("last_tick"))
        last_run = _newest(state.last_run_ms, data.get("last_run"))
        holder = data.get("holder", state.holder)
        self.state = StreamState(last_tick, last_run, holder if isinstance(holder, dict) else None, True)

    def done(self) -> bool:
        if self.marker is not None:
            return self.seen_marker
        if self.offset == "last" and self.state.found:
            return True  # the last chunk is as recent as it gets; entries keep coming while a leader runs
        return time.monotonic() - self.last_delivery_s >= IDLE_END_S


def _newest(current: int | None, value: object) -> int | None:
    if not isinstance(value, int) or isinstance(value, bool):
        return current
    return value if current is None else max(current, value)


def read_state(connection: Any, stream: str, publish_marker: Any | None) -> StreamState:
    """Read a schedule's state from its stream.

    Starts at the stream's last chunk, which holds the newest entry; reads it all only when that
    chunk carries no state. With ``publish_marker`` (a callable publishing a body to the stream
    with a confirm), the read ends at a marker written after the consumer attached, so it sees
    every entry confirmed before; without, it ends at the newest state it finds, or when the stream
    goes quiet or the time is up (good enough for display).

    Raises:
      pika.exceptions.AMQPError: When the read failed, or took longer than :data:`READ_TIMEOUT_S`
        with a marker to wait for.
    """
    state = _read_from(connection, stream, "last", publish_marker)
    if not state.found:
        state = _read_from(connection, stream, "first", publish_marker)
    return state


def _read_from(connection: Any, stream: str, offset: str, publish_marker: Any | None) -> StreamState:
    marker = uuid.uuid4().hex if publish_marker is not None else None
    reader = _Reader(marker, offset)
    channel = connection.channel()
    try:
        channel.basic_qos(prefetch_count=PREFETCH)
        channel.basic_consume(stream, reader.on_message, arguments={"x-stream-offset": offset})
        if publish_marker is not None:
            # After attaching: the marker is behind every entry written before this moment.
            publish_marker(entry("mark", id=marker))
        deadline_s = time.monotonic() + READ_TIMEOUT_S
        while not reader.done():
            if time.monotonic() >= deadline_s:
                if marker is None:
                    break
                raise pika.exceptions.AMQPError(f"reading the stream {stream!r} took longer than {READ_TIMEOUT_S} s")
            connection.process_data_events(time_limit=0.05)
    finally:
        _end_read(channel)
    return reader.state


def _end_read(channel: Any) -> None:
    """Close a channel that consumed a stream, without putting its connection at risk.

    Closing it from this side, pika first rejects the deliveries it holds but has not dispatched,
    and RabbitMQ answers a reject on a stream by closing the whole connection (``NOT_IMPLEMENTED``),
    which would take the leader's leases with it. So the server closes the channel instead: asked
    for a queue that does not exist, it closes the channel, and the deliveries go with it.
    """
    if not channel.is_open:
        return
    try:
        channel.queue_declare(f"{END_OF_READ_PREFIX}{uuid.uuid4().hex}", passive=True)
    except pika.exceptions.ChannelClosedByBroker:
        return
    channel.close()  # pragma: no cover - somebody declared the queue: nothing was pending anyway
