"""The broker and consumer contracts every broker implements, and the message proxy consumers yield.

This module sits in the core, below the actor and middleware modules: it names actors through
:class:`ActorLike`, middleware through :class:`~greenroom._hooks.MiddlewareLike` and results
backends through :class:`~greenroom._types.ResultBackendLike`, and finds the default middleware
through the registry in :mod:`greenroom._globals`, which the package fills from above.
"""

from __future__ import annotations

import abc
import datetime
import threading
import warnings
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Protocol, cast

from . import _globals
from ._hooks import AfterSignal, BeforeSignal, MiddlewareLike
from ._types import ResultBackendLike
from .common import dq_name
from .errors import ActorNotFound, DecodeError, MiddlewareError
from .logging import get_logger
from .message import Message

__all__ = [
    "MAX_PAYLOAD_BYTES",
    "ActorLike",
    "Broker",
    "Consumer",
    "MessageProxy",
    "QueueListener",
    "decode_message",
    "get_broker",
    "set_broker",
]

#: Payloads larger than this many bytes are dead-lettered instead of decoded.
MAX_PAYLOAD_BYTES = 8 * 1024 * 1024

#: Called with ``(queue_name, is_delay_queue)`` for every queue a broker declares.
QueueListener = Callable[[str, bool], None]

_Hook = Callable[..., None]


class ActorLike(Protocol):
    """What brokers, workers and middleware need of an actor; :class:`greenroom.Actor` provides it.

    The actor module sits above this one (an actor is declared on a broker), so the broker
    contract names actors through this protocol.
    """

    @property
    def actor_name(self) -> str: ...

    @property
    def queue_name(self) -> str: ...

    @property
    def priority(self) -> int: ...

    @property
    def options(self) -> dict[str, Any]: ...

    def __call__(self, *args: Any, **kwargs: Any) -> Any: ...

    def message(self, *args: Any, **kwargs: Any) -> Message[Any]: ...

    def message_with_options(
        self, *, args: tuple[Any, ...] = ..., kwargs: dict[str, Any] | None = ..., **options: Any
    ) -> Message[Any]: ...

    def send(self, *args: Any, **kwargs: Any) -> Message[Any]: ...

    def send_with_options(
        self,
        *,
        args: tuple[Any, ...] = ...,
        kwargs: dict[str, Any] | None = ...,
        delay: int | datetime.timedelta | None = ...,
        **options: Any,
    ) -> Message[Any]: ...


def get_broker() -> Broker:
    """The global broker, created on first use when none was set.

    With nothing configured this is the embedded SQLite broker; the ``greenroom_broker_url``
    environment variable (or ``dramatiq_broker_url``) selects another one by URL. Creating the
    broker opens no file or socket: that happens on the first enqueue or consume.
    """
    # Only set_broker below and the registered default-broker factory fill the slot, each with a Broker.
    return cast("Broker", _globals.get_broker())


def set_broker(broker: Broker) -> None:
    """Make ``broker`` the global broker."""
    _globals.set_broker(broker)


def decode_message(data: bytes, *, max_bytes: int = MAX_PAYLOAD_BYTES) -> Message[Any]:
    """Decode a payload a consumer received.

    Raises:
      DecodeError: When the payload is too large or is not a valid message; the message of the
        error is the reason to record with the dead letter.
    """
    if len(data) > max_bytes:
        raise DecodeError(f"payload of {len(data)} bytes is larger than the limit of {max_bytes} bytes", data, None)
    return Message.decode(data)


def _owner(hook: _Hook) -> object:
    """The middleware a bound hook belongs to."""
    return getattr(hook, "__self__", hook)


class Broker(abc.ABC):
    """Base class for brokers.

    Subclasses implement the primitives marked abstract; the base class owns actor and queue
    bookkeeping and middleware dispatch.

    Parameters:
      middleware: The middleware to install. ``None`` installs one instance of each default
        middleware; an explicit list, even empty, installs exactly those.
    """

    def __init__(self, middleware: Iterable[MiddlewareLike] | None = None) -> None:
        self.logger = get_logger(__name__, type(self))
        self.actors: dict[str, ActorLike] = {}
        #: Declared queue names: a set, as :meth:`_register_queue` expects (brokers may replace it,
        #: as the stub broker does with a dict of queues, and override that method to match).
        self.queues: Any = set()
        self.delay_queues: set[str] = set()
        self.actor_options: set[str] = set()
        self.middleware: list[MiddlewareLike] = []
        #: Prebuilt dispatch lists, rebuilt by add_middleware: signal → bound hook methods.
        self._before: dict[str, list[_Hook]] = {}
        self._after: dict[str, list[_Hook]] = {}
        #: Workers listen for queue declarations here rather than through the middleware bus.
        self._queue_listeners: list[QueueListener] = []
        self.has_results_middleware = False
        #: Serialises queue declarations (re-entrant: a declaration hook may declare a queue).
        self._declare_lock = threading.RLock()

        self._rebuild_dispatch()
        if middleware is None:
            middleware = _globals.build_default_middleware()
        for m in middleware:
            self.add_middleware(m)

    # -- middleware ---------------------------------------------------------------------------

    def emit_before(self, signal: BeforeSignal, *args: Any, **kwargs: Any) -> None:
        """Run ``before_<signal>`` of every middleware in order (see :mod:`greenroom.middleware.middleware`)."""
        for hook in self._before.get(signal, ()):
            try:
                hook(self, *args, **kwargs)
            except MiddlewareError:
                raise
            except Exception:
                self.logger.critical("Unexpected failure in before_%s of %r.", signal, _owner(hook), exc_info=True)

    def emit_after(self, signal: AfterSignal, *args: Any, **kwargs: Any) -> None:
        """Run ``after_<signal>`` of every middleware in reverse order; failures are logged."""
        for hook in self._after.get(signal, ()):
            try:
                hook(self, *args, **kwargs)
            except Exception:
                self.logger.critical("Unexpected failure in after_%s of %r.", signal, _owner(hook), exc_info=True)

    def add_middleware(
        self,
        middleware: MiddlewareLike,
        *,
        before: type[MiddlewareLike] | None = None,
        after: type[MiddlewareLike] | None = None,
    ) -> None:
        """Install a middleware, then replay the declarations it missed.

        Parameters:
          middleware: The middleware to add.
          before: Insert it before the first installed middleware of this class.
          after: Insert it after the first installed middleware of this class.

        Raises:
          AssertionError: When both ``before`` and ``after`` are given.
          ValueError: When the class named by ``before`` or ``after`` is not installed.
        """
        assert not (before and after), "provide either 'before' or 'after', not both"
        if any(type(m) is type(middleware) for m in self.middleware):
            self.logger.warning("Middleware %r is already installed; adding another.", middleware)
        if before or after:
            anchor = before or after
            position = next((i for i, m in enumerate(self.middleware) if isinstance(m, anchor)), None)  # type: ignore[arg-type]
            if position is None:
                raise ValueError(f"middleware {anchor!r} is not installed")
            self.middleware.insert(position if before else position + 1, middleware)
        else:
            self.middleware.append(middleware)
        self.actor_options |= middleware.actor_options
        self._rebuild_dispatch()

        for actor in self.actors.values():
            self._call_hook(middleware, "after_declare_actor", actor)
        for queue_name in self.get_declared_queues():
            self._call_hook(middleware, "after_declare_queue", queue_name)
        for queue_name in self.get_declared_delay_queues():
            self._call_hook(middleware, "after_declare_delay_queue", queue_name)

    def _call_hook(self, middleware: MiddlewareLike, name: str, *args: Any) -> None:
        try:
            getattr(middleware, name)(self, *args)
        except Exception:
            self.logger.critical("Unexpected failure in %s of %r.", name, middleware, exc_info=True)

    def _rebuild_dispatch(self) -> None:
        before: dict[str, list[_Hook]] = {}
        after: dict[str, list[_Hook]] = {}
        for m in self.middleware:
            for name in m.hooks():
                prefix, _, signal = name.partition("_")
                (before if prefix == "before" else after).setdefault(signal, []).append(getattr(m, name))
        for hooks in after.values():
            hooks.reverse()
        # Workers learn about new queues from the declaration signals themselves, so a broker
        # written for Dramatiq (which only emits them) still gets consumers for later queues.
        after.setdefault("declare_queue", []).append(lambda _, name: self._notify_queue_declared(name, False))
        after.setdefault("declare_delay_queue", []).append(lambda _, name: self._notify_queue_declared(name, True))
        self._before = before
        self._after = after
        self.has_results_middleware = any(m.stores_results for m in self.middleware)

    # -- queue listeners (internal wiring for the Worker) --------------------------------------

    def add_queue_listener(self, listener: QueueListener) -> None:
        """Call ``listener`` for every queue declared so far and every queue declared from now on."""
        self._queue_listeners.append(listener)
        for queue_name in self.get_declared_queues():
            listener(queue_name, False)
        for queue_name in self.get_declared_delay_queues():
            listener(queue_name, True)

    def remove_queue_listener(self, listener: QueueListener) -> None:
        """Stop calling ``listener``."""
        if listener in self._queue_listeners:
            self._queue_listeners.remove(listener)

    def _notify_queue_declared(self, queue_name: str, is_delay_queue: bool) -> None:
        """Tell the queue listeners about a queue (``emit_after`` of a declaration does this)."""
        for listener in list(self._queue_listeners):
            listener(queue_name, is_delay_queue)

    # -- actors and queues ----------------------------------------------------------------------

    def declare_actor(self, actor: ActorLike) -> None:
        """Declare an actor and its queue."""
        self.emit_before("declare_actor", actor)
        self.declare_queue(actor.queue_name)
        self.actors[actor.actor_name] = actor
        self.emit_after("declare_actor", actor)

    def get_actor(self, actor_name: str) -> ActorLike:
        """Look up a declared actor.

        Raises:
          ActorNotFound: When no actor has that name.
        """
        try:
            return self.actors[actor_name]
        except KeyError:
            raise ActorNotFound(actor_name) from None

    def get_declared_actors(self) -> set[str]:
        """The names of the declared actors."""
        return set(self.actors)

    def get_declared_queues(self) -> set[str]:
        """The names of the declared queues."""
        return set(self.queues)

    def get_declared_delay_queues(self) -> set[str]:
        """The names of the declared delay queues."""
        return set(self.delay_queues)

    def get_results_backend(self) -> ResultBackendLike:
        """The backend of the installed results middleware.

        Raises:
          RuntimeError: When no results middleware is installed.
        """
        for m in self.middleware:
            if m.stores_results:
                backend: ResultBackendLike = m.backend  # type: ignore[attr-defined]  # a results middleware has one
                return backend
        raise RuntimeError("The broker doesn't have a results backend.")

    def declare_queue(self, queue_name: str) -> None:
        """Declare a queue and its delay queue, once: the hooks run and both are registered.

        Brokers record a queue in :meth:`_register_queue`; the default adds canonical names to
        ``self.queues`` (a set) and delay queues to ``self.delay_queues``.
        """
        if queue_name in self.queues:
            return
        with self._declare_lock:
            if queue_name in self.queues:
                return
            self.emit_before("declare_queue", queue_name)
            self._register_queue(queue_name, False)
            self.emit_after("declare_queue", queue_name)
            delayed_name = dq_name(queue_name)
            self._register_queue(delayed_name, True)
            self.emit_after("declare_delay_queue", delayed_name)

    def _register_queue(self, queue_name: str, is_delay_queue: bool) -> None:
        """Record a newly declared queue (called under the declaration lock)."""
        if is_delay_queue:
            self.delay_queues.add(queue_name)
        else:
            self.queues.add(queue_name)

    @abc.abstractmethod
    def enqueue(self, message: Message[Any], *, delay: int | None = None) -> Message[Any]:
        """Send a message, delayed by ``delay`` ms if given; returns the copy that was sent."""

    def enqueue_many(self, messages: Iterable[Message[Any]], *, delay: int | None = None) -> list[Message[Any]]:
        """Send many messages; returns the copies sent. Brokers that batch round trips override this."""
        return [self.enqueue(message, delay=delay) for message in messages]

    @abc.abstractmethod
    def consume(self, queue_name: str, prefetch: int = 1, timeout: int = 30000) -> Consumer:
        """A consumer for a queue, holding at most ``prefetch`` unacknowledged messages."""

    @abc.abstractmethod
    def flush(self, queue_name: str) -> None:
        """Drop every message of a queue."""

    @abc.abstractmethod
    def flush_all(self) -> None:
        """Drop every message of every queue."""

    @abc.abstractmethod
    def join(self, queue_name: str, *, timeout: int | None = None) -> None:
        """Wait until a queue and its delay queue are empty (a test helper)."""

    def close(self) -> None:
        """Release connections and files. The broker may be used again afterwards."""


class Consumer(abc.ABC):
    """Iterates over the messages of one queue.

    ``__next__`` blocks up to the consumer's timeout and returns a :class:`MessageProxy`, or
    ``None`` as an *idle tick* when nothing arrived, so the caller can do housekeeping. A consumer
    is driven by one thread, but ``ack`` and ``nack`` are called from worker threads and must be
    safe to call concurrently with iteration.
    """

    def __iter__(self) -> Consumer:
        return self

    @abc.abstractmethod
    def __next__(self) -> MessageProxy | None:
        """The next message, or ``None`` after an idle timeout."""

    @abc.abstractmethod
    def ack(self, message: MessageProxy) -> None:
        """Acknowledge a processed message: the broker forgets it."""

    @abc.abstractmethod
    def nack(self, message: MessageProxy) -> None:
        """Move a failed message to the dead letters."""

    def requeue(self, messages: Iterable[MessageProxy]) -> None:
        """Hand unprocessed messages back to the broker (the default does nothing)."""

    def keep_alive(self, timeout_s: float) -> None:
        """Keep the consumer's connection alive for up to ``timeout_s`` seconds while it is not iterated.

        A paused worker calls this in a loop instead of ``__next__``, from the thread that iterates
        the consumer, so that a broker that needs that thread to service its connection
        (heartbeats, acknowledgements queued by worker threads) can do so without handing out
        messages. The default does nothing and returns at once; the caller waits out the rest.

        Raises:
          BrokerConnectionError: When the connection is lost; the caller reconnects later.
        """

    def close(self) -> None:
        """Release the consumer's resources."""


class MessageProxy:
    """A consumed message, with the processing state the worker and middleware attach to it.

    The message's fields are copied onto the proxy (it is read on every hook); any other
    attribute is looked up on the wrapped message.
    """

    if TYPE_CHECKING:
        copy: Callable[..., Message[Any]]
        asdict: Callable[[], dict[str, Any]]
        encode: Callable[[], bytes]
        message_datetime: Any

    def __init__(self, message: Message[Any]) -> None:
        self.failed = False
        self._message = message
        self._exception: BaseException | None = None
        #: The broker consumer that delivered the message, set by the worker: the message is
        #: settled through it even after its consumer thread moved on to a new one.
        self._delivered_by: Consumer | None = None
        self.queue_name = message.queue_name
        self.actor_name = message.actor_name
        self.args = message.args
        self.kwargs = message.kwargs
        self.options = message.options
        self.message_id = message.message_id
        self.message_timestamp = message.message_timestamp

    def fail(self) -> None:
        """Mark the message failed: it will be dead-lettered instead of acknowledged."""
        self.failed = True

    def stuff_exception(self, exception: BaseException) -> None:
        """Remember the exception the message failed with."""
        self._exception = exception

    def clear_exception(self) -> None:
        """Forget the remembered exception (its traceback holds frames alive)."""
        self._exception = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._message, name)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, MessageProxy):
            return self._message == other._message
        return self._message == other

    __hash__ = None  # type: ignore[assignment]

    def __lt__(self, other: object) -> bool:
        warnings.warn("Comparing message proxies is deprecated.", DeprecationWarning, stacklevel=2)
        return True

    def __str__(self) -> str:
        return str(self._message)

    def __repr__(self) -> str:
        return f"<{type(self).__qualname__} {self._message!r}>"
