"""Asynchronous exceptions raised into worker threads (time limits, shutdown notifications)."""

from __future__ import annotations

import ctypes
import platform
import sys

__all__ = [
    "Interrupt",
    "current_platform",
    "is_gevent_active",
    "raise_thread_exception",
    "supported_platforms",
]

#: The Python implementation this process runs on.
current_platform = platform.python_implementation()
#: The implementations on which exceptions can be raised into other threads.
supported_platforms = {"CPython"}


class Interrupt(BaseException):
    """Raised asynchronously into a thread. A ``BaseException`` so ``except Exception`` cannot swallow it."""


def is_gevent_active() -> bool:
    """Whether gevent has monkey-patched this process.

    Patching imports ``gevent.monkey``, so a process where it was never imported is not patched; not
    importing gevent just to ask spares every other worker its memory (about 2.5 MB).
    """
    monkey = sys.modules.get("gevent.monkey")
    return monkey is not None and bool(monkey.saved)


def raise_thread_exception(thread_id: int, exception: type[BaseException]) -> None:
    """Raise ``exception`` in the thread ``thread_id`` at its next bytecode boundary.

    It cannot interrupt a blocking call into C; the exception is delivered once the call returns.
    """
    if current_platform not in supported_platforms:
        raise RuntimeError(f"raising exceptions into threads is not supported on {current_platform}")
    modified = ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), ctypes.py_object(exception))
    if modified > 1:  # pragma: no cover - only when the interpreter state is corrupt
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), ctypes.c_long(0))
        raise RuntimeError(f"raised {exception.__name__} into more than one thread")
