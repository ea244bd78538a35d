"""Per-actor concurrency limits: ``max_concurrency=N`` runs at most N messages of an actor at once.

The limit holds across the worker processes of one ``greenroom`` process tree: a slot is an
exclusive ``flock`` on one of N lock files in a directory of the tree's own, so a process that
dies (even by SIGKILL) gives its slots back at once. A :class:`~greenroom.Worker` outside the
command (no tree) limits within its process. A worker thread that takes a message whose actor has
no free slot parks it and takes another message: other actors are never held back. Parked
messages go back to the work queue when a slot of their actor frees in this process, and every
:data:`RECHECK_S` otherwise (a slot freed in another process).
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import tempfile
import threading
from collections import defaultdict
from queue import PriorityQueue
from typing import Any

from ._background import BackgroundThread, join_unless_current

__all__ = ["RECHECK_S", "ConcurrencyLimits", "Slot", "remove_slots", "slots_directory"]

#: How often parked messages are tried again when no slot freed in this process.
RECHECK_S = 0.05

#: A held slot: the open lock file, or a token of an in-process slot.
Slot = Any


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def slots_directory(tree_id: str) -> str:
    """Where the processes of tree ``tree_id`` keep their slots' lock files."""
    return os.path.join(tempfile.gettempdir(), f"greenroom-slots-{_safe(tree_id)}")


def remove_slots(tree_id: str) -> None:
    """Remove the slots' directory of a tree that ended (its processes are gone), if it has one."""
    shutil.rmtree(slots_directory(tree_id), ignore_errors=True)


class ConcurrencyLimits:
    """The concurrency slots of one worker, and the messages parked for want of one.

    Parameters:
      work_queue: Where parked messages go back to.
      tree_id: Processes with the same id share slots; ``None`` limits within this process.
    """

    def __init__(self, work_queue: PriorityQueue[Any], tree_id: str | None = None) -> None:
        self._work_queue = work_queue
        if tree_id is None:
            self._directory: str | None = None
        else:
            self._directory = slots_directory(tree_id)
        self._lock = threading.Lock()
        #: Actor name → work items parked, in arrival order.
        self._parked: defaultdict[str, list[Any]] = defaultdict(list)
        #: Actor name → slots taken in this process (in-process limits only).
        self._taken: defaultdict[str, int] = defaultdict(int)
        self._runner = BackgroundThread(self._recheck, "greenroom-concurrency")

    @property
    def parked(self) -> int:
        """How many messages wait for a slot."""
        with self._lock:
            return sum(len(items) for items in self._parked.values())

    def enter(self, actor_name: str, limit: int) -> Slot | None:
        """Take a slot of the actor, or ``None`` when all ``limit`` are taken."""
        if self._directory is None:
            with self._lock:
                if self._taken[actor_name] >= limit:
                    return None
                self._taken[actor_name] += 1
                return True
        os.makedirs(self._directory, exist_ok=True)
        for index in range(limit):
            path = os.path.join(self._directory, f"{_safe(actor_name)}.{index}.lock")
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                continue
            return fd
        return None

    def leave(self, actor_name: str, slot: Slot) -> None:
        """Give a slot back and send one parked message of the actor back to the work queue."""
        if self._directory is None:
            with self._lock:
                self._taken[actor_name] -= 1
        else:
            os.close(slot)  # closing the file releases the lock
        with self._lock:
            items = self._parked.get(actor_name)
            item = items.pop(0) if items else None
        if item is not None:
            self._work_queue.put(item)

    def park(self, actor_name: str, item: Any) -> None:
        """Keep a work item aside until a slot of its actor may be free."""
        with self._lock:
            self._parked[actor_name].append(item)
            self._runner.ensure_running()

    def take_parked(self) -> list[Any]:
        """Every parked work item, taken out (to hand them back when the worker stops)."""
        with self._lock:
            items = [item for parked in self._parked.values() for item in parked]
            self._parked.clear()
        return items

    def stop(self) -> None:
        """Stop the recheck thread."""
        with self._lock:
            thread = self._runner.stop()
        join_unless_current(thread, 5)

    def _recheck(self, stop_event: threading.Event) -> None:
        while not stop_event.wait(RECHECK_S):
            with self._lock:
                items = [parked.pop(0) for parked in self._parked.values() if parked]
            for item in items:
                self._work_queue.put(item)
