"""Asynchronous exceptions raised into worker threads (time limits, shutdown notifications)."""

from __future__ import annotations

import ctypes
import platform
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from .errors import Interrupt

__all__ = [
    "Interrupt",
    "current_platform",
    "interrupt",
    "interrupts_deferred",
    "is_gevent_active",
    "raise_thread_exception",
    "run_interruptible",
    "supported_platforms",
]

R = TypeVar("R")

#: The Python implementation this process runs on.
current_platform = platform.python_implementation()
#: The implementations on which exceptions can be raised into other threads.
supported_platforms = {"CPython"}


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


# --- Where interrupts may land -----------------------------------------------------------------
#
# An interrupt (time limit, shutdown notification) is raised asynchronously: CPython delivers it at
# the target thread's next check point, which may be any call or loop edge. Delivered after the
# actor returned, it would tear whatever greenroom runs next (hook dispatch, logging, the ack, an
# SQLite transaction); delivered inside the actor's own ``send()``, it would tear that. So every
# interrupt goes through this module, which delivers it only while the thread runs its actor
# (between ``run_interruptible``'s arming and disarming) and outside ``interrupts_deferred``
# sections, where it is held and raised when the section ends. Each actor run gets at most one
# interrupt: the first that is asked for.


class _Run:
    """One actor run that may be interrupted: what was sent to it, and what waits for it."""

    __slots__ = ("deferred", "greenlet", "sent", "shield_depth", "tag")

    def __init__(self, tag: str, greenlet: Any) -> None:
        #: Identifies the run to callers of :func:`interrupt` (a message id).
        self.tag = tag
        #: The greenlet to throw into under gevent; None for a thread.
        self.greenlet = greenlet
        #: Whether an interrupt was delivered, scheduled or deferred (at most one per run).
        self.sent = False
        #: How many ``interrupts_deferred`` sections the run is inside.
        self.shield_depth = 0
        #: The interrupt asked for inside a deferred section, raised when the outermost one ends.
        self.deferred: type[BaseException] | None = None


#: Thread (or greenlet) ident → its armed run. Each thread adds and removes only its own entry;
#: every change, and every delivery, happens under _runs_lock.
_runs: dict[int, _Run] = {}
_runs_lock = threading.Lock()


def _set_async_exc(thread_id: int, exception: type[BaseException] | None) -> int:
    """Set (or, with None, clear) the exception pending for a thread; the count of threads changed."""
    value = ctypes.py_object(exception) if exception is not None else None
    return int(ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), value))


def run_interruptible(tag: str, fn: Callable[..., R], args: Sequence[Any], kwargs: Mapping[str, Any]) -> R:
    """Call ``fn(*args, **kwargs)`` with interrupts armed for the calling thread.

    Interrupts asked for with :func:`interrupt` reach ``fn``'s code only: once ``fn`` returns or
    raises, the run is disarmed and an interrupt still pending is dropped before this function
    returns or re-raises. An interrupt that lands as ``fn`` returns surfaces as ``fn``'s exception.

    Parameters:
      tag: What :func:`interrupt` callers name the run by (the message id).
    """
    thread_id = threading.get_ident()
    run = _Run(tag, _current_greenlet())
    try:
        with _runs_lock:
            _runs[thread_id] = run
        return fn(*args, **kwargs)
    finally:
        # Disarming is written out here rather than in a function: entering a Python function is
        # itself a point where a pending interrupt is delivered. Inside the lock no interrupt can
        # be sent; one that was sent before and lands here is caught, and the second pass (which
        # nothing can interrupt any more: one interrupt per run) finishes the job.
        try:
            with _runs_lock:
                _runs.pop(thread_id, None)
                if run.sent and run.greenlet is None:
                    _set_async_exc(thread_id, None)
        except Interrupt:
            with _runs_lock:
                _runs.pop(thread_id, None)
                if run.greenlet is None:
                    _set_async_exc(thread_id, None)


def interrupt(thread_id: int, exception: type[Interrupt], tag: str) -> bool:
    """Raise ``exception`` into the actor run ``tag`` of thread ``thread_id``, if that is still running.

    Inside an :func:`interrupts_deferred` section the exception is held until the section ends.

    Returns:
      Whether the exception was sent, scheduled or deferred; False when ``tag`` is not running on
      that thread (not started yet, or finished) or already got an interrupt.
    """
    with _runs_lock:
        run = _runs.get(thread_id)
        if run is None or run.tag != tag or run.sent:
            return False
        run.sent = True
        if run.shield_depth:
            run.deferred = exception
        elif run.greenlet is not None:
            # A greenlet is thrown into from the hub, which checks the run again at that moment.
            import gevent

            gevent.get_hub().loop.run_callback(_throw_into_greenlet, thread_id, run, exception)
        else:
            if current_platform not in supported_platforms:  # pragma: no cover
                raise RuntimeError(f"raising exceptions into threads is not supported on {current_platform}")
            _set_async_exc(thread_id, exception)
        return True


def _throw_into_greenlet(thread_id: int, run: _Run, exception: type[BaseException]) -> None:
    # Runs in the gevent hub, where nothing else runs meanwhile: the checks and the throw are atomic.
    if _runs.get(thread_id) is not run:
        return  # the run ended before the hub got here
    if run.shield_depth:
        run.deferred = exception
    else:
        run.greenlet.throw(exception)


class interrupts_deferred:
    """Hold back interrupts while library code that must not be torn runs inside an actor.

    (A class rather than a generator-based context manager: it guards every send, and costs less.)

    Used as ``with interrupts_deferred(): ...`` around an SQLite transaction, a round trip on a
    shared connection, a publish: code that an exception landing halfway would leave broken. An
    interrupt asked for meanwhile is raised when the outermost section ends (in place of the
    section's own exception, if it raised one). Outside an actor run this does nothing.
    """

    __slots__ = ("_run",)

    def __init__(self) -> None:
        self._run: _Run | None = None

    def __enter__(self) -> None:
        run = self._run = _runs.get(threading.get_ident())  # only this thread adds or removes it
        if run is None:
            return
        with _runs_lock:
            # An interrupt sent before this lock was taken may still be pending: calling a Python
            # function delivers it here, before the section starts. None can be sent while the
            # lock is held, and none is sent (only deferred) once the depth is raised.
            _deliver_pending()
            run.shield_depth += 1

    def __exit__(self, *exc_info: object) -> None:
        run = self._run
        if run is None:
            return
        with _runs_lock:
            run.shield_depth -= 1
            deferred = run.deferred if run.shield_depth == 0 else None
            if deferred is not None:
                run.deferred = None
        if deferred is not None:
            raise deferred


def _deliver_pending() -> None:
    """Do nothing: entering a Python function is where a pending asynchronous exception is raised."""


def _current_greenlet() -> Any:
    if not is_gevent_active():
        return None
    import gevent

    return gevent.getcurrent()
