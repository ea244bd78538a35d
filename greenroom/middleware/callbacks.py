"""Run an actor when a message succeeds or fails."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .._options import NO_OPTIONS, resolve_option, select_options
from .middleware import Middleware

if TYPE_CHECKING:
    from ..actor import Actor
    from ..broker import Broker, MessageProxy

__all__ = ["Callbacks"]


class Callbacks(Middleware):
    """Send ``on_success(message_data, result)`` or ``on_failure(message_data, error_data)``.

    ``on_failure`` runs after every failed attempt, including attempts that will be retried.
    """

    def __init__(self) -> None:
        #: Actor name → the options of this middleware that the actor sets (read once, at declaration).
        #: Callbacks given as actors are kept as their names.
        self._actor_options: dict[str, Mapping[str, Any]] = {}

    @property
    def actor_options(self) -> set[str]:
        return {"on_failure", "on_success"}

    def after_declare_actor(self, broker: Broker, actor: Actor[Any, Any]) -> None:
        options = select_options(actor.options, self.actor_options)
        self._actor_options[actor.actor_name] = {
            name: getattr(target, "actor_name", target) for name, target in options.items()
        }

    def after_process_message(
        self, broker: Broker, message: MessageProxy, *, result: Any = None, exception: BaseException | None = None
    ) -> None:
        name = "on_success" if exception is None else "on_failure"
        actor_options = self._actor_options.get(message.actor_name, NO_OPTIONS)
        target = resolve_option(name, message.options, actor_options, None)
        if not target:
            return
        callback = broker.get_actor(target)
        if exception is None:
            callback.send(message.asdict(), result)
        else:
            callback.send(message.asdict(), {"type": type(exception).__name__, "message": str(exception)})
