"""Messages: the seven-field envelope that travels between producers and workers."""

from __future__ import annotations

import dataclasses
import datetime
import time
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from . import _globals
from .errors import DecodeError

if TYPE_CHECKING:
    from .composition import pipeline
    from .results import ResultBackend

__all__ = ["Message", "generate_unique_id"]

R = TypeVar("R")

#: The keys of the envelope, in wire order.
FIELDS = ("queue_name", "actor_name", "args", "kwargs", "options", "message_id", "message_timestamp")
_REQUIRED = frozenset(FIELDS[:5])


def generate_unique_id() -> str:
    """A fresh message id: a lower-case hyphenated UUID4."""
    return str(uuid.uuid4())


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclasses.dataclass(frozen=True)
class Message(Generic[R]):
    """A message: which actor to run, with what arguments, and the options middleware reads.

    ``options`` is a plain dict that middleware mutates in place (retry counts, tracebacks...);
    keys greenroom does not know are kept untouched.
    """

    queue_name: str
    actor_name: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    options: dict[str, Any]
    message_id: str = dataclasses.field(default_factory=generate_unique_id)
    message_timestamp: int = dataclasses.field(default_factory=_now_ms)

    def __post_init__(self) -> None:
        if type(self.args) is not tuple:
            object.__setattr__(self, "args", tuple(self.args))

    @classmethod
    def decode(cls, data: bytes) -> Message[Any]:
        """Decode a payload with the global encoder.

        Raises:
          DecodeError: When the payload is not a valid message, for any reason (see :func:`validate`).
        """
        try:
            fields = _globals.get_encoder().decode(data)
            return cls(**validate(fields))
        except DecodeError:
            raise
        except RecursionError as exc:
            raise DecodeError("message is nested too deeply to decode", data, exc) from exc
        except Exception as exc:
            raise DecodeError(f"payload is not a valid message: {type(exc).__name__}: {exc}", data, exc) from exc

    def encode(self) -> bytes:
        """Encode the message with the global encoder."""
        return _globals.get_encoder().encode(self.asdict())

    def asdict(self) -> dict[str, Any]:
        """The message as a dict (shallow: args, kwargs and options are the same objects)."""
        return {
            "queue_name": self.queue_name,
            "actor_name": self.actor_name,
            "args": self.args,
            "kwargs": self.kwargs,
            "options": self.options,
            "message_id": self.message_id,
            "message_timestamp": self.message_timestamp,
        }

    # namedtuple compatibility
    _asdict = asdict
    _fields = FIELDS

    def copy(self, **attributes: Any) -> Message[R]:
        """A copy with some attributes replaced; ``options`` given here are merged over the current ones."""
        updated_options = attributes.pop("options", None)
        if updated_options is not None:
            attributes["options"] = {**self.options, **updated_options}
        else:
            attributes["options"] = dict(self.options)
        return dataclasses.replace(self, **attributes)

    _replace = copy

    def get_result(self, *, backend: ResultBackend | None = None, block: bool = False, timeout: int | None = None) -> R:
        """Fetch this message's result from a results backend (the global broker's by default)."""
        if backend is None:
            backend = _globals.get_broker().get_results_backend()
        result: R = backend.get_result(self, block=block, timeout=timeout)
        return result

    @property
    def message_datetime(self) -> datetime.datetime:
        """``message_timestamp`` as an aware UTC datetime."""
        return datetime.datetime.fromtimestamp(self.message_timestamp / 1000, tz=datetime.timezone.utc)

    def __or__(self, other: Any) -> pipeline:
        from .composition import pipeline  # composition is a higher layer: imported on use

        return pipeline([self, other])

    def __lt__(self, other: Message[Any]) -> bool:
        return dataclasses.astuple(self) < dataclasses.astuple(other)

    def __str__(self) -> str:
        params = ", ".join(repr(arg) for arg in self.args)
        if self.kwargs:
            params += ", " if params else ""
            params += ", ".join(f"{name}={value!r}" for name, value in self.kwargs.items())
        return f"{self.actor_name}({params})"


Message._field_defaults = {}  # type: ignore[attr-defined]  # namedtuple compatibility

_TYPES: tuple[tuple[str, type | tuple[type, ...]], ...] = (
    ("queue_name", str),
    ("actor_name", str),
    ("args", list),
    ("kwargs", dict),
    ("options", dict),
)


def validate(fields: object) -> dict[str, Any]:
    """Check that a decoded mapping is a well-formed envelope and return it with ``args`` as a tuple.

    Raises:
      DecodeError: When it is not a mapping, misses a required key, has an unknown key, or a field
        has the wrong type.
    """
    if not isinstance(fields, Mapping):
        raise DecodeError(f"a message must be an object, not {type(fields).__name__}", fields, None)
    unknown = fields.keys() - set(FIELDS)
    if unknown:
        raise DecodeError(f"unknown message fields: {', '.join(sorted(map(str, unknown)))}", fields, None)
    missing = _REQUIRED - fields.keys()
    if missing:
        raise DecodeError(f"missing message fields: {', '.join(sorted(missing))}", fields, None)
    for name, expected in _TYPES:
        value = fields[name]
        if not isinstance(value, expected) and not (name == "args" and isinstance(value, tuple)):
            raise DecodeError(f"message field {name!r} must not be {type(value).__name__}", fields, None)
    if not all(isinstance(key, str) for key in fields["kwargs"]):
        raise DecodeError("message field 'kwargs' must have string keys", fields, None)
    if "message_id" in fields and not isinstance(fields["message_id"], str):
        raise DecodeError("message field 'message_id' must be a string", fields, None)
    timestamp = fields.get("message_timestamp", 0)
    if isinstance(timestamp, bool) or not isinstance(timestamp, (int, float)):
        raise DecodeError("message field 'message_timestamp' must be a number", fields, None)
    return {**fields, "args": tuple(fields["args"])}
