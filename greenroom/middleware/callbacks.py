"""Run an actor when a message succeeds or fails."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

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
        #: (actor name, option) → callback actor name, resolved when the actor is declared.
        self._by_actor: dict[tuple[str, str], str | None] = {}

    @property
    def actor_options(self) -> set[str]:
        return {"on_failure", "on_success"}

    def after_declare_actor(self, broker: Broker, actor: Actor[Any, Any]) -> None:
        for name in ("on_success", "on_failure"):
            target = actor.options.get(name)
            self._by_actor[actor.actor_name, name] = getattr(target, "actor_name", target)

    def after_process_message(
        self, broker: Broker, message: MessageProxy, *, result: Any = None, exception: BaseException | None = None
    ) -> None:
        name = "on_success" if exception is None else "on_failure"
        target = message.options.get(name) or self._by_actor.get((message.actor_name, name))
        if not target:
            return
        callback = broker.get_actor(target)
        if exception is None:
            callback.send(message.asdict(), result)
        else:
            callback.send(message.asdict(), {"type": type(exception).__name__, "message": str(exception)})
