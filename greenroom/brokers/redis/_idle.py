"""The Redis broker's idle waiter: one thread per broker and process blocks for every idle consumer.

An idle consumer used to block on its own wake-up list for a tenth of a second, fetch, and start
again: a worker with 120 queues (240 consumers, counting the delay queues) made thousands of round
trips a second while it had nothing to do. Instead, one thread sends a single BLPOP naming the
wake-up lists of all the idle consumers of the process (Redis replies with the list that got a
token) and nudges the consumers of that queue. Every :data:`IDLE_POLL_S` it also asks, in one
script call, which of their queues hold messages: producers that push no token (Dramatiq's, a raw
``RPUSH``) and tokens lost on the way are noticed within that long, whatever the number of queues.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from ..._background import BackgroundThread
from ...errors import BrokerError

__all__ = ["IDLE_POLL_S", "IdleWaiter", "Sleeper"]

#: Seconds within which an idle consumer notices messages that no wake-up token announced.
IDLE_POLL_S = 0.1
#: Seconds the waiter waits after Redis failed it before it blocks again.
_ERROR_BACKOFF_S = 1.0
#: Milliseconds the interrupt list lives: a token left there when its process died goes away.
_INTERRUPT_TTL_MS = 60_000


class Sleeper(Protocol):
    """An idle consumer, as the waiter sees it."""

    @property
    def wake_key(self) -> str:
        """Its queue's wake-up list, where greenroom producers push a token."""
        ...

    @property
    def queue_key(self) -> str:
        """Its queue's list of message ids."""
        ...

    def nudge(self) -> None:
        """Fetch again: the queue may hold messages. Called from the waiter's thread."""
        ...


class IdleWaiter:
    """Blocks on the wake-up lists of the idle consumers of one broker in one process, and nudges them.

    A consumer whose fetch came back empty subscribes. It is nudged once, when a token arrives on
    its wake-up list or when the periodic look finds messages on its queue, and the subscription
    ends there. The BLPOP in flight names the lists of the consumers subscribed when it was sent,
    and always the waiter's own interrupt list: a consumer subscribing with a list it does not name
    pushes a token there, and the waiter sends a new BLPOP that names it. A token popped for a
    queue whose consumers are gone is pushed back, for other processes. The thread starts at the
    first subscription, and it sleeps, sending nothing, while every consumer is busy.

    Parameters:
      round_trip: :meth:`RedisStorage.round_trip`: ``round_trip(commands, retry=, script=, using=)``.
      script_sha: The SHA1 of a packaged script, by name (:meth:`LuaScripts.sha`).
      new_connection: A new connection with the settings of the broker's pool.
      interrupt_key: This waiter's interrupt list (unique to the broker and process).
      logger: Where lost connections are reported.
    """

    def __init__(
        self,
        *,
        round_trip: Callable[..., Any],
        script_sha: Callable[[str], str],
        new_connection: Callable[[], Any],
        interrupt_key: str,
        logger: logging.Logger,
    ) -> None:
        self._round_trip = round_trip
        self._script_sha = script_sha
        self._new_connection = new_connection
        self._interrupt_key = interrupt_key
        self._logger = logger
        #: Guards everything below; taken by consumer threads, the waiter's thread and close().
        self._condition = threading.Condition(threading.Lock())
        self._sleepers: dict[Sleeper, None] = {}  # an ordered set
        #: The wake-up lists the BLPOP in flight names; None when none is in flight.
        self._listening: frozenset[str] | None = None
        #: A token is on its way to the interrupt list: later subscribers need not push another.
        self._interrupting = False
        self._runner = BackgroundThread(self._run, "greenroom-redis-idle")

    @property
    def waiting(self) -> int:
        """How many consumers wait for a nudge."""
        return len(self._sleepers)

    def subscribe(self, sleeper: Sleeper) -> None:
        """Nudge ``sleeper`` once, when its queue may hold messages.

        Raises:
          BrokerConnectionError: When the token that makes the waiter listen to a new list cannot be pushed.
        """
        with self._condition:
            self._sleepers[sleeper] = None
            self._runner.ensure_running()
            self._condition.notify()
            # The BLPOP in flight does not name this list: the waiter must send another (once).
            listening = self._listening
            interrupt = False
            if listening is not None and sleeper.wake_key not in listening and not self._interrupting:
                self._interrupting = interrupt = True
        if interrupt:
            try:
                self._interrupt()
            except BaseException:
                with self._condition:
                    self._interrupting = False  # the waiter's BLPOP times out soon enough meanwhile
                raise

    def unsubscribe(self, sleeper: Sleeper) -> None:
        """Forget ``sleeper`` (a consumer closing); nothing happens if it is not subscribed."""
        with self._condition:
            self._sleepers.pop(sleeper, None)

    def stop(self) -> None:
        """Stop the thread (the next subscription starts it again)."""
        with self._condition:
            thread = self._runner.stop()
            blocked = self._listening is not None
            self._condition.notify_all()
        if thread is None or thread is threading.current_thread():
            return
        if blocked:
            with contextlib.suppress(BrokerError):  # else its BLPOP times out within IDLE_POLL_S
                self._interrupt()
        thread.join(timeout=10)
        if blocked:
            with contextlib.suppress(BrokerError):  # the token is left over if the BLPOP had just timed out
                self._round_trip([("DEL", self._interrupt_key)], retry=False)

    def _interrupt(self) -> None:
        """Make the BLPOP in flight return, on the calling thread's connection."""
        key = self._interrupt_key
        self._round_trip([("RPUSH", key, "1"), ("PEXPIRE", key, _INTERRUPT_TTL_MS)], retry=False)

    def _run(self, stop_event: threading.Event) -> None:
        conn = self._new_connection()
        next_look_s = time.monotonic() + IDLE_POLL_S
        try:
            while self._wait_for_sleepers(stop_event):
                try:
                    if time.monotonic() >= next_look_s:
                        next_look_s = time.monotonic() + IDLE_POLL_S
                        self._look(conn)
                    else:
                        self._block(conn, next_look_s - time.monotonic())
                except Exception as exc:  # the thread's top level: report, nudge everybody, retry
                    if isinstance(exc, BrokerError):
                        self._logger.warning("The idle consumers' waiter failed (%s); retrying.", exc)
                    else:
                        self._logger.exception("Unexpected error in the idle consumers' waiter; retrying.")
                    # Nudged all the same: their own fetches report the trouble to their threads.
                    self._nudge(lambda sleeper: True)
                    stop_event.wait(_ERROR_BACKOFF_S)
        finally:
            conn.disconnect()

    def _wait_for_sleepers(self, stop_event: threading.Event) -> bool:
        """Block while no consumer is idle; False once this thread is to end."""
        with self._condition:
            while not self._sleepers and not stop_event.is_set():
                self._condition.wait()
            return not stop_event.is_set()

    def _block(self, conn: Any, timeout_s: float) -> None:
        """One BLPOP on every subscribed wake-up list, for up to ``timeout_s``."""
        with self._condition:
            wake_keys = list(dict.fromkeys(sleeper.wake_key for sleeper in self._sleepers))
            self._listening = frozenset(wake_keys)
            self._interrupting = False
        socket_timeout_s = getattr(conn, "socket_timeout", None)
        if socket_timeout_s:  # the reply must come before the socket gives up on it
            timeout_s = min(timeout_s, socket_timeout_s / 2)
        command = ("BLPOP", *wake_keys, self._interrupt_key, f"{max(0.001, timeout_s):.3f}")
        try:
            reply = self._round_trip([command], retry=False, using=conn)[0]
        finally:
            with self._condition:
                self._listening = None
        if reply is None:
            return
        key = reply[0].decode() if isinstance(reply[0], bytes) else str(reply[0])
        if key != self._interrupt_key and not self._nudge(lambda sleeper: sleeper.wake_key == key):
            # Its consumers left meanwhile: the token is another process's to take.
            self._round_trip([("RPUSH", key, "1")], retry=False, using=conn)

    def _look(self, conn: Any) -> None:
        """Nudge the subscribers whose queue holds messages, whether a token said so or not."""
        with self._condition:
            queue_keys = list(dict.fromkeys(sleeper.queue_key for sleeper in self._sleepers))
        command = ("EVALSHA", self._script_sha("ready"), len(queue_keys), *queue_keys)
        positions = self._round_trip([command], retry=False, script="ready", using=conn)[0]
        ready = {queue_keys[position - 1] for position in positions}
        if ready:
            self._nudge(lambda sleeper: sleeper.queue_key in ready)

    def _nudge(self, chosen: Callable[[Sleeper], bool]) -> int:
        """Nudge and unsubscribe the ``chosen`` subscribers; how many there were."""
        with self._condition:
            nudged = [sleeper for sleeper in self._sleepers if chosen(sleeper)]
            for sleeper in nudged:
                del self._sleepers[sleeper]
        for sleeper in nudged:
            sleeper.nudge()
        return len(nudged)
