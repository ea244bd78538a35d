"""Messages: the seven-field envelope that travels between producers and workers."""

from __future__ import annotations

import dataclasses
import datetime
import itertools
import os
import random
from collections.abc import Mapping
from typing import Any, Generic, TypeVar

from . import _globals
from ._types import ResultBackendLike
from .common import current_millis
from .errors import DecodeError

__all__ = ["Message", "generate_unique_id"]

R = TypeVar("R")

#: The keys of the envelope, in wire order.
FIELDS = ("queue_name", "actor_name", "args", "kwargs", "options", "message_id", "message_timestamp")
_ALL = frozenset(FIELDS)
_REQUIRED = frozenset(FIELDS[:5])


#: Random bits for ids: a private generator (``random.seed`` elsewhere cannot make ids repeat), seeded
#: from the OS and seeded again in every forked child. It spares a system call per id over ``uuid4()``.
_id_source = random.Random()
os.register_at_fork(after_in_child=_id_source.seed)


def generate_unique_id() -> str:
    """A fresh message id: a lower-case hyphenated random UUID (version 4, as ``str(uuid.uuid4())``)."""
    h = f"{_id_source.getrandbits(128):032x}"
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) & 3]}{h[17:20]}-{h[20:]}"


def _new_sequence() -> None:
    global _sequence_prefix, _sequence
    _sequence_prefix = generate_unique_id()[:24]
    _sequence = itertools.count()


_sequence_prefix = ""
_sequence = itertools.count()
_new_sequence()
os.register_at_fork(after_in_child=_new_sequence)


def sequential_id() -> str:
    """An id shaped like a UUID: a random prefix drawn once per process (again in forked children),
    then a 12-digit counter. As unique as :func:`generate_unique_id`, and cheaper to make."""
    return f"{_sequence_prefix}{next(_sequence) & 0xFFFFFFFFFFFF:012x}"


@dataclasses.dataclass(frozen=True, init=False)
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
    message_id: str
    message_timestamp: int

    def __init__(
        self,
        queue_name: str,
        actor_name: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        options: dict[str, Any],
        message_id: str | None = None,
        message_timestamp: int | None = None,
    ) -> None:
        # The generated __init__ of a frozen dataclass sets each field through object.__setattr__ and
        # costs more than twice this; every message built goes through here.
        self.__dict__.update(
            queue_name=queue_name,
            actor_name=actor_name,
            args=args if type(args) is tuple else tuple(args),
            kwargs=kwargs,
            options=options,
            message_id=generate_unique_id() if message_id is None else message_id,
            message_timestamp=current_millis() if message_timestamp is None else message_timestamp,
        )

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

    def get_result(
        self, *, backend: ResultBackendLike | None = None, block: bool = False, timeout: int | None = None
    ) -> R:
        """Fetch this message's result from a results backend (the global broker's by default)."""
        if backend is None:
            backend = _globals.get_broker().get_results_backend()
        result: R = backend.get_result(self, block=block, timeout=timeout)
        return result

    @property
    def message_datetime(self) -> datetime.datetime:
        """``message_timestamp`` as an aware UTC datetime."""
        return datetime.datetime.fromtimestamp(self.message_timestamp / 1000, tz=datetime.timezone.utc)

    def __or__(self, other: Any) -> Any:
        """``message | other`` is ``pipeline([message, other])`` (a :class:`greenroom.pipeline`).

        The composition module sits above this one, so the pipeline is built by the factory that
        ``greenroom/__init__`` registers with :mod:`greenroom._globals`.
        """
        return _globals.build_pipeline([self, other])

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
    ("args", (list, tuple)),
    ("kwargs", dict),
    ("options", dict),
)


def validate(fields: object) -> Mapping[str, Any]:
    """Check that a decoded mapping is a well-formed envelope and return it (``Message`` makes ``args`` a tuple).

    Raises:
      DecodeError: When it is not a mapping, misses a required key, has an unknown key, or a field
        has the wrong type.
    """
    if not isinstance(fields, Mapping):
        raise DecodeError(f"a message must be an object, not {type(fields).__name__}", fields, None)
    unknown = fields.keys() - _ALL
    if unknown:
        raise DecodeError(f"unknown message fields: {', '.join(sorted(map(str, unknown)))}", fields, None)
    missing = _REQUIRED - fields.keys()
    if missing:
        raise DecodeError(f"missing message fields: {', '.join(sorted(missing))}", fields, None)
    for name, expected in _TYPES:
        value = fields[name]
        if not isinstance(value, expected):
            raise DecodeError(f"message field {name!r} must not be {type(value).__name__}", fields, None)
    if not all(isinstance(key, str) for key in fields["kwargs"]):
        raise DecodeError("message field 'kwargs' must have string keys", fields, None)
    if "message_id" in fields and not isinstance(fields["message_id"], str):
        raise DecodeError("message field 'message_id' must be a string", fields, None)
    timestamp = fields.get("message_timestamp", 0)
    if isinstance(timestamp, bool) or not isinstance(timestamp, (int, float)):
        raise DecodeError("message field 'message_timestamp' must be a number", fields, None)
    return fields
