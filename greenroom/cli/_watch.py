"""``--watch``: reload the workers (``SIGHUP`` to the main process) when source files change."""

from __future__ import annotations

import fnmatch
import logging
import os
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["check_watch_prerequisites", "matches", "start_watcher"]

#: Events that do not change a file.
_IGNORED_EVENTS = frozenset({"opened", "closed_no_write"})
#: How often (s) the polling watcher looks at the files.
POLL_INTERVAL_S = 1.0

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


def matches(path: str, directory: str, include: tuple[str, ...], exclude: tuple[str, ...]) -> bool:
    """Whether ``path`` (under ``directory``) matches an include pattern and no exclude pattern.

    Patterns are shell patterns tried against the path relative to ``directory`` and against the
    file name; ``*`` crosses directories, so ``**.py`` and ``*.py`` both mean "every Python file".
    (Matching is done here because watchdog's own pattern semantics changed between versions.)
    """
    relative = os.path.relpath(path, directory)
    candidates = (relative, os.path.basename(path))

    def hit(patterns: tuple[str, ...]) -> bool:
        return any(fnmatch.fnmatchcase(c, p) for p in patterns for c in candidates)

    return hit(include) and not hit(exclude)


def start_watcher(
    directory: str,
    *,
    polling: bool,
    include: tuple[str, ...],
    exclude: tuple[str, ...],
    on_change: Callable[[], None],
) -> Callable[[], None]:
    """Watch ``directory`` recursively and call ``on_change`` for every change to a matching file.

    With ``polling`` the files are compared every second by a small thread of our own (it also
    works under gevent, where watchdog's observers do not); otherwise watchdog's native observer
    (inotify on Linux) reports changes.

    Returns:
      A function that stops the watcher.
    """
    if polling:
        return _start_polling(directory, include, exclude, on_change)
    from watchdog.events import FileSystemEventHandler
    from watchdog.observers import Observer

    class _Handler(FileSystemEventHandler):
        def on_any_event(self, event: Any) -> None:
            if event.event_type in _IGNORED_EVENTS or event.is_directory:
                return
            paths = [os.fsdecode(p) for p in (event.src_path, getattr(event, "dest_path", "")) if p]
            if any(matches(p, directory, include, exclude) for p in paths):
                _changed(paths[0], on_change)

    observer = Observer()
    observer.schedule(_Handler(), directory, recursive=True)
    observer.daemon = True
    observer.start()

    def stop() -> None:
        observer.stop()
        observer.join(5.0)

    return stop


def _changed(path: str, on_change: Callable[[], None]) -> None:
    logger.info("Detected a change to %s; reloading.", path)
    on_change()


def _snapshot(directory: str, include: tuple[str, ...], exclude: tuple[str, ...]) -> dict[str, tuple[int, int]]:
    files: dict[str, tuple[int, int]] = {}
    for root, _, names in os.walk(directory):
        for name in names:
            path = os.path.join(root, name)
            if matches(path, directory, include, exclude):
                try:
                    stat = os.stat(path)
                except OSError:
                    continue  # removed meanwhile
                files[path] = (stat.st_mtime_ns, stat.st_size)
    return files


def _start_polling(
    directory: str, include: tuple[str, ...], exclude: tuple[str, ...], on_change: Callable[[], None]
) -> Callable[[], None]:
    stopping = threading.Event()
    # Taken before returning, so that a change made right after start is seen.
    before = _snapshot(directory, include, exclude)

    def run() -> None:
        nonlocal before
        while not stopping.wait(POLL_INTERVAL_S):
            after = _snapshot(directory, include, exclude)
            changed = sorted(p for p in before.keys() | after.keys() if before.get(p) != after.get(p))
            before = after
            if changed:
                _changed(changed[0], on_change)

    thread = threading.Thread(target=run, name="FileWatcher", daemon=True)
    thread.start()

    def stop() -> None:
        stopping.set()
        thread.join(5.0)

    return stop
