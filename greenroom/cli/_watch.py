"""``--watch``: reload the workers (``SIGHUP`` to the main process) when source files change."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

__all__ = ["check_watch_prerequisites", "start_watcher"]

#: Events that do not change a file.
_IGNORED_EVENTS = frozenset({"opened", "closed_no_write"})

logger = logging.getLogger("greenroom.MainProcess")


def check_watch_prerequisites() -> str | None:
    """Why ``--watch`` cannot work here, or ``None`` when it can."""
    if os.name != "posix":
        return "--watch is only supported on POSIX systems"
    try:
        import watchdog.observers  # noqa: F401
    except ImportError:
        return "--watch needs the watchdog package: pip install 'greenroom[watch]'"
    return None


def start_watcher(
    directory: str,
    *,
    polling: bool,
    include: tuple[str, ...],
    exclude: tuple[str, ...],
    on_change: Callable[[], None],
) -> Callable[[], None]:
    """Watch ``directory`` recursively and call ``on_change`` for every change to a matching file.

    Returns:
      A function that stops the watcher.
    """
    from watchdog.events import PatternMatchingEventHandler
    from watchdog.observers import Observer
    from watchdog.observers.polling import PollingObserver

    class _Handler(PatternMatchingEventHandler):  # type: ignore[misc]
        def on_any_event(self, event: Any) -> None:
            if event.event_type in _IGNORED_EVENTS:
                return
            logger.info("Detected a change to %s; reloading.", event.src_path)
            on_change()

    handler = _Handler(patterns=list(include), ignore_patterns=list(exclude) or None, ignore_directories=True)
    observer = PollingObserver() if polling else Observer()
    observer.schedule(handler, directory, recursive=True)
    observer.daemon = True
    observer.start()

    def stop() -> None:
        observer.stop()
        observer.join(5.0)

    return stop
