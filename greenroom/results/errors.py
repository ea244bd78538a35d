"""Errors raised when fetching results."""

from __future__ import annotations

from ..errors import GreenroomError

__all__ = ["ResultError", "ResultFailure", "ResultMissing", "ResultTimeout"]


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
