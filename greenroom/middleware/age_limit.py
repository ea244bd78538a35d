"""Dead-letter messages that waited too long before they could run."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .._options import NO_OPTIONS, resolve_option, select_options
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
        #: Actor name → the options of this middleware that the actor sets (read once, at declaration).
        self._actor_options: dict[str, Mapping[str, Any]] = {}

    @property
    def actor_options(self) -> set[str]:
        return {"max_age"}

    def after_declare_actor(self, broker: Broker, actor: Actor[Any, Any]) -> None:
        self._actor_options[actor.actor_name] = select_options(actor.options, self.actor_options)

    def before_process_message(self, broker: Broker, message: MessageProxy) -> None:
        actor_options = self._actor_options.get(message.actor_name, NO_OPTIONS)
        max_age = resolve_option("max_age", message.options, actor_options, self.max_age)
        if not max_age:
            return
        age_ms = current_millis() - message.message_timestamp
        if age_ms >= max_age:
            self.logger.warning(
                "Message %r has exceeded its age limit (%d ms >= %d ms).", message.message_id, age_ms, max_age
            )
            message.fail()
            raise SkipMessage("Message age limit exceeded")
