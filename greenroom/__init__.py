"""greenroom: fast, reliable background task processing, wire-compatible with Dramatiq."""

from typing import Any

from ._globals import get_broker, get_encoder, set_broker, set_encoder
from .actor import Actor, actor
from .broker import Broker, Consumer, MessageProxy
from .composition import group, pipeline
from .encoder import Encoder, JSONEncoder, PickleEncoder
from .errors import (
    ActorNotFound,
    BrokerConnectionError,
    BrokerError,
    ConnectionClosed,
    ConnectionFailed,
    DecodeError,
    DramatiqError,
    GreenroomError,
    QueueJoinTimeout,
    QueueNotFound,
    RateLimitExceeded,
    Retry,
)
from .generic import GenericActor
from .logging import get_logger
from .message import Message
from .middleware import Middleware
from .worker import ConsumerThread, Worker, WorkerThread

__version__ = "0.1.0"

__all__ = [
    "Actor",
    "ActorNotFound",
    "Broker",
    "BrokerConnectionError",
    "BrokerError",
    "ConnectionClosed",
    "ConnectionFailed",
    "Consumer",
    "ConsumerThread",
    "DecodeError",
    "DramatiqError",
    "Encoder",
    "GenericActor",
    "GreenroomError",
    "JSONEncoder",
    "Message",
    "MessageProxy",
    "Middleware",
    "PickleEncoder",
    "QueueJoinTimeout",
    "QueueNotFound",
    "RateLimitExceeded",
    "Retry",
    "Worker",
    "WorkerThread",
    "actor",
    "get_broker",
    "get_encoder",
    "get_logger",
    "group",
    "pipeline",
    "set_broker",
    "set_encoder",
]


def __getattr__(name: str) -> Any:
    if name == "ConnectionError":
        from . import errors

        return errors.ConnectionError
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
