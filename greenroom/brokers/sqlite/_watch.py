"""The SQLite broker's change watcher: one thread per broker and process notices new work for every consumer.

An idle consumer used to poll ``PRAGMA data_version`` on its own, every few milliseconds, and to
look at its queue after every commit anywhere; a worker with a hundred queues (two hundred
consumers, counting the delay queues) then spent half a core doing nothing. Instead, one thread
reads ``data_version`` for all of them, and after a commit works out which queues may have new work:

* the queues of the rows inserted since the last commit it saw (ids only grow: one short scan of
  the new end of the table), which covers every producer, greenroom's or foreign;
* the queues, among those whose consumers wait, that have a row anybody may lease, which covers
  rows handed back (requeued) and leases that ran out without a commit (their holder died). This
  sweep runs once a second, and after a commit at most every _SWEEP_GAP_S.

Only the consumers of those queues are nudged, so neither an idle process nor a busy one pays for
its idle queues.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from typing import Protocol

from ..._background import BackgroundThread, join_unless_current
from ..._sqlite import Database
from ...common import current_millis

__all__ = ["ChangeWatcher", "Subscriber"]

#: The watcher reads ``data_version`` every _FAST_POLL_S (s) for _FAST_FOR_S after it saw a change,
#: so that work arriving at a steady pace is noticed within a few milliseconds, then half as often
#: after each read without one, down to every _MAX_POLL_S: the first commit after a quiet spell is
#: noticed within that long. On the 2-core VM of the benchmarks a read and the sleep before it cost
#: 100-300 µs of CPU: an idle process spends about 1% of a core on them, whatever its number of
#: queues, and one running 100 messages a second about as much as when each consumer polled.
_FAST_POLL_S = 0.004
_FAST_FOR_S = 0.05
_MAX_POLL_S = 0.025
#: The sweep for rows anybody may lease runs this often (s), and this soon after a commit (s) at most.
_SWEEP_S = 1.0
_SWEEP_GAP_S = 0.05
#: After a failed read, the watcher waits this long before reading again (s).
_ERROR_BACKOFF_S = 1.0
#: Queue names bound per sweep statement (SQLite's historic limit on variables is 999).
_CHUNK = 500

_LAST_ID = "SELECT COALESCE(MAX(id), 0) FROM greenroom_messages"
# The rowid range of the new rows is all this reads, however long the queues are. (Grouped by
# queue_name, SQLite would rather scan the whole of greenroom_messages_by_due: Python groups them.)
_INSERTED = "SELECT queue_name, id FROM greenroom_messages WHERE id > ?"
# One index seek per queue, stopping at its first row that is due and not leased.
_READY = """
WITH names(name) AS (VALUES {})
SELECT name FROM names WHERE EXISTS (
    SELECT 1 FROM greenroom_messages WHERE queue_name = names.name AND due_ms <= ? AND lease_until_ms <= ?
)
"""


class Subscriber(Protocol):
    """A consumer as the watcher sees it."""

    queue_name: str

    def nudge(self) -> None:
        """Look at the queue again: it may have new work. Called from the watcher's thread."""


@dataclasses.dataclass
class _Cursor:
    """What the watcher's thread knows of the database; monotonic times in seconds."""

    #: ``data_version`` at the last read; None before the first (and after a failed one).
    version: int | None = None
    #: The greatest message id seen: rows with greater ones are new.
    last_id: int = 0
    changed_s: float = float("-inf")
    interval_s: float = _FAST_POLL_S
    swept_s: float = float("-inf")
    #: When a sweep is due because of a commit (infinity when none is).
    sweep_s: float = float("inf")

    def next_wait_s(self, now_s: float) -> float:
        """How long to sleep before the next read: short while commits keep coming, longer and longer after."""
        if now_s - self.changed_s < _FAST_FOR_S:
            self.interval_s = _FAST_POLL_S
        else:
            self.interval_s = min(self.interval_s * 2, _MAX_POLL_S)
        return max(0.0, min(self.interval_s, self.sweep_s - now_s))


class ChangeWatcher:
    """Nudges the idle consumers of one broker in one process when their queue may have new work.

    A consumer that found nothing to lease subscribes, with the ``generation`` it read before it
    looked; it is nudged once, when its queue may have new work, and the subscription ends there.
    ``generation`` counts the commits noticed: a consumer subscribing with an older one is nudged
    at once, for a commit noticed between its look and its subscription may concern its queue.

    The thread starts at the first subscription and reads the database only while somebody waits:
    when every consumer is busy it sleeps. A forked child does not inherit it: the broker makes a
    new watcher there (see ``SQLiteBroker._change_watcher``).

    Parameters:
      db: The broker's database; the watcher only reads it.
      logger: Where failed reads are reported.
    """

    def __init__(self, db: Database, logger: logging.Logger) -> None:
        self._db = db
        self._logger = logger
        #: Guards _generation, _subscribers and _runner; taken by consumer threads, the watcher's
        #: thread and whoever closes the broker.
        self._condition = threading.Condition(threading.Lock())
        self._generation = 0
        self._subscribers: set[Subscriber] = set()
        #: Its stop event also cuts the thread's sleep between two reads short.
        self._runner = BackgroundThread(self._run, "greenroom-sqlite-watcher")

    @property
    def generation(self) -> int:
        """How many commits were noticed so far (an int read needs no lock)."""
        return self._generation

    @property
    def waiting(self) -> int:
        """How many consumers wait for a nudge."""
        return len(self._subscribers)

    def subscribe(self, subscriber: Subscriber, seen_generation: int) -> None:
        """Nudge ``subscriber`` once, when its queue may have work new since ``seen_generation``.

        A subscriber already waiting keeps its subscription; the call only starts the thread again
        if it was stopped (``SQLiteBroker.close``, while consumers still run).
        """
        with self._condition:
            nudge_now = subscriber not in self._subscribers and seen_generation != self._generation
            if not nudge_now:
                self._subscribers.add(subscriber)
                self._runner.ensure_running()
                self._condition.notify()
        if nudge_now:
            subscriber.nudge()

    def unsubscribe(self, subscriber: Subscriber) -> None:
        """Forget ``subscriber`` (a consumer closing); nothing happens if it is not subscribed."""
        with self._condition:
            self._subscribers.discard(subscriber)

    def stop(self) -> None:
        """Stop the thread; the next subscription starts it again."""
        with self._condition:
            thread = self._runner.stop()
            self._condition.notify_all()
        join_unless_current(thread, 10)

    def _run(self, stop_event: threading.Event) -> None:
        cursor = _Cursor()
        while self._wait_for_subscribers(stop_event):
            try:
                self._read(cursor)
            except Exception as exc:  # noqa: BLE001 - the thread's top level: report, nudge everybody, retry
                self._logger.warning("Could not watch the SQLite database for changes (%s); retrying.", exc)
                # Nudged all the same: their own reads report the trouble to their threads.
                cursor.version = None
                self._nudge(None)
                stop_event.wait(_ERROR_BACKOFF_S)
                continue
            stop_event.wait(cursor.next_wait_s(time.monotonic()))

    def _wait_for_subscribers(self, stop_event: threading.Event) -> bool:
        """Block while nobody waits for a change; False once this thread is to end."""
        with self._condition:
            while not self._subscribers and not stop_event.is_set():
                self._condition.wait()
            return not stop_event.is_set()

    def _read(self, cursor: _Cursor) -> None:
        """Read ``data_version``, and nudge the subscribers whose queue may have new work."""
        version = self._db.data_version()
        now_s = time.monotonic()
        if version != cursor.version:
            if cursor.version is None:
                # The first read (or the first since a failure): what changed before is not known.
                cursor.last_id = self._db.read(lambda conn: int(conn.execute(_LAST_ID).fetchone()[0]))
                cursor.swept_s = now_s
                self._nudge(None)
            else:
                with self._condition:
                    self._generation += 1  # before the scan: see subscribe
                self._nudge(self._inserted_since(cursor))
                cursor.sweep_s = min(cursor.sweep_s, cursor.swept_s + _SWEEP_GAP_S)
            cursor.version = version
            cursor.changed_s = now_s
        if now_s >= min(cursor.sweep_s, cursor.swept_s + _SWEEP_S):
            cursor.swept_s = now_s
            cursor.sweep_s = float("inf")
            self._nudge(self._ready_queues())

    def _inserted_since(self, cursor: _Cursor) -> set[str]:
        """The queues of the rows inserted since ``cursor.last_id``, which moves past them."""
        params = (cursor.last_id,)
        rows: list[tuple[str, int]] = self._db.read(lambda conn: conn.execute(_INSERTED, params).fetchall())
        if rows:
            cursor.last_id = max(cursor.last_id, max(row[1] for row in rows))
        return {row[0] for row in rows}

    def _ready_queues(self) -> set[str]:
        """The subscribers' queues that have a row anybody may lease now."""
        with self._condition:
            names = sorted({subscriber.queue_name for subscriber in self._subscribers})
        now_ms = current_millis()
        ready: set[str] = set()
        for start in range(0, len(names), _CHUNK):
            ready.update(self._ready_among(names[start : start + _CHUNK], now_ms))
        return ready

    def _ready_among(self, names: list[str], now_ms: int) -> list[str]:
        query = _READY.format(", ".join("(?)" for _ in names))
        params = (*names, now_ms, now_ms)
        return self._db.read(lambda conn: [row[0] for row in conn.execute(query, params)])

    def _nudge(self, queues: set[str] | None) -> None:
        """Nudge (and unsubscribe) the subscribers of ``queues``, or every subscriber (``None``)."""
        if queues is not None and not queues:
            return
        with self._condition:
            if queues is None:
                self._generation += 1
                nudged, self._subscribers = self._subscribers, set()
            else:
                nudged = {subscriber for subscriber in self._subscribers if subscriber.queue_name in queues}
                self._subscribers -= nudged
        for subscriber in nudged:
            subscriber.nudge()
