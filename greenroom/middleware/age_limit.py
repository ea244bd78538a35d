"""Dead-letter messages that waited too long before they could run."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..common import current_millis
from ..logging import get_logger
from .middleware import Middleware, SkipMessage

if TYPE_CHECKING:
    from ..actor import Actor
    from ..broker import Broker, MessageProxy

__all__ = ["AgeLimit"]


class AgeLimit(Middleware):
    """Skip and dead-letter a message older than ``max_age`` ms when it is about to run.

    The age is counted from ``message_timestamp``, which survives retries and delays.

    Parameters:
      max_age: The default limit in milliseconds; ``None`` means no limit.
    """

    def __init__(self, *, max_age: int | None = None) -> None:
        self.logger = get_logger(__name__, type(self))
        self.max_age = max_age
        #: Actor name → its own limit, for actors that set one (read once, at declaration).
        self._by_actor: dict[str, int | None] = {}

    @property
    def actor_options(self) -> set[str]:
        return {"max_age"}

    def after_declare_actor(self, broker: Broker, actor: Actor[Any, Any]) -> None:
        if "max_age" in actor.options:
            self._by_actor[actor.actor_name] = actor.options["max_age"]

    def before_process_message(self, broker: Broker, message: MessageProxy) -> None:
        max_age = message.options.get("max_age") or self._by_actor.get(message.actor_name, self.max_age)
        if not max_age:
            return
        age_ms = current_millis() - message.message_timestamp
        if age_ms >= max_age:
            self.logger.warning(
                "Message %r has exceeded its age limit (%d ms >= %d ms).", message.message_id, age_ms, max_age
            )
            message.fail()
            raise SkipMessage("Message age limit exceeded")
