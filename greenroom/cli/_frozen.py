"""Frozen worker processes: found and killed by the main process, their stuck messages failed.

A worker process whose beat on the liveness board stopped (see ``_liveness``) while one of its
actors is past its time limit and the grace period is frozen: it holds the GIL in C, and nothing
inside it can end that actor. The main process (:class:`FrozenWatch`) kills it with SIGKILL
and replaces it at once; the replacement returns the dead process's messages to their queues, as
after any death. The messages that were overdue are marked in the tree's stuck registry (a
directory of files, one per message), so that the next run of each, in any worker process of the
tree, fails at once with :class:`~greenroom.middleware.TimeLimitExceeded` instead of freezing
another process: its retry policy applies, as for an actor the warden took over. A message
delivered to another tree meanwhile runs there as if nothing happened.

While the tree stops, a frozen process is killed once the shutdown timeout and the grace period
have passed; its messages then come back when the broker's heartbeat or lease runs out.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import logging
import os
import re
import shutil
import signal
import stat
import tempfile
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..broker import Broker
from ..middleware.middleware import Middleware
from ..middleware.time_limit import TimeLimit, TimeLimitExceeded
from ._launcher import Child
from ._liveness import Board, board_key

__all__ = ["FROZEN_AFTER_S", "FrozenWatch", "StuckGuard", "StuckRegistry", "remove_stuck", "stuck_directory"]

#: How long (s) a worker process may miss its beat before it counts as frozen (it beats every 0.1 s).
FROZEN_AFTER_S = 1.0
#: Marks older than this (s) are dropped: their messages went to another tree, or were purged.
MARK_TTL_S = 24 * 3600.0


def stuck_directory(tree_id: str) -> str:
    """Where the stuck registry of tree ``tree_id`` keeps its marks."""
    return os.path.join(tempfile.gettempdir(), f"greenroom-stuck-{re.sub(r'[^A-Za-z0-9_.-]', '_', tree_id)}")


def remove_stuck(tree_id: str) -> None:
    """Remove the stuck registry of a tree that ended, if it has one."""
    shutil.rmtree(stuck_directory(tree_id), ignore_errors=True)


class StuckRegistry:
    """The messages whose run froze a worker process of this tree: files in ``directory``.

    Messages are named by their key on the board (see :func:`~greenroom.cli._liveness.board_key`).
    The main process writes the marks and raises the board's generation; a worker process claims
    one by deleting its file, so exactly one delivery fails for each mark. The directory is the
    tree's (it outlives a reload), removed when the tree ends.
    """

    def __init__(self, directory: str, board: Board) -> None:
        self.directory = Path(directory)
        self.board = board

    def mark(self, key: str, reason: str) -> None:
        """Make the next run of the message with board key ``key`` fail with ``reason`` (the main process).

        Raises:
          OSError: When the mark cannot be written.
        """
        self.directory.mkdir(mode=0o700, exist_ok=True)  # a /tmp cleaner may have removed it
        if not self._ours():
            raise OSError(f"{self.directory} is not a directory of this user's")
        name = hashlib.sha256(key.encode("utf-8", "replace")).hexdigest()[:32]
        (self.directory / name).write_text(f"{key}\n{reason}", encoding="utf-8")
        self.board.raise_generation()

    def marked(self) -> dict[str, Path]:
        """Board key → its mark's file, for every mark now."""
        marks: dict[str, Path] = {}
        if not self._ours():
            return marks  # none yet, or planted by someone else at this well-known path
        with contextlib.suppress(OSError):
            for path in self.directory.iterdir():
                with contextlib.suppress(OSError, UnicodeDecodeError):
                    marks[path.read_text(encoding="utf-8").split("\n", 1)[0]] = path
        return marks

    def _ours(self) -> bool:
        """Whether the directory exists, is no link, and belongs to this user, who alone may write it."""
        try:
            info = os.lstat(self.directory)
        except OSError:
            return False
        return stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid() and not info.st_mode & 0o022

    def claim(self, path: Path) -> str | None:
        """Take the mark at ``path``: its reason, or None when another process took it first."""
        try:
            reason = path.read_text(encoding="utf-8").split("\n", 1)[1]
            path.unlink()
        except (OSError, UnicodeDecodeError, IndexError):
            return None
        return reason

    def drop_old(self, now_s: float) -> None:
        """Forget the marks older than :data:`MARK_TTL_S` (wall clock)."""
        with contextlib.suppress(OSError):
            for path in self.directory.iterdir():
                with contextlib.suppress(OSError):
                    if path.stat().st_mtime < now_s - MARK_TTL_S:
                        path.unlink()


class StuckGuard(Middleware):
    """The worker process's side: puts each run's deadline on the board, and fails marked messages.

    Added last, so that the time limit's deadline is known when a run starts (and so that its
    after hooks run first). A worker thread takes a cell of the slot on its first run and keeps it;
    a run is taken off the board by its delivery, whichever thread settles it (a warden taking over
    a stuck actor settles it from its own thread). Each message costs a read of the board's
    generation and two small writes; the registry's files are read again only when the generation
    changed.

    Parameters:
      registry: The tree's stuck registry (and its board).
      index: This process's slot on the board.
      time_limit: The broker's time limit middleware; None: runs have no deadline to put up.
    """

    def __init__(self, registry: StuckRegistry, index: int, time_limit: TimeLimit | None) -> None:
        self.registry = registry
        self.board = registry.board
        self.index = index
        self.time_limit = time_limit
        #: (generation, marks) read together: worker threads swap the pair at once.
        self._marks: tuple[int, dict[str, Path]] = (-1, {})
        self._cells = threading.local()
        self._cells_taken = itertools.count()
        #: Cell → the delivery it shows (the cells' owners write, any thread clears). By delivery,
        #: not by id: two deliveries of one message may run at once (a lapsed lease taken again).
        self._showing: dict[int, Any] = {}
        self._lock = threading.Lock()

    def _cell(self) -> int | None:
        """The calling worker thread's cell, taken on its first run; None once all are taken."""
        cell: int | None = getattr(self._cells, "cell", -1)
        if cell == -1:
            taken = next(self._cells_taken)
            cell = taken if taken < self.board.runs_per_slot else None
            self._cells.cell = cell
        return cell

    def before_process_message(self, broker: Broker, message: Any) -> None:
        key = board_key(message.message_id)
        self._fail_if_marked(key)
        deadline_s = self.time_limit.current_deadline() if self.time_limit is not None else None
        if deadline_s is None:
            return
        cell = self._cell()
        if cell is not None:
            with self._lock:
                self._showing[cell] = message
                self.board.set_run(self.index, cell, deadline_s, key)

    def after_process_message(
        self, broker: Broker, message: Any, *, result: Any = None, exception: BaseException | None = None
    ) -> None:
        with self._lock:
            for cell in [cell for cell, shown in self._showing.items() if shown is message]:
                del self._showing[cell]
                self.board.clear_run(self.index, cell)

    def after_skip_message(self, broker: Broker, message: Any) -> None:
        self.after_process_message(broker, message)

    def _fail_if_marked(self, key: str) -> None:
        seen, marks = self._marks
        generation = self.board.generation
        if generation != seen:
            marks = self.registry.marked()
            self._marks = (generation, marks)
        path = marks.get(key)
        if path is None:
            return
        reason = self.registry.claim(path)
        if reason is not None:
            raise TimeLimitExceeded(reason)


class FrozenWatch:
    """In the main process: finds frozen worker processes on the board and kills them.

    Parameters:
      board: The liveness board the wardens write.
      registry: Where overdue messages are marked.
      grace_s: ``--time-limit-grace``.
      shutdown_timeout_s: ``--worker-shutdown-timeout``.
      logger: The main process's logger.
    """

    def __init__(
        self, board: Board, registry: StuckRegistry, grace_s: float, shutdown_timeout_s: float, logger: logging.Logger
    ) -> None:
        self.board = board
        self.registry = registry
        self.grace_s = grace_s
        self.shutdown_timeout_s = shutdown_timeout_s
        self.logger = logger

    def check(self, workers: Iterable[Child], now_s: float, stopping_since_s: float | None) -> None:
        """Kill every frozen worker process that holds an overdue message (or outlived the stop)."""
        for child in workers:
            process = child.process
            if process is None or child.killed_frozen:
                continue
            beat = self.board.read(child.index)
            if beat is None or beat.pid != process.pid or now_s - beat.beat_s < FROZEN_AFTER_S:
                continue
            overdue = [message_id for deadline_s, message_id in beat.runs if deadline_s + self.grace_s <= now_s]
            late = stopping_since_s is not None and now_s >= stopping_since_s + self.shutdown_timeout_s + self.grace_s
            if overdue or late:
                self._kill(child, process.pid, overdue, now_s - beat.beat_s)

    def _kill(self, child: Child, pid: int, overdue: list[str], silent_s: float) -> None:
        grace_ms = round(self.grace_s * 1000)
        reason = (
            f"the actor ran {grace_ms} ms past its time limit in a worker process that froze "
            f"(no thread of it ran for {silent_s:.1f} s), which was killed"
        )
        try:
            # Marked before the kill: the replacement returns the messages as soon as it boots.
            for key in overdue:
                self.registry.mark(key, reason)
        except OSError as exc:
            self.logger.error("Could not mark the messages %s of a frozen worker process as failed: %s", overdue, exc)
        finally:
            child.killed_frozen = True
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.logger.error(
            "Worker process %d (pid %d) froze: no thread of it ran for %.1f s%s. Killed it; %s",
            child.index,
            pid,
            silent_s,
            f", and messages {overdue} are past their time limit and the grace period" if overdue else "",
            "their next runs count as failed (their retry policy applies)." if overdue else "it stopped too late.",
        )
        self.registry.drop_old(time.time())
