"""The ``HUP`` reload's re-execution of the main process, and the signals it hands over.

A reload replaces the main process with a fresh run of the same command (``os.execv``: new code,
same PID). The new interpreter starts with the default dispositions, under which ``HUP`` and
``TERM`` end the process, and installs its handlers only 100-200 ms later, once it has started
up and imported greenroom. A signal in that window used to end the service (status -1 for a
second ``HUP``, -15 instead of a graceful 0 for ``TERM``) and leave the PID file and the metrics
directory behind.

So the old image blocks the handled signals before the handlers it installed are taken down, and
keeps them blocked through ``execv``: the signal mask survives ``exec``, and so does a signal that
is pending on it. An environment variable tells the new image which signals were blocked that
way; its supervisor unblocks exactly those once its own handlers are installed, and a signal that
arrived meanwhile is then delivered to them. A first start finds no variable and changes no mask.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterable
from typing import NoReturn

from ._child import HANDLED_SIGNALS

__all__ = ["hold_signals", "reexec", "release_signals", "take_held_signals"]

#: Set for the new image only: the numbers of the signals the re-exec left blocked, comma-separated.
HELD_SIGNALS_ENV = "_GREENROOM_REEXEC_HELD_SIGNALS"


def hold_signals() -> frozenset[signal.Signals]:
    """Block the handled signals in this thread; returns those that were not blocked already."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED_SIGNALS)
    return frozenset(HANDLED_SIGNALS - previous)


def release_signals(held: Iterable[signal.Signals]) -> None:
    """Unblock ``held`` in this thread; one that is pending is delivered now."""
    signals = set(held)
    if signals:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, signals)


def reexec(held: frozenset[signal.Signals]) -> NoReturn:
    """Replace this process with a fresh run of the same command, ``held`` staying blocked."""
    os.environ[HELD_SIGNALS_ENV] = ",".join(str(int(signum)) for signum in sorted(held))
    # sys.orig_argv is the interpreter's own command line, so ``python -m greenroom``, the console
    # scripts and interpreter options all come back exactly as they were started.
    argv = [sys.executable, *sys.orig_argv[1:]]
    os.execv(sys.executable, argv)


def take_held_signals() -> frozenset[signal.Signals]:
    """The signals a re-exec left blocked for this image (none at a first start).

    The variable is removed, so that the processes this one starts never inherit it.
    """
    value = os.environ.pop(HELD_SIGNALS_ENV, "")
    numbers = {int(part) for part in value.split(",") if part.strip().isdigit()}
    return frozenset(signum for signum in HANDLED_SIGNALS if signum in numbers)
