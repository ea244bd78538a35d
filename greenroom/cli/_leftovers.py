"""What trees left in the temporary directory when their main process could not clean up.

A tree keeps a few things in the system's temporary directory, named after its main process's pid:
the run's liveness board (``greenroom-run-<pid>-…``), the ``max_concurrency`` slots
(``greenroom-slots-<pid>``) and the stuck registry (``greenroom-stuck-<pid>``). The main process
removes them when the tree ends; one killed with SIGKILL cannot. Each new main process therefore
removes those of this user whose tree is gone.

A tree is gone when nothing holds the lock of its run directory: the main process takes an
``flock`` on ``lock`` in it, and its forked worker processes inherit it, so the files of a tree
whose orphaned workers still drain stay, and so do those of a tree in another pid namespace (a
container sharing ``/tmp``), whatever its pid means here. A directory goes only when no run
directory of its pid is locked and no process has that pid.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import tempfile

__all__ = ["RUN_PREFIX", "hold_run_lock", "remove_leftovers"]

#: The start of a run directory's name, before the pid.
RUN_PREFIX = "greenroom-run-"
_NAME = re.compile(r"greenroom-(run|slots|stuck)-(\d+)(?:-.*)?")


def hold_run_lock(run_directory: str) -> int:
    """Lock ``run_directory`` for this tree's lifetime; the descriptor to close when the tree ends.

    Raises:
      OSError: When the lock file cannot be made or locked.
    """
    fd = os.open(os.path.join(run_directory, "lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise
    return fd


def remove_leftovers(directory: str | None = None) -> list[str]:
    """Remove the directories of trees that are gone (see the module); the paths removed."""
    directory = directory or tempfile.gettempdir()
    ours: list[tuple[str, str, int]] = []  # (kind, path, pid) of this user's directories
    with contextlib.suppress(OSError):
        for entry in os.scandir(directory):
            match = _NAME.fullmatch(entry.name)
            if match is not None and _is_ours(entry):
                ours.append((match.group(1), entry.path, int(match.group(2))))
    # A pid that lives keeps its directories too: a tree that is starting has made its run
    # directory but may not hold its lock yet.
    running = {pid for kind, path, pid in ours if kind == "run" and _locked(path)}
    removed: list[str] = []
    for _, path, pid in ours:
        if pid not in running and not _alive(pid):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def _is_ours(entry: os.DirEntry[str]) -> bool:
    """Whether ``entry`` is a directory (not a link to one) of this user."""
    try:
        return entry.is_dir(follow_symlinks=False) and entry.stat(follow_symlinks=False).st_uid == os.getuid()
    except OSError:
        return False


def _locked(run_directory: str) -> bool:
    """Whether a tree (its main process, or a worker process it forked) holds the lock of ``run_directory``."""
    try:
        fd = os.open(os.path.join(run_directory, "lock"), os.O_RDWR)
    except OSError:
        return False  # no lock file (yet): the pid decides
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # releases the lock, if this took it
    return False


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True
