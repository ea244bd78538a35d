"""The exit codes of the ``greenroom`` command (Dramatiq's values, so scripts keep working)."""

from __future__ import annotations

import enum

__all__ = ["RETIRED", "ExitCode", "StartupError"]


class ExitCode(enum.IntEnum):
    """Exit status of the main process, and of a worker process that fails to boot."""

    #: Normal shutdown.
    OK = 0
    #: Worker processes were killed, or one crashed.
    KILLED = 1
    #: The broker or a module could not be imported, bad command-line arguments, or ``--watch``
    #: prerequisites missing (argparse itself also exits with 2 on a bad flag).
    IMPORT = 2
    #: The broker could not be reached while a worker process booted.
    CONNECTION = 3
    #: The PID file is held by a running process, holds garbage, or cannot be written.
    PIDFILE = 4


#: The status of a worker process that retired on purpose (``--max-tasks-per-child``,
#: ``--max-memory-per-child``, an actor that ignored its time limit): it finished its running
#: messages and handed back the others, and the main process replaces it at once, without counting
#: a death. The main process never exits with it. (75 is ``EX_TEMPFAIL`` of ``sysexits.h``.)
RETIRED = 75


class StartupError(Exception):
    """The main process or a worker process cannot start.

    ``code`` is the exit code; the message is the one line shown to the user (or logged).
    """

    def __init__(self, code: ExitCode, message: str) -> None:
        super().__init__(message)
        self.code = code
