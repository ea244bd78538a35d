"""Enqueue the next step of a pipeline when a step succeeds."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..logging import get_logger
from ..message import Message
from .middleware import Middleware

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
        pipe_ignore = next_message.options.get("pipe_ignore")
        if not pipe_ignore:
            actor = broker.actors.get(message.actor_name)
            pipe_ignore = actor.options.get("pipe_ignore") if actor is not None else False
        if not pipe_ignore:
            next_message = next_message.copy(args=(*next_message.args, result))
        try:
            broker.enqueue(next_message, delay=next_message.options.get("delay"))
        except Exception:
            # Keep this step as a dead letter rather than ack it and lose the rest of the pipeline.
            self.logger.error(
                "Could not enqueue the next step of pipeline message %r; dead-lettering it.",
                message.message_id,
                exc_info=True,
            )
            message.fail()
