"""The PID file of the main process (SPEC §6.3)."""

from __future__ import annotations

import os

from .._lazy import process_exists

__all__ = ["PidFileError", "remove_pidfile", "write_pidfile"]


class PidFileError(Exception):
    """The PID file cannot be used; the message is the one line shown to the user."""


def write_pidfile(path: str, pid: int | None = None) -> None:
    """Write ``pid`` (default: ours) to ``path``, replacing a stale file.

    A file holding our own PID is kept: that is the main process re-executing itself on ``HUP``.

    Raises:
      PidFileError: When the file holds garbage, names a running process, or cannot be written.
    """
    pid = os.getpid() if pid is None else pid
    existing = _read_pid(path)
    if existing == pid:
        return
    if existing is not None:
        if process_exists(existing):
            raise PidFileError(f"greenroom is already running with PID {existing} (PID file {path!r})")
        _remove(path)
    try:
        # O_EXCL: of two commands started at the same moment, only one gets the file.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError as exc:
        raise PidFileError(f"greenroom is already starting with PID file {path!r}") from exc
    except OSError as exc:
        raise PidFileError(f"cannot write the PID file {path!r}: {exc.strerror or exc}") from exc
    try:
        os.write(fd, str(pid).encode("ascii"))
        os.fchmod(fd, 0o644)
    except OSError as exc:
        raise PidFileError(f"cannot write the PID file {path!r}: {exc.strerror or exc}") from exc
    finally:
        os.close(fd)


def remove_pidfile(path: str, pid: int | None = None) -> None:
    """Remove the PID file if it still holds ``pid`` (default: ours); errors are ignored."""
    pid = os.getpid() if pid is None else pid
    try:
        if _read_pid(path) == pid:
            os.remove(path)
    except (OSError, PidFileError):
        pass


def _read_pid(path: str) -> int | None:
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            content = f.read().strip()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise PidFileError(f"cannot read the PID file {path!r}: {exc.strerror or exc}") from exc
    try:
        return int(content)
    except ValueError:
        raise PidFileError(f"the PID file {path!r} contains garbage ({content[:20]!r})") from None


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise PidFileError(f"cannot remove the stale PID file {path!r}: {exc.strerror or exc}") from exc
