"""Encoders turn message mappings into bytes and back."""

from __future__ import annotations

import abc
import json
import pickle
from typing import Any

__all__ = ["Encoder", "JSONEncoder", "MessageData", "PickleEncoder"]

#: The mapping form of a message.
MessageData = dict[str, Any]


class Encoder(abc.ABC):
    """Base class for message encoders."""

    @abc.abstractmethod
    def encode(self, data: MessageData) -> bytes:
        """Convert a mapping to bytes."""

    @abc.abstractmethod
    def decode(self, data: bytes) -> MessageData:
        """Convert bytes to a mapping."""


#: What ``json.dumps(data, separators=(",", ":"))`` uses, built once instead of on every call.
_compact_json = json.JSONEncoder(separators=(",", ":")).encode


class JSONEncoder(Encoder):
    """Compact JSON in UTF-8: the wire format every language can produce."""

    def encode(self, data: MessageData) -> bytes:
        """Encode ``data``; raises ``TypeError`` for anything JSON cannot represent, circular data included."""
        try:
            return _compact_json(data).encode("utf-8")
        except ValueError as exc:  # the json module reports a circular reference as a ValueError
            raise TypeError(f"the message cannot be encoded as JSON: {exc}") from exc

    def decode(self, data: bytes) -> MessageData:
        text = bytes(data).decode("utf-8") if isinstance(data, (bytes, bytearray, memoryview)) else data
        result: MessageData = json.loads(text)
        return result


class PickleEncoder(Encoder):
    """Pickle: any Python object, but insecure and Python-only."""

    def encode(self, data: MessageData) -> bytes:
        return pickle.dumps(data)

    def decode(self, data: bytes) -> MessageData:
        result: MessageData = pickle.loads(data)
        return result
