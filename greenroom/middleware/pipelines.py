"""Enqueue the next step of a pipeline when a step succeeds."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

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
        pipe_ignore = next_message.options.get("pipe_ignore")
        if not pipe_ignore:
            actor = broker.actors.get(message.actor_name)
            pipe_ignore = actor.options.get("pipe_ignore") if actor is not None else False
        if not pipe_ignore:
            next_message = next_message.copy(args=(*next_message.args, result))
        delay = next_message.options.get("delay")
        enqueue_or_fail(broker, message, next_message, delay, self.logger, "the next pipeline step")
