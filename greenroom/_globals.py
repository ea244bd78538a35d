"""The only module-level mutable state in greenroom: the global broker and encoder, and the registered defaults.

This module sits at the bottom of the package, with the encoder, so that messages can read the
encoder. Everything it holds that is defined higher up (brokers, middleware, pipelines) it names
through protocols or plain callables, and the higher layers fill it:

* ``greenroom/__init__`` registers the factories of the default broker, of the default middleware
  and of pipelines (:func:`register_defaults`), once, when the package is imported;
* :func:`greenroom.broker.get_broker` and :func:`greenroom.broker.set_broker` are the typed public
  faces of the broker slot.

The global broker and encoder are read on hot paths (every encode/decode reads the encoder), so
reads are plain attribute loads; writes and the lazy creation of the default broker are
serialised by ``_lock``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

from ._hooks import MiddlewareLike
from ._types import GlobalBroker
from .encoder import Encoder, JSONEncoder

__all__ = [
    "build_default_middleware",
    "build_pipeline",
    "get_broker",
    "get_encoder",
    "register_defaults",
    "set_broker",
    "set_encoder",
]

#: Serialises set_broker/set_encoder, the registration of the defaults and the lazy creation of
#: the default broker.
_lock = threading.Lock()
_broker: GlobalBroker | None = None
_encoder: Encoder = JSONEncoder()

#: Registered by ``greenroom/__init__`` (see :func:`register_defaults`); read under no lock, as
#: they are written once, before any caller can reach them.
_default_broker_factory: Callable[[], GlobalBroker] | None = None
_default_middleware_factory: Callable[[], Sequence[MiddlewareLike]] | None = None
_pipeline_factory: Callable[[Sequence[Any]], Any] | None = None


def register_defaults(
    *,
    broker: Callable[[], GlobalBroker],
    middleware: Callable[[], Sequence[MiddlewareLike]],
    pipeline: Callable[[Sequence[Any]], Any],
) -> None:
    """Register what the lower layers build on demand but cannot import.

    Parameters:
      broker: Creates the global broker when none was set (it must open no file or socket).
      middleware: Creates the middleware a broker built without an explicit list installs.
      pipeline: Builds a pipeline from messages (``message | message``).
    """
    global _default_broker_factory, _default_middleware_factory, _pipeline_factory
    with _lock:
        _default_broker_factory = broker
        _default_middleware_factory = middleware
        _pipeline_factory = pipeline


def _registered(factory: Callable[..., Any] | None, what: str) -> Callable[..., Any]:
    if factory is None:
        raise RuntimeError(f"no {what} is registered: greenroom/__init__ registers it when greenroom is imported")
    return factory


def get_encoder() -> Encoder:
    """The process-global encoder used by every ``Message.encode``/``decode``."""
    return _encoder


def set_encoder(encoder: Encoder) -> None:
    """Replace the process-global encoder. Producers and workers must agree on it."""
    global _encoder
    with _lock:
        _encoder = encoder


def get_broker() -> GlobalBroker:
    """The global broker, created by the registered default-broker factory on first use when none was set.

    :func:`greenroom.broker.get_broker` is the public, fully typed version.
    """
    broker = _broker
    if broker is not None:
        return broker
    with _lock:
        if _broker is None:
            _set_broker_locked(_registered(_default_broker_factory, "default broker")())
        assert _broker is not None
        return _broker


def set_broker(broker: GlobalBroker) -> None:
    """Make ``broker`` the global broker."""
    with _lock:
        _set_broker_locked(broker)


def _set_broker_locked(broker: GlobalBroker) -> None:
    global _broker
    _broker = broker


def build_default_middleware() -> list[MiddlewareLike]:
    """New instances of the default middleware, for a broker given no middleware list."""
    factory: Callable[[], Sequence[MiddlewareLike]] = _registered(_default_middleware_factory, "default middleware")
    return list(factory())


def build_pipeline(messages: Sequence[Any]) -> Any:
    """A :class:`greenroom.pipeline` of ``messages``, built by the registered pipeline factory."""
    return _registered(_pipeline_factory, "pipeline factory")(messages)
