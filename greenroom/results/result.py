"""How results and failures are represented in a results backend.

A result is stored as itself (encoded with the backend's encoder). A failure is stored as a small
mapping carrying a marker; its key and marker value are Dramatiq's, so results written by either
system can be read by the other.
"""

from __future__ import annotations

import enum
from typing import Any, Final

from .errors import ResultFailure

__all__ = ["Missing", "MissingType", "unwrap_result", "wrap_exception", "wrap_result"]

#: Marks a stored failure. Kept byte-for-byte compatible with Dramatiq.
_MARKER_KEY: Final = "__t"
_MARKER: Final = "dramatiq.results.Result"


class MissingType(enum.Enum):
    """The type of :data:`Missing`."""

    Missing = "Missing"

    def __repr__(self) -> str:
        return "Missing"


#: Returned by backend primitives when no result is stored under a key.
Missing: Final = MissingType.Missing


def wrap_result(result: Any) -> Any:
    """The value to store for a successful result (the result itself)."""
    return result


def wrap_exception(exception: BaseException) -> dict[str, Any]:
    """The value to store for a failure: the exception's class name and text."""
    return {_MARKER_KEY: _MARKER, "exn": {"type": type(exception).__name__, "msg": str(exception)}}


def unwrap_result(value: Any) -> Any:
    """Turn a stored value back into a result.

    Raises:
      ResultFailure: When the stored value is a failure.
    """
    if isinstance(value, dict) and value.get(_MARKER_KEY) == _MARKER:
        exn = value.get("exn") or {}
        exc_type = str(exn.get("type", ""))
        exc_msg = str(exn.get("msg", ""))
        raise ResultFailure(f"actor raised {exc_type}: {exc_msg}", exc_type, exc_msg)
    return value
