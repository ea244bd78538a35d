"""Frozen worker processes: found and killed by the main process, their stuck messages failed.

A worker process whose warden stopped beating on the liveness board (see ``_liveness``) while one
of its actors is past its time limit and the grace period is frozen: it holds the GIL in C, and
nothing inside it can end that actor. The main process (:class:`FrozenWatch`) kills it with SIGKILL
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
import signal
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..broker import Broker
from ..middleware.middleware import Middleware
from ..middleware.time_limit import TimeLimit, TimeLimitExceeded
from ._launcher import Child
from ._liveness import Board

__all__ = ["FROZEN_AFTER_S", "FrozenWatch", "StuckGuard", "StuckRegistry"]

#: How long (s) a warden may miss its beat before its process counts as frozen (it beats every 0.1 s).
FROZEN_AFTER_S = 1.0
#: Marks older than this (s) are dropped: their messages went to another tree, or were purged.
MARK_TTL_S = 24 * 3600.0


class StuckRegistry:
    """The messages whose run froze a worker process of this tree: files in ``directory``.

    The main process writes them and raises the board's generation; a worker process claims one by
    deleting its file, so exactly one delivery fails for each mark.
    """

    def __init__(self, directory: str, board: Board) -> None:
        self.directory = Path(directory)
        self.board = board

    @staticmethod
    def _name(message_id: str) -> str:
        return hashlib.sha256(message_id.encode("utf-8", "replace")).hexdigest()[:32]

    def mark(self, message_id: str, reason: str) -> None:
        """Make the next run of ``message_id`` fail with ``reason`` (the main process)."""
        path = self.directory / self._name(message_id)
        path.write_text(f"{message_id}\n{reason}", encoding="utf-8")
        self.board.raise_generation()

    def marked(self) -> dict[str, Path]:
        """Message id → its mark's file, for every mark now."""
        marks: dict[str, Path] = {}
        with contextlib.suppress(OSError):  # the tree is ending and removed the directory
            for path in self.directory.iterdir():
                with contextlib.suppress(OSError, UnicodeDecodeError):
                    marks[path.read_text(encoding="utf-8").split("\n", 1)[0]] = path
        return marks

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

    Added last, so that the time limit's deadline is known when a run starts. Each message costs
    a read of the board's generation and two small writes; the registry's files are read again
    only when the generation changed.

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
        self._generation = -1
        self._marks: dict[str, Path] = {}
        self._cells = threading.local()
        self._cells_taken = itertools.count()

    def _cell(self) -> int | None:
        """The calling thread's cell of the slot, taken on its first run; None once all are taken."""
        cell: int | None = getattr(self._cells, "cell", -1)
        if cell == -1:
            taken = next(self._cells_taken)
            cell = taken if taken < self.board.runs_per_slot else None
            self._cells.cell = cell
        return cell

    def before_process_message(self, broker: Broker, message: Any) -> None:
        self._fail_if_marked(message.message_id)
        deadline_s = self.time_limit.current_deadline() if self.time_limit is not None else None
        cell = self._cell()
        if deadline_s is not None and cell is not None:
            self.board.set_run(self.index, cell, deadline_s, message.message_id)

    def after_process_message(
        self, broker: Broker, message: Any, *, result: Any = None, exception: BaseException | None = None
    ) -> None:
        cell = self._cell()
        if cell is not None:
            self.board.clear_run(self.index, cell)

    def after_skip_message(self, broker: Broker, message: Any) -> None:
        self.after_process_message(broker, message)

    def _fail_if_marked(self, message_id: str) -> None:
        generation = self.board.generation
        if generation != self._generation:
            self._marks = self.registry.marked()
            self._generation = generation
        path = self._marks.get(message_id)
        if path is None:
            return
        self._marks = {k: v for k, v in self._marks.items() if k != message_id}
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
        for message_id in overdue:
            self.registry.mark(message_id, reason)
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
