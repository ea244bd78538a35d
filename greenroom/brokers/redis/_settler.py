"""Acknowledgements sent in the background: a worker thread hands its ack over and takes its next message.

Waiting for the ack's round trip cost each worker thread about as much as the task's own work when
tasks are short: the round trip itself, the wait for the round trip already in flight, and a thread
wake-up after each (see ``benchmarks/profile_drain.py``). The :class:`Settler` of a consumer sends
the acks on a thread of its own instead, as soon as it is free: every ack handed over while a round
trip is in flight goes out in the next one, so an ack waits for no timer, and a worker thread for
none at all.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence

from ...common import Deadline
from ...errors import BrokerConnectionError
from ._storage import SettleOp

__all__ = ["Settler"]

#: Seconds between attempts to settle while Redis is unreachable (after the storage's own retries).
RETRY_INTERVAL_S = 5.0
#: Seconds the settler thread waits for work before it leaves (the next ack starts a new one).
IDLE_EXIT_S = 2.0
#: Failed attempts to settle a batch, once the settler is closed, after which it gives up.
ATTEMPTS_ONCE_CLOSED = 3

#: An op, and what to call (on the settler thread) once it is settled.
_Item = tuple[SettleOp, Callable[[], None]]


class Settler:
    """Settles one consumer's messages on a thread of its own, grouping what arrives meanwhile.

    Parameters:
      settle: Sends ops in one round trip (``RedisStorage.settle`` for the consumer's queue); raises
        ``BrokerConnectionError`` when Redis stayed unreachable through its own retries.
      logger: Where failures are reported.
      name: The name of the thread.

    The thread starts with the first op and leaves after :data:`IDLE_EXIT_S` without one, or once
    closed and done. Once :meth:`close` has run, new ops are settled in the calling thread.
    """

    def __init__(self, settle: Callable[[Sequence[SettleOp]], None], logger: logging.Logger, name: str) -> None:
        self._settle = settle
        self._logger = logger
        self._name = name
        #: Guards everything below (worker threads submit, the settler thread takes, close flushes).
        self._cond = threading.Condition()
        #: Ops handed over and not sent yet.
        self._pending: list[_Item] = []
        #: Ops the thread is sending now (their callbacks not run yet).
        self._sending = 0
        self._thread: threading.Thread | None = None
        #: Whether the thread waits for ops (a submit must then wake it).
        self._idle = False
        self._closed = False

    def submit(self, op: SettleOp, done: Callable[[], None]) -> None:
        """Have ``op`` settled soon; ``done`` is called once it is. If it never is, ``done`` is not
        called: the message's proxy, dropped unsettled, hands it back, and it runs again."""
        with self._cond:
            if not self._closed:
                self._pending.append((op, done))
                # Not alive: a child forked from a process whose settler was running (a thread
                # does not survive the fork), or one that ended on an error.
                if self._thread is None or not self._thread.is_alive():
                    self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                    self._thread.start()
                elif self._idle:
                    self._idle = False
                    self._cond.notify_all()  # close() may wait on the condition too
                return
        self._settle([op])  # closed: in this thread, errors to the caller
        done()

    def _run(self) -> None:
        while True:
            with self._cond:
                batch = self._take()
                if batch is None:
                    return
            if self._send(batch):
                self._run_callbacks(batch)
            with self._cond:
                self._sending = 0
                self._cond.notify_all()  # for close(), waiting until nothing is left

    def _take(self) -> list[_Item] | None:
        """What to send next, waiting for it; None when the thread should leave (under _cond)."""
        while not self._pending:
            if self._closed:
                self._thread = None
                return None
            self._idle = True
            self._cond.wait(IDLE_EXIT_S)
            if self._idle and not self._pending:  # nobody woke it: idle long enough
                self._idle = False
                self._thread = None
                return None
            self._idle = False
        batch, self._pending = self._pending, []
        self._sending = len(batch)
        return batch

    def _send(self, batch: list[_Item]) -> bool:
        """Settle ``batch``, retrying while Redis is away; whether it was settled.

        While the settler is open it retries for as long as it takes (the messages were processed:
        acknowledging them late beats running them again); once closed, :data:`ATTEMPTS_ONCE_CLOSED`
        more times.
        """
        failures_once_closed = 0
        while True:
            try:
                self._settle([op for op, _ in batch])
                return True
            except BrokerConnectionError as exc:
                with self._cond:
                    failures_once_closed += self._closed
                    give_up = failures_once_closed >= ATTEMPTS_ONCE_CLOSED
                    if not give_up:
                        self._cond.wait(RETRY_INTERVAL_S)  # close() wakes it
                if give_up:
                    self._logger.error(
                        "Could not acknowledge %d messages (%s); Redis will deliver them again.", len(batch), exc
                    )
                    return False
                self._logger.warning("Failed to acknowledge %d messages (%s); retrying.", len(batch), exc)
            except Exception:  # top of the settler thread: the messages stay unsettled
                self._logger.error("Unhandled error while acknowledging %d messages.", len(batch), exc_info=True)
                return False

    def backlog(self) -> int:
        """How many ops were handed over and are not settled yet (any thread, without a lock).

        Never more than the true count: an op stops counting just before its callback runs, and a
        batch the thread takes counts as sending only once it is no longer pending.
        """
        return len(self._pending) + self._sending

    def _run_callbacks(self, batch: list[_Item]) -> None:
        for _, done in batch:
            self._sending -= 1  # only this thread changes it while it sends
            try:
                done()
            except Exception:  # top of the settler thread: one callback must not stop the rest
                self._logger.error("Unhandled error after acknowledging a message.", exc_info=True)

    def close(self, timeout_s: float) -> None:
        """Wait up to ``timeout_s`` until everything handed over is settled; from then on, ops are
        settled in the threads that hand them over. What is left is still tried in the background
        (see :meth:`_send`): when the process exits first, Redis delivers those messages again."""
        deadline = Deadline.after_s(timeout_s)
        with self._cond:
            while (self._pending or self._sending) and not deadline.expired():
                self._cond.wait(deadline.left_s(timeout_s))
            self._closed = True
            left = len(self._pending) + self._sending
            self._cond.notify_all()
        if left:
            self._logger.warning("%d acknowledgements are not through yet; still trying.", left)
