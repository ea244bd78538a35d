"""The exceptions greenroom raises.

The tree (Dramatiq's class names are kept so existing ``except`` clauses keep working)::

    GreenroomError (alias DramatiqError)
     ├── DecodeError                 a payload could not be turned into a Message
     ├── BrokerError
     │    ├── ActorNotFound
     │    ├── QueueNotFound
     │    └── BrokerConnectionError  (deprecated alias: ConnectionError)
     │         ├── ConnectionFailed
     │         └── ConnectionClosed
     ├── QueueJoinTimeout
     ├── RateLimitExceeded
     ├── Retry                       raised by an actor to ask for a retry
     └── ResultError                 (also importable from greenroom.results)
          ├── ResultMissing
          ├── ResultTimeout
          └── ResultFailure

    MiddlewareError (an Exception, as in Dramatiq; also importable from greenroom.middleware)
     └── SkipMessage

``Interrupt`` and its subclasses live in :mod:`greenroom.threading` and derive from
``BaseException`` so that ``except Exception`` in user code cannot swallow them.

The result and middleware errors are defined here, at the bottom of the package, because the core
raises or catches them (the worker catches ``SkipMessage``, ``group`` catches ``ResultMissing``)
and must not import the packages above it that present them.
"""

from __future__ import annotations

import warnings
from typing import Any

__all__ = [
    "ActorNotFound",
    "BrokerConnectionError",
    "BrokerError",
    "Cancelled",
    "ConnectionClosed",
    "ConnectionFailed",
    "DecodeError",
    "DramatiqError",
    "GreenroomError",
    "Interrupt",
    "MiddlewareError",
    "QueueJoinTimeout",
    "QueueNotFound",
    "RateLimitExceeded",
    "ResultError",
    "ResultFailure",
    "ResultMissing",
    "ResultTimeout",
    "Retry",
    "SkipMessage",
]


class GreenroomError(Exception):
    """Base class for every error greenroom raises."""

    def __init__(self, message: object) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return str(self.message) or repr(self.message)


#: Drop-in alias for code written against Dramatiq.
DramatiqError = GreenroomError


class DecodeError(GreenroomError):
    """A payload could not be decoded into a message.

    Parameters:
      message: What went wrong.
      data: The raw payload.
      error: The underlying exception.
    """

    def __init__(self, message: str, data: object, error: BaseException | None) -> None:
        super().__init__(message)
        self.data = data
        self.error = error


class BrokerError(GreenroomError):
    """A broker could not do what was asked of it: the parent of every broker failure."""


class ActorNotFound(BrokerError):
    """No actor with the given name is declared on the broker."""


class QueueNotFound(BrokerError):
    """The queue was never declared."""


class BrokerConnectionError(BrokerError):
    """The broker could not be reached, or its connection broke."""


class ConnectionFailed(BrokerConnectionError):
    """A connection to the broker could not be opened."""


class ConnectionClosed(BrokerConnectionError):
    """The connection to the broker was closed, or an operation on it failed."""


class QueueJoinTimeout(GreenroomError):
    """A ``join`` did not finish within its timeout."""


class RateLimitExceeded(GreenroomError):
    """A rate limiter refused to be acquired."""


class Retry(GreenroomError):
    """Raised by an actor to have its message retried.

    Parameters:
      message: Optional text for the logs.
      delay: How long to wait before the retry, in milliseconds; ``None`` uses the backoff.
    """

    def __init__(self, message: str = "", delay: int | None = None) -> None:
        super().__init__(message)
        self.delay = delay


class ResultError(GreenroomError):
    """Base class for result errors."""


class ResultTimeout(ResultError):
    """A blocking ``get_result`` ran out of time before the result was stored."""


class ResultMissing(ResultError):
    """A non-blocking ``get_result`` found no result (yet, or any more: results expire)."""


class ResultFailure(ResultError):
    """The message failed for good; its actor's exception was stored in place of a result.

    Parameters:
      message: The error text, ``"actor raised <type>: <message>"``.
      orig_exc_type: The name of the actor's exception class.
      orig_exc_msg: ``str()`` of the actor's exception.
    """

    def __init__(self, message: str = "", orig_exc_type: str = "", orig_exc_msg: str = "") -> None:
        super().__init__(message)
        self.orig_exc_type = orig_exc_type
        self.orig_exc_msg = orig_exc_msg


class Interrupt(BaseException):
    """Raised asynchronously into a thread. A ``BaseException`` so ``except Exception`` cannot swallow it.

    :mod:`greenroom.threading` delivers it, only into an actor's own code.
    """


class Cancelled(Interrupt):
    """Ends a message that was cancelled with :func:`greenroom.cancel`.

    Raised into a running actor (as a time limit is), or instead of running one that had not
    started. A cancelled message is dead-lettered with the reason ``cancelled`` and never retried.
    """

    def __init__(self, message_id: str = "") -> None:
        super().__init__(message_id)
        self.message_id = message_id

    def __repr__(self) -> str:
        # The dead letter's reason: the word operators filter on, then which message it was.
        return f"cancelled (message {self.message_id})" if self.message_id else "cancelled"

    __str__ = __repr__


class MiddlewareError(Exception):
    """Base class for exceptions a ``before_*`` middleware hook raises to abort an operation."""


class SkipMessage(MiddlewareError):
    """Raised by ``before_process_message`` to skip a message without running its actor."""


def __getattr__(name: str) -> Any:
    if name == "ConnectionError":
        warnings.warn(
            "greenroom.errors.ConnectionError is deprecated, use BrokerConnectionError.",
            DeprecationWarning,
            stacklevel=2,
        )
        return BrokerConnectionError
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
