"""Running ``async def`` actors on one event loop per worker process."""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from .threading import Interrupt

__all__ = ["EventLoopThread", "async_to_sync", "get_event_loop_thread", "set_event_loop_thread"]

R = TypeVar("R")

#: How long a cancelled coroutine gets to finish, in seconds.
_CANCEL_TIMEOUT_S = 1.0
#: How long stop() waits for the loop thread, in seconds.
_STOP_TIMEOUT_S = 10.0

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
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_forever()
        finally:
            try:
                self._cancel_pending()
            finally:
                self.loop.close()

    def _cancel_pending(self) -> None:
        """Cancel what is still running when the loop stops, so no task is destroyed while pending."""
        pending = asyncio.all_tasks(self.loop)
        for task in pending:
            task.cancel()
        if pending:
            # Bounded: a coroutine that swallows its cancellation must not hang the shutdown.
            self.loop.run_until_complete(asyncio.wait(pending, timeout=_CANCEL_TIMEOUT_S))
        self.loop.run_until_complete(self.loop.shutdown_asyncgens())

    def start(self, *, timeout: float | None = None) -> None:
        """Start the thread and wait (``timeout`` seconds) for the loop to run.

        Raises:
          RuntimeError: When the loop is not running within ``timeout``.
        """
        super().start()
        running = threading.Event()
        self.loop.call_soon_threadsafe(running.set)
        if not running.wait(timeout):
            raise RuntimeError("Event loop failed to start.")

    def stop(self) -> None:
        """Stop the loop (cancelling the coroutines still running) and wait for the thread."""
        if self.is_alive():
            try:
                self.loop.call_soon_threadsafe(self.loop.stop)
            except RuntimeError:
                pass  # the loop is already closed
            self.join(_STOP_TIMEOUT_S)
            if self.is_alive():
                self.logger.warning("The event loop thread did not stop within %s s.", _STOP_TIMEOUT_S)
        elif self.ident is None and not self.loop.is_closed():
            self.loop.close()  # never started: release the loop's selector now

    def run_coroutine(self, coroutine: Coroutine[Any, Any, R]) -> R:
        """Run a coroutine on the loop from another thread and wait for its result.

        The coroutine runs in a copy of the calling thread's context, so context variables (such
        as the current message) are visible to it. An :class:`Interrupt` raised into the waiting
        thread (time limit, shutdown) cancels the coroutine, waits up to a second for it to
        finish, and is re-raised.

        Raises:
          RuntimeError: When the loop is not running, or a cancelled coroutine did not finish
            within a second.
        """
        if not self.loop.is_running():
            coroutine.close()
            raise RuntimeError("Event loop is not running.")
        outcome: concurrent.futures.Future[R] = concurrent.futures.Future()
        tasks: list[asyncio.Task[R]] = []

        def start_task() -> None:
            # Runs on the loop, in the context call_soon_threadsafe copied from the caller.
            task = self.loop.create_task(coroutine)
            tasks.append(task)
            task.add_done_callback(functools.partial(_copy_outcome, outcome))

        try:
            self.loop.call_soon_threadsafe(start_task)
        except RuntimeError:  # the loop closed since the check above
            coroutine.close()
            raise
        try:
            # Waiting in short slices lets an asynchronously raised Interrupt reach this thread.
            while not concurrent.futures.wait([outcome], timeout=self.interrupt_check_ival).done:
                pass
        except Interrupt as exc:
            self.loop.call_soon_threadsafe(_cancel_tasks, tasks)
            if not concurrent.futures.wait([outcome], timeout=_CANCEL_TIMEOUT_S).done:
                raise RuntimeError("Timed out while waiting for coroutine.") from exc
            raise
        return outcome.result()


def _copy_outcome(outcome: concurrent.futures.Future[R], task: asyncio.Task[R]) -> None:
    if task.cancelled():
        # cancel() alone does not wake concurrent.futures.wait(); this marks it done for waiters.
        outcome.cancel()
        outcome.set_running_or_notify_cancel()
    elif task.exception() is not None:
        outcome.set_exception(task.exception())
    else:
        outcome.set_result(task.result())


def _cancel_tasks(tasks: list[asyncio.Task[Any]]) -> None:
    for task in tasks:
        task.cancel()
