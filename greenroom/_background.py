"""A background daemon thread that is stopped and started again as its owner's needs come and go.

The SQLite lease keeper and change watcher and the Redis idle waiter each run one such thread per
broker and process: started by the first consumer that needs it, stopped by ``broker.close()``
while consumers may still run, and started again by the next one that needs it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

__all__ = ["BackgroundThread", "join_unless_current"]


class BackgroundThread:
    """Runs ``target(stop_event)`` in a daemon thread, one run at a time.

    Each run gets an event of its own: a run that was stopped but is still finishing sees its
    event set, and can never take the new run's event for its own. The owner serialises calls
    with a lock of its own (it usually guards the state the thread works on too).

    Parameters:
      target: The thread's body; it returns soon after its event is set.
      name: The thread's name.
    """

    def __init__(self, target: Callable[[threading.Event], object], name: str) -> None:
        self._target = target
        self.name = name
        self._thread: threading.Thread | None = None
        #: The current run's event; set when it is asked to stop.
        self.stop_event = threading.Event()

    @property
    def running(self) -> bool:
        """Whether a run was started, not stopped, and its thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def ensure_running(self) -> None:
        """Start a run unless one is going (a thread that died is replaced)."""
        if self.running:
            return
        self.stop_event = threading.Event()
        self._thread = threading.Thread(target=self._target, args=(self.stop_event,), name=self.name, daemon=True)
        self._thread.start()

    def stop(self) -> threading.Thread | None:
        """Ask the current run to stop and forget it; returns its thread, for the caller to join
        outside its lock (see :func:`join_unless_current`)."""
        thread, self._thread = self._thread, None
        self.stop_event.set()
        return thread


def join_unless_current(thread: threading.Thread | None, timeout_s: float) -> None:
    """Wait up to ``timeout_s`` for a stopped run to end, unless there is none or it is the caller."""
    if thread is not None and thread is not threading.current_thread():
        thread.join(timeout=timeout_s)
