"""Actors: functions that run in workers when messages are sent to them."""

from __future__ import annotations

import datetime
import inspect
import logging
import re
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Generic, TypeVar, overload

from .broker import Broker, get_broker
from .logging import get_logger
from .message import Message
from .threading import interrupts_deferred

if TYPE_CHECKING:
    from typing_extensions import ParamSpec
else:  # typing.ParamSpec exists from 3.10, which is our floor
    from typing import ParamSpec

__all__ = ["Actor", "actor"]

P = ParamSpec("P")
R = TypeVar("R")

#: Valid queue names. Names ending in .DQ or .XQ are refused: they are the delay and dead-letter
#: queues of another queue.
_QUEUE_NAME_RE = re.compile(r"[a-zA-Z_][a-zA-Z0-9._-]*")


def validate_queue_name(queue_name: str) -> None:
    """Raise ``ValueError`` for a queue name that cannot be used."""
    if not isinstance(queue_name, str) or not _QUEUE_NAME_RE.fullmatch(queue_name):
        raise ValueError(
            f"Queue names must start with a letter or an underscore and contain only letters, digits, "
            f"dots, underscores and dashes; {queue_name!r} does not."
        )
    if queue_name.endswith((".DQ", ".XQ")):
        raise ValueError(f"Queue name {queue_name!r} ends in .DQ or .XQ, which greenroom reserves.")


def _delay_ms(delay: int | datetime.timedelta | None) -> int | None:
    """The one conversion of a public ``delay`` to milliseconds."""
    if isinstance(delay, datetime.timedelta):
        return int(delay.total_seconds() * 1000)
    return delay


class Actor(Generic[P, R]):
    """A function wrapped so that calls to it can be sent to workers as messages.

    ``send`` is typed with the function's own parameters, so type checkers check its arguments.

    Parameters:
      fn: The function (or coroutine function) to run.
      broker: The broker to declare the actor on.
      actor_name: The actor's unique name.
      queue_name: The queue its messages go to.
      priority: Lower runs first among messages prefetched by one worker process.
      options: Options for middleware; each must be one a middleware of the broker reads.
    """

    def __init__(
        self,
        fn: Callable[P, R] | Callable[P, Awaitable[R]],
        *,
        broker: Broker,
        actor_name: str,
        queue_name: str,
        priority: int,
        options: dict[str, Any],
    ) -> None:
        if actor_name in broker.actors:
            raise ValueError(f"an actor named {actor_name!r} is already registered on this broker; pick another name")
        self.logger = get_logger(getattr(fn, "__module__", None) or "_", actor_name)
        if inspect.iscoroutinefunction(fn):
            from .asyncio import async_to_sync

            fn = async_to_sync(fn)
        self.fn: Callable[..., Any] = fn
        self.broker = broker
        self.actor_name = actor_name
        self.queue_name = queue_name
        self.priority = priority
        self.options = options
        self.broker.declare_actor(self)

    def message(self, *args: P.args, **kwargs: P.kwargs) -> Message[R]:
        """Build a message for this actor without sending it."""
        return self.message_with_options(args=args, kwargs=kwargs)

    def message_with_options(
        self, *, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None, **options: Any
    ) -> Message[R]:
        """Build a message with options for middleware, without sending it."""
        if options:
            for name in ("on_failure", "on_success"):
                callback = options.get(name)
                if isinstance(callback, Actor):
                    options[name] = callback.actor_name
                elif callback is not None and not isinstance(callback, str):
                    raise TypeError(f"{name} value must be an Actor or an actor name, not {type(callback).__name__}")
        return Message(self.queue_name, self.actor_name, args, kwargs or {}, options)

    def send(self, *args: P.args, **kwargs: P.kwargs) -> Message[R]:
        """Send a message to this actor; returns the message that was enqueued."""
        return self.send_with_options(args=args, kwargs=kwargs)

    def send_with_options(
        self,
        *,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
        delay: int | datetime.timedelta | None = None,
        **options: Any,
    ) -> Message[R]:
        """Send a message with options; ``delay`` (ms or timedelta) routes it through the delay queue.

        Raises:
          TypeError: When an argument cannot be encoded; nothing is enqueued then.
        """
        message = self.message_with_options(args=args, kwargs=kwargs, **options)
        return self.broker.enqueue(message, delay=_delay_ms(delay))

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run the function synchronously, in the caller's thread."""
        start = time.perf_counter()
        debug = self.logger.isEnabledFor(logging.DEBUG)
        if debug:
            with interrupts_deferred():  # an interrupt inside a handler would leave its lock held
                self.logger.debug("Received args=%r kwargs=%r.", args, kwargs)
        try:
            result: R = self.fn(*args, **kwargs)
            return result
        finally:
            if debug:
                with interrupts_deferred():
                    self.logger.debug("Completed after %.02fms.", (time.perf_counter() - start) * 1000)

    def __repr__(self) -> str:
        return f"Actor({self.fn!r}, queue_name={self.queue_name!r}, actor_name={self.actor_name!r})"

    def __str__(self) -> str:
        return f"Actor({self.actor_name})"


def _make_actor(
    fn: Callable[..., Any],
    actor_class: Callable[..., Any],
    actor_name: str | None,
    queue_name: str,
    priority: int,
    broker: Broker | None,
    options: dict[str, Any],
) -> Any:
    broker = broker or get_broker()
    invalid = set(options) - broker.actor_options
    if invalid:
        names = ", ".join(sorted(invalid))
        raise ValueError(
            f"The following actor options are undefined: {names}. Did you forget to add a middleware to your broker?"
        )
    limit = options.get("max_concurrency")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"max_concurrency must be a positive integer, not {limit!r}")
    return actor_class(
        fn,
        actor_name=actor_name or fn.__name__,
        queue_name=queue_name,
        priority=priority,
        broker=broker,
        options=options,
    )


@overload
def actor(fn: Callable[P, Awaitable[R]], /) -> Actor[P, R]: ...


@overload
def actor(fn: Callable[P, R], /) -> Actor[P, R]: ...


@overload
def actor(
    fn: None = None,
    /,
    *,
    actor_class: Callable[..., Actor[Any, Any]] = ...,
    actor_name: str | None = ...,
    queue_name: str = ...,
    priority: int = ...,
    broker: Broker | None = ...,
    **options: Any,
) -> _ActorDecorator: ...


def actor(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    actor_class: Callable[..., Any] = Actor,
    actor_name: str | None = None,
    queue_name: str = "default",
    priority: int = 0,
    broker: Broker | None = None,
    **options: Any,
) -> Any:
    """Declare an actor: use bare (``@actor``) or with options (``@actor(queue_name="emails")``).

    Raises:
      ValueError: For an invalid queue name or an option no middleware of the broker reads.
    """
    validate_queue_name(queue_name)

    def decorator(fn: Callable[..., Any]) -> Any:
        return _make_actor(fn, actor_class, actor_name, queue_name, priority, broker, options)

    if fn is None:
        return decorator
    return decorator(fn)


class _ActorDecorator:
    """The type of ``actor(...)`` called with options: turns a function into an :class:`Actor`."""

    @overload
    def __call__(self, fn: Callable[P, Awaitable[R]], /) -> Actor[P, R]: ...

    @overload
    def __call__(self, fn: Callable[P, R], /) -> Actor[P, R]: ...

    def __call__(self, fn: Callable[..., Any], /) -> Actor[Any, Any]:  # pragma: no cover - typing only
        raise NotImplementedError
