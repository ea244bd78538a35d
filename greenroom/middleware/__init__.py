"""Middleware: every feature beyond moving messages is one of these."""

from ..threading import Interrupt, raise_thread_exception
from .age_limit import AgeLimit
from .callbacks import Callbacks
from .current_message import CurrentMessage
from .middleware import Middleware, MiddlewareError, SkipMessage
from .pipelines import Pipelines
from .retries import Retries
from .shutdown import Shutdown, ShutdownNotifications
from .time_limit import TimeLimit, TimeLimitExceeded

__all__ = [
    "AgeLimit",
    "AsyncIO",
    "Callbacks",
    "CurrentMessage",
    "GroupCallbacks",
    "Interrupt",
    "Middleware",
    "MiddlewareError",
    "Pipelines",
    "Retries",
    "Shutdown",
    "ShutdownNotifications",
    "SkipMessage",
    "TimeLimit",
    "TimeLimitExceeded",
    "default_middleware",
    "raise_thread_exception",
]

#: The middleware a broker installs when it is given none, in order.
default_middleware: list[type[Middleware]] = [AgeLimit, TimeLimit, ShutdownNotifications, Callbacks, Pipelines, Retries]


def __getattr__(name: str) -> object:
    # Optional middleware that need higher layers or extras, imported on first use.
    if name == "AsyncIO":
        from .asyncio import AsyncIO

        return AsyncIO
    if name == "GroupCallbacks":
        from .group_callbacks import GroupCallbacks

        return GroupCallbacks
    if name == "Prometheus":
        from .prometheus import Prometheus

        return Prometheus
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
