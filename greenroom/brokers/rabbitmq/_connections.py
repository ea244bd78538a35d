"""The connections a RabbitMQ broker opens: one producer connection and channel per thread, all tracked.

pika's ``BlockingConnection`` is not thread-safe, so each producing thread publishes on its own
connection and channel, kept in a ``threading.local``. Consumers open connections here too, so that
:meth:`Connections.close_all` reaches every socket the broker opened, whichever thread owns it.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pika
import pika.exceptions

from ..._process_local import ProcessLocal
from ._errors import _translate_pika_errors

__all__ = ["Connections"]

#: A producer connection idle for longer than this is checked (heartbeats, closure) before publishing.
IDLE_CHECK_S = 1.0


def _close_quietly(closable: Any) -> None:
    """Close a pika connection or channel that is being discarded; errors mean it was broken already."""
    try:
        if closable.is_open:
            closable.close()
    except (pika.exceptions.AMQPError, OSError):
        pass


class _ProcessConnections:
    """The connections of one broker in one process."""

    def __init__(self) -> None:
        #: Guards ``opened``: every producing and consuming thread opens and closes connections.
        self.lock = threading.Lock()
        #: Every connection opened in this process and not yet closed.
        self.opened: set[Any] = set()
        #: This thread's producer ``connection``, ``channel`` and ``last_used_s``.
        self.local = threading.local()


class Connections:
    """Every connection of one broker, and the calling thread's producer connection and channel.

    Fork safety: a child process inherits the parent's open sockets. Closing an inherited
    connection would send a close frame on the parent's socket and break the parent, so the
    connections live in a :class:`~greenroom._process_local.ProcessLocal`: a child starts with
    none (the parent's stay referenced, never closed) and opens its own on first use.

    Parameters:
      parameters: pika connection parameters, tried in order when connecting.
    """

    def __init__(self, parameters: list[Any]) -> None:
        self.parameters = parameters
        self._process: ProcessLocal[_ProcessConnections] = ProcessLocal(_ProcessConnections)

    # -- all connections (any thread) ----------------------------------------------------------

    def open(self) -> Any:
        """A new connection, tracked until :meth:`discard` or :meth:`close_all`.

        Raises:
          ConnectionClosed: When no server could be reached.
        """
        with _translate_pika_errors("connecting"):
            connection = pika.BlockingConnection(self.parameters)
        state = self._process.get()
        with state.lock:
            state.opened.add(connection)
        return connection

    def discard(self, connection: Any) -> None:
        """Stop tracking a connection and close it (errors are ignored: it may be broken)."""
        state = self._process.get()
        with state.lock:
            state.opened.discard(connection)
        _close_quietly(connection)

    def close_all(self) -> None:
        """Close every connection opened in this process, in any thread, and forget them all."""
        state = self._process.get()
        with state.lock:
            connections = list(state.opened)
            state.opened.clear()
            state.local = threading.local()
        for connection in connections:
            _close_quietly(connection)

    # -- the calling thread's producer connection and channel ----------------------------------

    def _thread_state(self) -> threading.local:
        """This thread's state in this process (a forked child starts with none)."""
        local = self._process.get().local
        if not hasattr(local, "connection"):
            local.connection = None
            local.channel = None
            local.last_used_s = 0.0
        return local

    def thread_connection(self) -> Any:
        """This thread's connection, opened when it has none or its connection was closed.

        Raises:
          ConnectionClosed: When no server could be reached.
        """
        local = self._thread_state()
        connection = local.connection
        if connection is None or not connection.is_open:
            self.drop_thread_connection()
            local.connection = connection = self.open()
            local.last_used_s = time.monotonic()
        return connection

    def thread_channel(self, *, confirm_delivery: bool) -> Any:
        """This thread's channel, (re)opened together with its connection as needed.

        Parameters:
          confirm_delivery: Put a newly opened channel in publisher-confirm mode.

        Raises:
          ConnectionClosed: When no server could be reached or the channel could not be opened.
        """
        local = self._thread_state()
        channel = local.channel
        if channel is not None and channel.is_open and local.connection.is_open:
            if time.monotonic() - local.last_used_s > IDLE_CHECK_S and not self._still_alive(local.connection):
                self.drop_thread_connection()
                return self.thread_channel(confirm_delivery=confirm_delivery)
            local.last_used_s = time.monotonic()
            return channel
        connection = self.thread_connection()
        with _translate_pika_errors("opening a channel"):
            channel = connection.channel()
            if confirm_delivery:
                channel.confirm_delivery()
        local.channel = channel
        local.last_used_s = time.monotonic()
        return channel

    @staticmethod
    def _still_alive(connection: Any) -> bool:
        # Services heartbeats and notices a connection closed while idle, rather than writing the
        # next message into a dead socket.
        try:
            connection.process_data_events(0)
        except (pika.exceptions.AMQPError, OSError):
            return False
        return True

    def drop_thread_channel(self) -> None:
        """Close and forget this thread's channel; its connection stays open. Harmless without one."""
        local = self._thread_state()
        channel = local.channel
        local.channel = None
        if channel is not None:
            _close_quietly(channel)

    def drop_thread_connection(self) -> None:
        """Close and forget this thread's connection and channel. Harmless without them."""
        local = self._thread_state()
        connection = local.connection
        local.connection = local.channel = None
        if connection is not None:
            self.discard(connection)
