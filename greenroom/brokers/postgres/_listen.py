"""The Postgres broker's listener: one connection per broker and process ``LISTEN``s for new work for every consumer.

Every insert into the messages table (greenroom's or any other program's) notifies the channel
``greenroom:<schema>`` with the queue's name when its transaction commits, and so does a consumer
handing rows back. The listener's thread waits on its connection's socket and on a wake-up socket
of its own (to stop at once), and nudges the consumers of the queues named. A notification can
still be missed — the listener reconnecting after the server went away, say — so every consumer also
looks at its queue every ``poll_interval_ms`` (1 s) when nothing woke it: the bounded fallback poll.
After each (re)connection every consumer is nudged, for what may have come meanwhile.
"""

from __future__ import annotations

import logging
import select
import socket
import threading
from typing import Any, Protocol

import psycopg
from psycopg import sql

from ..._background import BackgroundThread, join_unless_current
from ..._postgres import Database

__all__ = ["Listener", "Subscriber"]

#: After a failed connection or a lost one, the listener waits this long before trying again (s).
_RECONNECT_S = 1.0
#: The listener's longest sleep on its sockets (s): how soon it notices a stop that found no socket to wake.
_WAIT_S = 5.0


class Subscriber(Protocol):
    """A consumer as the listener sees it."""

    queue_name: str

    def nudge(self) -> None:
        """Look at the queue again: it may have new work. Called from the listener's thread."""


class Listener:
    """Nudges the consumers of one broker in one process when their queue may have new work.

    Its thread starts with the first subscription (a forked child gets a listener of its own from
    the broker) and is stopped by :meth:`stop`; the next subscription starts it again.

    Parameters:
      db: The broker's connections: the listener opens one of its own.
      channel: The channel to listen on.
    """

    def __init__(self, db: Database, channel: str) -> None:
        self._db = db
        self._channel = channel
        self._logger: logging.Logger = db.logger
        #: queue name → its consumers. Changed by consumer threads, read by the listener's thread,
        #: and the runner started and stopped by whoever subscribes or closes: guarded by _lock.
        self._subscribers: dict[str, set[Subscriber]] = {}
        self._lock = threading.Lock()
        self._runner = BackgroundThread(self._run, "greenroom-postgres-listener")
        #: The write end of the running thread's wake-up socket pair (None between runs).
        self._wake: socket.socket | None = None
        #: Set once the thread listens (so that a test, or a benchmark, knows notifications arrive).
        self.listening = threading.Event()

    def subscribe(self, subscriber: Subscriber) -> None:
        """Nudge ``subscriber`` whenever its queue is notified, until :meth:`unsubscribe`."""
        with self._lock:
            self._subscribers.setdefault(subscriber.queue_name, set()).add(subscriber)
            self._runner.ensure_running()

    def unsubscribe(self, subscriber: Subscriber) -> None:
        """Forget ``subscriber``; nothing happens if it is not subscribed."""
        with self._lock:
            queue = self._subscribers.get(subscriber.queue_name)
            if queue is not None:
                queue.discard(subscriber)
                if not queue:
                    del self._subscribers[subscriber.queue_name]

    def stop(self) -> None:
        """Stop the thread and wait for it; the next subscription starts it again."""
        with self._lock:
            thread = self._runner.stop()
            wake = self._wake
            if wake is not None:
                try:
                    wake.send(b"x")
                except OSError:
                    pass  # the thread closed it on its way out
        join_unless_current(thread, _WAIT_S + 5)

    def _nudge(self, queue_name: str | None) -> None:
        """Nudge the subscribers of ``queue_name``, or every subscriber (``None``)."""
        with self._lock:
            if queue_name is None:
                nudged = [s for subscribers in self._subscribers.values() for s in subscribers]
            else:
                nudged = list(self._subscribers.get(queue_name, ()))
        for subscriber in nudged:
            subscriber.nudge()

    def _run(self, stop_event: threading.Event) -> None:
        receive, wake = socket.socketpair()
        with self._lock:
            self._wake = wake
        try:
            while not stop_event.is_set():
                try:
                    self._listen(stop_event, receive)
                except Exception as exc:  # noqa: BLE001 - the thread's top level: report, nudge everybody, retry
                    self.listening.clear()
                    self._logger.warning("Lost the PostgreSQL notification channel (%s); reconnecting.", exc)
                    self._nudge(None)  # their own reads report the trouble to their threads
                    stop_event.wait(_RECONNECT_S)
        finally:
            with self._lock:
                self._wake = None
            receive.close()
            wake.close()
            self.listening.clear()

    def _listen(self, stop_event: threading.Event, receive: socket.socket) -> None:
        """Listen on one connection until it fails (raises) or the thread is stopped (returns)."""
        conn = self._db.connect()
        try:
            conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self._channel)))
            self.listening.set()
            self._nudge(None)  # anything sent before LISTEN took effect was not heard
            pgconn = conn.pgconn
            while not stop_event.is_set():
                readable, _, _ = select.select([pgconn.socket, receive.fileno()], [], [], _WAIT_S)
                if receive.fileno() in readable:
                    receive.recv(64)
                    continue
                if readable:
                    self._dispatch(pgconn)
        finally:
            self.listening.clear()
            conn.close()

    def _dispatch(self, pgconn: Any) -> None:
        """Read what arrived on the connection and nudge the consumers of the queues notified."""
        pgconn.consume_input()  # raises OperationalError when the connection is lost
        if pgconn.status != psycopg.pq.ConnStatus.OK:
            raise psycopg.OperationalError("the notification connection was closed")
        queues: set[str] = set()
        while (notify := pgconn.notifies()) is not None:
            queues.add(notify.extra.decode("utf-8", "replace"))
        for queue_name in queues:
            self._nudge(queue_name)
