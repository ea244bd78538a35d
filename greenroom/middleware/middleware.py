"""The middleware base class and its hook protocol.

Lifecycle of the hooks (``before_*`` run in middleware list order, ``after_*`` in reverse order)::

    declare:   before_declare_actor → after_declare_actor
               before_declare_queue → after_declare_queue → after_declare_delay_queue
    enqueue:   before_enqueue → (payload sent) → after_enqueue
    process:   after_process_boot                       (CLI worker process, once)
               before_worker_boot → after_worker_boot   (Worker.start)
               after_consumer_thread_boot, after_worker_thread_boot
               before_delay_message                     (a message with an eta is parked)
               before_process_message → actor → after_process_message(result=… | exception=…)
                   or, when a before_ hook raised SkipMessage: after_skip_message
               before_ack → ack → after_ack    |   before_nack → nack → after_nack
    shutdown:  before_worker_shutdown → before_consumer_thread_shutdown,
               before_worker_thread_shutdown → after_worker_shutdown

Failure policy: a ``MiddlewareError`` (including ``SkipMessage``) raised by a ``before_*`` hook
propagates to whoever emitted the signal and aborts the operation; any other exception raised by a
hook is logged at CRITICAL with its traceback and swallowed, so one broken middleware cannot stop a
worker. Exceptions from ``after_*`` hooks are always logged and swallowed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

# The hook names and the two middleware errors sit below the broker, which dispatches the hooks
# and lets the errors through; they are presented here, where Dramatiq has them.
from .._hooks import HOOKS, AfterSignal, BeforeSignal
from ..errors import MiddlewareError, SkipMessage

if TYPE_CHECKING:
    from ..actor import Actor
    from ..broker import Broker, MessageProxy
    from ..message import Message
    from ..worker import ConsumerThread, Worker, WorkerThread

__all__ = ["HOOKS", "AfterSignal", "BeforeSignal", "Middleware", "MiddlewareError", "SkipMessage"]


def enqueue_or_fail(
    broker: Broker,
    message: MessageProxy,
    follow_up: Message[Any],
    delay: int | None,
    logger: logging.Logger,
    what: str,
) -> None:
    """Enqueue what a processed message leads to (its retry, the next pipeline step).

    When that cannot be stored, ``message`` is failed: it is dead-lettered rather than
    acknowledged, so the work it carries is kept instead of lost.
    """
    try:
        broker.enqueue(follow_up, delay=delay)
    except Exception:
        logger.error("Could not enqueue %s of message %r; dead-lettering it.", what, message.message_id, exc_info=True)
        message.fail()


class Middleware:
    """Base class for middleware. Every hook is a no-op; subclasses override the ones they need.

    A middleware builds all of its state in ``__init__``: hooks may be called in any order, and
    ``after_process_boot`` may never be called (producers) or be called more than once.
    """

    #: Set by middleware that store actor results (the worker only warns about discarded
    #: return values when no middleware does).
    stores_results: bool = False

    @property
    def actor_options(self) -> set[str]:
        """The actor options this middleware reads."""
        return set()

    @property
    def forks(self) -> list[Callable[[], int]]:
        """Module-level functions the CLI runs in their own processes."""
        return []

    def hooks(self) -> list[str]:
        """The names of the hooks this middleware's class overrides."""
        cls = type(self)
        return sorted(name for name in HOOKS if getattr(cls, name) is not getattr(Middleware, name))

    def before_declare_actor(self, broker: Broker, actor: Actor[Any, Any]) -> None:
        """Called before an actor is declared."""

    def after_declare_actor(self, broker: Broker, actor: Actor[Any, Any]) -> None:
        """Called after an actor is declared (and replayed when this middleware is added later)."""

    def before_declare_queue(self, broker: Broker, queue_name: str) -> None:
        """Called before a queue is first declared."""

    def after_declare_queue(self, broker: Broker, queue_name: str) -> None:
        """Called after a queue is first declared (and replayed)."""

    def after_declare_delay_queue(self, broker: Broker, queue_name: str) -> None:
        """Called after a delay queue is declared (and replayed)."""

    def before_enqueue(self, broker: Broker, message: Message[Any], delay: int | None) -> None:
        """Called before a message is sent; ``message`` is the copy that will be sent."""

    def after_enqueue(self, broker: Broker, message: Message[Any], delay: int | None) -> None:
        """Called after a message was sent."""

    def after_process_boot(self, broker: Broker) -> None:
        """Called once in a worker process, after the broker module was imported."""

    def before_worker_boot(self, broker: Broker, worker: Worker) -> None:
        """Called when a worker starts, before its threads exist."""

    def after_worker_boot(self, broker: Broker, worker: Worker) -> None:
        """Called when a worker has started its threads."""

    def after_consumer_thread_boot(self, broker: Broker, thread: ConsumerThread) -> None:
        """Called in a consumer thread when it starts."""

    def before_consumer_thread_shutdown(self, broker: Broker, thread: ConsumerThread) -> None:
        """Called in a consumer thread when it stops."""

    def after_worker_thread_boot(self, broker: Broker, thread: WorkerThread) -> None:
        """Called in a worker thread when it starts."""

    def before_worker_thread_shutdown(self, broker: Broker, thread: WorkerThread) -> None:
        """Called in a worker thread when it stops."""

    def before_delay_message(self, broker: Broker, message: MessageProxy) -> None:
        """Called when a consumed message with an ``eta`` is held in memory until due."""

    def before_process_message(self, broker: Broker, message: MessageProxy) -> None:
        """Called before the actor runs; may raise ``SkipMessage``."""

    def after_process_message(
        self, broker: Broker, message: MessageProxy, *, result: Any = None, exception: BaseException | None = None
    ) -> None:
        """Called after the actor ran, with its result or the exception it raised."""

    def after_skip_message(self, broker: Broker, message: MessageProxy) -> None:
        """Called instead of ``after_process_message`` when a message was skipped."""

    def before_ack(self, broker: Broker, message: MessageProxy) -> None:
        """Called before a message is acknowledged."""

    def after_ack(self, broker: Broker, message: MessageProxy) -> None:
        """Called after a message was acknowledged."""

    def before_nack(self, broker: Broker, message: MessageProxy) -> None:
        """Called before a message is dead-lettered."""

    def after_nack(self, broker: Broker, message: MessageProxy) -> None:
        """Called after a message was dead-lettered."""

    def before_worker_shutdown(self, broker: Broker, worker: Worker) -> None:
        """Called when a worker begins to stop."""

    def after_worker_shutdown(self, broker: Broker, worker: Worker) -> None:
        """Called when a worker has stopped."""
