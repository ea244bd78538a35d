"""Tell running actors that the worker is shutting down."""

from __future__ import annotations

import threading
import warnings
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .._options import NO_OPTIONS, resolve_option, select_options
from ..logging import get_logger
from ..threading import Interrupt, current_platform, interrupt, is_gevent_active, supported_platforms
from .middleware import Middleware

if TYPE_CHECKING:
    from ..actor import Actor
    from ..broker import Broker, MessageProxy
    from ..worker import Worker

__all__ = ["Shutdown", "ShutdownNotifications"]


class Shutdown(Interrupt):
    """Raised into an actor's thread when the worker shuts down and the actor asked to be told."""


class ShutdownNotifications(Middleware):
    """Raise :class:`Shutdown` into actors with ``notify_shutdown`` when the worker stops.

    Parameters:
      notify_shutdown: The default for actors that do not set the option.
    """

    def __init__(self, notify_shutdown: bool = False) -> None:
        self.logger = get_logger(__name__, type(self))
        self.notify_shutdown = notify_shutdown
        #: Thread ident → id of the message whose actor is to be notified; touched by worker
        #: threads and the thread calling Worker.stop, under _lock.
        self._notify: dict[int, str] = {}
        self._lock = threading.Lock()
        #: Actor name → the options of this middleware that the actor sets (read once, at declaration).
        self._actor_options: dict[str, Mapping[str, Any]] = {}

    @property
    def actor_options(self) -> set[str]:
        return {"notify_shutdown"}

    def after_process_boot(self, broker: Broker) -> None:
        if current_platform not in supported_platforms and not is_gevent_active():  # pragma: no cover
            warnings.warn(
                "ShutdownNotifications cannot interrupt threads on this platform.", RuntimeWarning, stacklevel=2
            )

    def after_declare_actor(self, broker: Broker, actor: Actor[Any, Any]) -> None:
        self._actor_options[actor.actor_name] = select_options(actor.options, self.actor_options)

    def _should_notify(self, message: MessageProxy) -> bool:
        actor_options = self._actor_options.get(message.actor_name, NO_OPTIONS)
        return bool(resolve_option("notify_shutdown", message.options, actor_options, self.notify_shutdown))

    def before_process_message(self, broker: Broker, message: MessageProxy) -> None:
        if self._should_notify(message):
            with self._lock:
                self._notify[threading.get_ident()] = message.message_id

    def after_process_message(
        self, broker: Broker, message: MessageProxy, *, result: Any = None, exception: BaseException | None = None
    ) -> None:
        with self._lock:
            self._notify.pop(threading.get_ident(), None)

    after_skip_message = after_process_message

    def before_worker_shutdown(self, broker: Broker, worker: Worker) -> None:
        with self._lock:
            targets = list(self._notify.items())
        for thread_id, message_id in targets:
            # Delivered only while the actor itself runs: one that already returned is left alone.
            if interrupt(thread_id, Shutdown, message_id):
                self.logger.info("Sending shutdown notification to worker thread %d.", thread_id)
