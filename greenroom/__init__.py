"""greenroom: fast, reliable background task processing, wire-compatible with Dramatiq.

Besides re-exporting the public names, this module wires the layers: the modules at the bottom of
the package build the default broker, the default middleware and pipelines on demand, but cannot
import them, so they are registered with :mod:`greenroom._globals` here, from the top.
"""

from typing import Any

from . import _globals
from . import middleware as _middleware
from ._globals import get_encoder, set_encoder
from .actor import Actor, actor
from .broker import Broker, Consumer, MessageProxy, get_broker, set_broker
from .brokers._url import default_broker as _default_broker
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
from .jobs import CancelResult, JobStatus, JobTracking, cancel, get_status, set_progress
from .logging import get_logger
from .message import Message
from .middleware import Middleware
from .scheduling import schedule
from .worker import ConsumerThread, Worker, WorkerThread

__version__ = "0.1.0"


def _default_middleware() -> list[Middleware]:
    """One instance of each class of ``greenroom.middleware.default_middleware``, read when a broker is built."""
    return [middleware_class() for middleware_class in _middleware.default_middleware]


_globals.register_defaults(broker=_default_broker, middleware=_default_middleware, pipeline=pipeline)

__all__ = [
    "Actor",
    "ActorNotFound",
    "Broker",
    "CancelResult",
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
    "JobStatus",
    "JobTracking",
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
    "cancel",
    "get_broker",
    "get_encoder",
    "get_logger",
    "get_status",
    "group",
    "pipeline",
    "schedule",
    "set_broker",
    "set_encoder",
    "set_progress",
]


def __getattr__(name: str) -> Any:
    if name == "ConnectionError":
        from . import errors

        return errors.ConnectionError
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
