"""Running ``async def`` actors on one event loop per worker process."""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import TimeoutError as FutureTimeoutError
from typing import Any, TypeVar

from .threading import Interrupt

__all__ = ["EventLoopThread", "async_to_sync", "get_event_loop_thread", "set_event_loop_thread"]

R = TypeVar("R")

#: The process's event loop thread, set by the AsyncIO middleware.
_event_loop_thread: EventLoopThread | None = None


def get_event_loop_thread() -> EventLoopThread | None:
    """The event loop thread async actors run on, if one was started."""
    return _event_loop_thread


def set_event_loop_thread(event_loop_thread: EventLoopThread | None) -> None:
    """Set (or unset) the event loop thread async actors run on."""
    global _event_loop_thread
    _event_loop_thread = event_loop_thread


def async_to_sync(async_fn: Callable[..., Awaitable[R]]) -> Callable[..., R]:
    """Wrap a coroutine function so that calling it runs it on the event loop thread and waits."""

    @functools.wraps(async_fn)
    def wrapper(*args: Any, **kwargs: Any) -> R:
        loop_thread = get_event_loop_thread()
        if loop_thread is None:
            raise RuntimeError(
                "Async actors need an event loop thread: add the AsyncIO middleware to your broker "
                "(greenroom.middleware.AsyncIO)."
            )
        coroutine = async_fn(*args, **kwargs)
        return loop_thread.run_coroutine(coroutine)  # type: ignore[arg-type]

    return wrapper


class EventLoopThread(threading.Thread):
    """A daemon thread running an asyncio event loop.

    Parameters:
      logger: Where to log.
      interrupt_check_ival: How often, in seconds, a waiting worker thread checks for an interrupt.
    """

    def __init__(self, logger: logging.Logger, interrupt_check_ival: float = 0.1) -> None:
        super().__init__(name="greenroom-event-loop", daemon=True)
        self.logger = logger
        self.interrupt_check_ival = interrupt_check_ival
        self.loop = asyncio.new_event_loop()

    def run(self) -> None:
        try:
            self.loop.run_forever()
        finally:
            self.loop.close()

    def start(self, *, timeout: float | None = None) -> None:
        """Start the thread and wait (``timeout`` seconds) for the loop to run."""
        super().start()
        running = threading.Event()
        self.loop.call_soon_threadsafe(running.set)
        if not running.wait(timeout):
            raise RuntimeError("Event loop failed to start.")

    def stop(self) -> None:
        """Stop the loop and wait for the thread."""
        if self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.join()

    def run_coroutine(self, coroutine: Coroutine[Any, Any, R]) -> R:
        """Run a coroutine on the loop from another thread and wait for its result.

        An :class:`Interrupt` raised into the waiting thread (time limit, shutdown) cancels the
        coroutine and is re-raised.
        """
        if not self.loop.is_running():
            raise RuntimeError("Event loop is not running.")
        future = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        try:
            while True:
                try:
                    return future.result(timeout=self.interrupt_check_ival)
                except FutureTimeoutError:
                    if future.done():
                        raise  # the coroutine itself raised TimeoutError
                    continue
        except Interrupt as exc:
            self.loop.call_soon_threadsafe(future.cancel)
            try:
                future.exception(timeout=1)
            except (FutureTimeoutError, asyncio.CancelledError):
                pass
            except Exception:  # noqa: BLE001 - any outcome of the cancelled task is fine here
                pass
            if not future.done():
                raise RuntimeError("Timed out while waiting for coroutine.") from exc
            raise
