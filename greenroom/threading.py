"""Asynchronous exceptions raised into worker threads (time limits, shutdown notifications)."""

from __future__ import annotations

import ctypes
import platform

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
    """Whether gevent is installed and has monkey-patched this process."""
    try:
        from gevent import monkey
    except ImportError:
        return False
    return bool(monkey.saved)


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
