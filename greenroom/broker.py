"""The broker contract every broker implements (the consumer contract and the message proxy are re-exported
from :mod:`greenroom._consuming`, middleware dispatch comes from :mod:`greenroom._middleware_host`).

This module sits in the core, below the actor and middleware modules: it names actors through
:class:`ActorLike`, middleware through :class:`~greenroom._hooks.MiddlewareLike` and results
backends through :class:`~greenroom._types.ResultBackendLike`, and finds the default middleware
through the registry in :mod:`greenroom._globals`, which the package fills from above.
"""

from __future__ import annotations

import abc
import datetime
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol, cast

from . import _globals
from ._consuming import MAX_PAYLOAD_BYTES, Consumer, MessageProxy, decode_message
from ._hooks import MiddlewareLike
from ._middleware_host import MiddlewareHost, QueueListener
from ._operations import DeadLetter, QueueCounts, QueueOperations
from ._types import ResultBackendLike
from .common import Deadline, current_millis, dq_name, q_name
from .errors import ActorNotFound, QueueJoinTimeout, QueueNotFound
from .logging import get_logger
from .message import Message

__all__ = [
    "MAX_PAYLOAD_BYTES",
    "ActorLike",
    "Broker",
    "Consumer",
    "DeadLetter",
    "MessageProxy",
    "QueueCounts",
    "QueueListener",
    "decode_message",
    "get_broker",
    "set_broker",
]


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


#: Actor options the worker honours without any middleware.
WORKER_ACTOR_OPTIONS = frozenset({"max_concurrency"})


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


class Broker(QueueOperations, MiddlewareHost, abc.ABC):
    """Base class for brokers.

    Subclasses implement the primitives: :meth:`_publish` (store one encoded message),
    :meth:`consume`, :meth:`flush`, :meth:`flush_all` and :meth:`queue_is_empty`. The base class
    owns actor and queue bookkeeping, middleware dispatch, the :meth:`enqueue` template (delay,
    hooks, encoding) and :meth:`join`; decoding and the bad-payload policy are
    :func:`decode_message`'s. The operations API (:meth:`get_queue_counts`,
    :meth:`get_dead_letters`, :meth:`requeue_dead_letters`, :meth:`purge_dead_letters`) comes from
    :class:`~greenroom._operations.QueueOperations`: brokers implement it, and without an
    implementation it raises :class:`NotImplementedError`.

    Parameters:
      middleware: The middleware to install. ``None`` installs one instance of each default
        middleware; an explicit list, even empty, installs exactly those.
    """

    def __init__(self, middleware: Iterable[MiddlewareLike] | None = None) -> None:
        self.actors: dict[str, ActorLike] = {}
        #: Declared queue names: a set, as :meth:`_register_queue` expects (brokers may replace it,
        #: as the stub broker does with a dict of queues, and override that method to match).
        self.queues: Any = set()
        self.delay_queues: set[str] = set()
        #: Serialises queue declarations (re-entrant: a declaration hook may declare a queue).
        self._declare_lock = threading.RLock()
        if middleware is None:
            middleware = _globals.build_default_middleware()
        super().__init__(middleware, get_logger(__name__, type(self)))
        #: Options the worker itself honours (``max_concurrency``: see :class:`~greenroom.Worker`).
        self.actor_options |= WORKER_ACTOR_OPTIONS

    def _replay_declarations(self, middleware: MiddlewareLike) -> None:
        """Call the declaration hooks of a middleware added late for the actors and queues declared before it."""
        for actor in self.actors.values():
            self._call_hook(middleware, "after_declare_actor", actor)
        for queue_name in self.get_declared_queues():
            self._call_hook(middleware, "after_declare_queue", queue_name)
        for queue_name in self.get_declared_delay_queues():
            self._call_hook(middleware, "after_declare_delay_queue", queue_name)

    def _declared_queues(self) -> list[tuple[str, bool]]:
        """``(queue name, is a delay queue)`` of every queue declared so far."""
        queues = [(queue_name, False) for queue_name in self.get_declared_queues()]
        return queues + [(queue_name, True) for queue_name in self.get_declared_delay_queues()]

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

    def enqueue(self, message: Message[Any], *, delay: int | None = None) -> Message[Any]:
        """Send a message, delayed by ``delay`` ms if given; returns the copy that was sent.

        The template every greenroom broker follows: :meth:`_address` picks the queue (a delayed
        message goes to ``<queue>.DQ`` with an ``eta`` option) and checks that it is declared,
        ``before_enqueue`` hooks run, the message is encoded after them (a hook may add options),
        :meth:`_publish` stores the payload, and ``after_enqueue`` hooks run. A broker that keeps unique
        jobs may find the message's ``unique_key`` held by a message already there: ``_publish``
        then returns that message, which ``enqueue`` returns instead (``after_enqueue`` does not run).

        Raises:
          QueueNotFound: When the queue was never declared (brokers that declare on demand do so).
          BrokerError: When the payload could not be stored; ``after_enqueue`` does not run then.
        """
        message = self._address(message, delay)
        self.emit_before("enqueue", message, delay)
        already_there = self._publish(message, message.encode())
        if already_there is not None:
            return already_there
        self.emit_after("enqueue", message, delay)
        return message

    def _address(self, message: Message[Any], delay: int | None) -> Message[Any]:
        """The copy of ``message`` to send: on the delay queue with an ``eta`` when ``delay`` is given.

        Brokers that add options of their own (an id of the storage) override this and call it.

        Raises:
          QueueNotFound: See :meth:`_require_queue`.
          ValueError: When the message has a ``unique_key`` and this broker keeps no unique jobs
            (it would be ignored: every send would add a message).
        """
        if message.options.get("unique_key") is not None and "unique_key" not in self.actor_options:
            raise ValueError(
                f"{type(self).__name__} does not keep unique jobs: the unique_key option needs the "
                "PostgreSQL, SQLite, Redis or stub broker"
            )
        if delay is not None:
            eta = current_millis() + delay
            message = message.copy(queue_name=dq_name(message.queue_name), options={"eta": eta})
        self._require_queue(q_name(message.queue_name))
        return message

    def _require_queue(self, queue_name: str) -> None:
        """Refuse to send to a canonical queue that was never declared; brokers may declare it instead.

        Raises:
          QueueNotFound: When ``queue_name`` is not declared.
        """
        if queue_name not in self.queues:
            raise QueueNotFound(queue_name)

    def _publish(self, message: Message[Any], payload: bytes) -> Message[Any] | None:
        """Store the encoded ``message`` on ``message.queue_name``: the primitive :meth:`enqueue` calls.

        Returns once the payload is as durable as the broker makes it: ``None``, or the message
        already there that holds the same unique key (the payload was not stored then). A broker
        that overrides :meth:`enqueue` itself (as brokers written for Dramatiq do) need not
        implement this.
        """
        raise NotImplementedError(f"{type(self).__name__} implements neither enqueue nor _publish")

    def enqueue_many(self, messages: Iterable[Message[Any]], *, delay: int | None = None) -> list[Message[Any]]:
        """Send many messages; returns the copies sent. Brokers that batch round trips override this."""
        return [self.enqueue(message, delay=delay) for message in messages]

    def _finish_batch(self, sent: list[Message[Any]], unique: list[int], delay: int | None) -> list[Message[Any]]:
        """The end of a batching ``enqueue_many``, once the batch's other messages are stored.

        Sends the messages with a unique key (at the positions ``unique`` of ``sent``, addressed and
        through their ``before_enqueue`` hooks) one by one through :meth:`_publish`, then runs the
        ``after_enqueue`` hooks of every message stored; returns what each send returns (for a
        unique message, possibly the message already holding its key).
        """
        stored = [True] * len(sent)
        for position in unique:
            holder = self._publish(sent[position], sent[position].encode())
            if holder is not None:
                sent[position] = holder
                stored[position] = False
        for message, was_stored in zip(sent, stored, strict=True):
            if was_stored:
                self.emit_after("enqueue", message, delay)
        return sent

    @abc.abstractmethod
    def consume(self, queue_name: str, prefetch: int = 1, timeout: int = 30000) -> Consumer:
        """A consumer for a queue, holding at most ``prefetch`` unacknowledged messages."""

    @abc.abstractmethod
    def flush(self, queue_name: str) -> None:
        """Drop every message of a queue."""

    def flush_all(self) -> None:
        """Drop every message of every declared queue (through :meth:`flush`)."""
        for queue_name in self.get_declared_queues():
            self.flush(queue_name)

    def join(self, queue_name: str, *, timeout: int | None = None) -> None:
        """Wait until a queue and its delay queue are empty (a test helper).

        Raises:
          QueueJoinTimeout: When ``timeout`` ms pass first.
        """
        self._join(queue_name, timeout_ms=timeout)

    def queue_is_empty(self, queue_name: str) -> bool:
        """Whether a queue and its delay queue hold no message, ready, delayed or in progress.

        The primitive :meth:`join` waits on; brokers implement it (or override ``join``).
        """
        raise NotImplementedError(f"{type(self).__name__} cannot tell whether a queue is empty")

    def _join(
        self,
        queue_name: str,
        *,
        timeout_ms: int | None,
        interval_s: float = 0.1,
        checks: int = 1,
        wait: Callable[[float], object] = time.sleep,
    ) -> None:
        """Wait until :meth:`queue_is_empty` says so ``checks`` times in a row.

        Parameters:
          timeout_ms: Raise ``QueueJoinTimeout`` after this many milliseconds; ``None`` waits forever.
          interval_s: Most seconds between two checks.
          checks: Checks in a row that must find the queue empty (a broker that cannot see
            messages on their way to a consumer asks for several).
          wait: Waits up to its argument in seconds between checks; a broker that can tell when
            its queues change returns early.
        """
        deadline = Deadline.after_ms(timeout_ms)
        in_a_row = 0
        while True:
            in_a_row = in_a_row + 1 if self.queue_is_empty(queue_name) else 0
            if in_a_row >= checks:
                return
            if deadline.expired():
                raise QueueJoinTimeout(queue_name)
            wait(deadline.left_s(interval_s))

    def recover_process(self, host: str, pid: int) -> int:
        """Return at once what a worker process that died held (unacknowledged messages) to its queues.

        The ``greenroom`` command calls it when it sees a worker process die, so that its messages
        do not wait for a heartbeat or lease timeout. The default does nothing and returns 0: a
        broker whose server notices a dead consumer itself (RabbitMQ closes its connection) needs
        nothing more. Returns how many holders (or messages) were released.
        """
        return 0

    def close(self) -> None:
        """Release connections and files. The broker may be used again afterwards."""
