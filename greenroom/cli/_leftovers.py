"""What trees left in the temporary directory when their main process could not clean up.

A tree keeps a few things in the system's temporary directory, named after its main process's pid:
the run's liveness board (``greenroom-run-<pid>-…``), the ``max_concurrency`` slots
(``greenroom-slots-<pid>``) and the stuck registry (``greenroom-stuck-<pid>``). The main process
removes them when the tree ends; one killed with SIGKILL cannot. Each new main process therefore
removes those of this user whose main process is gone.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile

__all__ = ["RUN_PREFIX", "remove_leftovers"]

#: The start of a run directory's name, before the pid.
RUN_PREFIX = "greenroom-run-"
_NAME = re.compile(r"greenroom-(?:run|slots|stuck)-(\d+)(?:-.*)?")


def remove_leftovers(directory: str | None = None) -> list[str]:
    """Remove the directories of trees whose main process is gone; the paths removed.

    Only this user's, and never those of a pid that is alive (whoever runs it now).
    """
    directory = directory or tempfile.gettempdir()
    removed: list[str] = []
    with contextlib.suppress(OSError):
        for entry in os.scandir(directory):
            match = _NAME.fullmatch(entry.name)
            if match is None or not entry.is_dir(follow_symlinks=False):
                continue
            pid = int(match.group(1))
            with contextlib.suppress(OSError):
                if entry.stat(follow_symlinks=False).st_uid != os.getuid() or _alive(pid):
                    continue
                shutil.rmtree(entry.path)
                removed.append(entry.path)
    return removed


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
