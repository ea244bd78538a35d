"""Enqueue the next step of a pipeline when a step succeeds."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .._options import NO_OPTIONS, resolve_option
from ..logging import get_logger
from ..message import Message
from .middleware import Middleware, enqueue_or_fail

if TYPE_CHECKING:
    from ..broker import Broker, MessageProxy

__all__ = ["Pipelines"]


class Pipelines(Middleware):
    """Send ``pipe_target`` after a successful step, with the step's result appended unless ``pipe_ignore``."""

    def __init__(self) -> None:
        self.logger = get_logger(__name__, type(self))

    @property
    def actor_options(self) -> set[str]:
        return {"pipe_ignore", "pipe_target"}

    def after_process_message(
        self, broker: Broker, message: MessageProxy, *, result: Any = None, exception: BaseException | None = None
    ) -> None:
        if exception is not None or message.failed:
            return
        target = message.options.get("pipe_target")
        if target is None:
            return
        next_message: Message[Any] = Message(**target)
        # As in Dramatiq: the next message's option, else the option of the actor that just ran.
        actor = broker.actors.get(message.actor_name)
        actor_options = actor.options if actor is not None else NO_OPTIONS
        if not resolve_option("pipe_ignore", next_message.options, actor_options, False):
            next_message = next_message.copy(args=(*next_message.args, result))
        delay = next_message.options.get("delay")
        enqueue_or_fail(broker, message, next_message, delay, self.logger, "the next pipeline step")
