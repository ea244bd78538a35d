"""Make the message being processed available to the actor's code."""

from __future__ import annotations

import contextvars
from typing import TYPE_CHECKING, Any

from .middleware import Middleware

if TYPE_CHECKING:
    from ..broker import Broker, MessageProxy

__all__ = ["CurrentMessage"]

_current: contextvars.ContextVar[MessageProxy | None] = contextvars.ContextVar(
    "greenroom_current_message", default=None
)
#: Reset tokens by thread context; only the thread that set a value resets it.
_tokens: contextvars.ContextVar[contextvars.Token[MessageProxy | None] | None] = contextvars.ContextVar(
    "greenroom_current_message_token", default=None
)


class CurrentMessage(Middleware):
    """Expose the message being processed through :meth:`get_current_message`.

    It uses context variables, so asyncio actors see it too.
    """

    @classmethod
    def get_current_message(cls) -> MessageProxy | None:
        """The message the current thread (or task) is processing, if any."""
        return _current.get()

    def before_process_message(self, broker: Broker, message: MessageProxy) -> None:
        _tokens.set(_current.set(message))

    def after_process_message(
        self, broker: Broker, message: MessageProxy, *, result: Any = None, exception: BaseException | None = None
    ) -> None:
        self._reset()

    def after_skip_message(self, broker: Broker, message: MessageProxy) -> None:
        self._reset()

    @staticmethod
    def _reset() -> None:
        token = _tokens.get()
        if token is not None:
            _current.reset(token)
            _tokens.set(None)
