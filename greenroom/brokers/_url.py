"""Creating a broker from a URL (``greenroom_broker_url``), and the default global broker."""

from __future__ import annotations

import importlib
import os
from typing import Any
from urllib.parse import urlsplit

from .. import _settings
from .._settings import DEFAULT_SQLITE_PATH
from ..broker import Broker

__all__ = ["DEFAULT_SQLITE_PATH", "broker_from_url", "default_broker"]

#: scheme → (module, class, extra to install).
_SCHEMES: dict[str, tuple[str, str, str | None]] = {
    "sqlite": ("greenroom.brokers.sqlite", "SQLiteBroker", None),
    "redis": ("greenroom.brokers.redis", "RedisBroker", "redis"),
    "rediss": ("greenroom.brokers.redis", "RedisBroker", "redis"),
    "amqp": ("greenroom.brokers.rabbitmq", "RabbitmqBroker", "rabbitmq"),
    "amqps": ("greenroom.brokers.rabbitmq", "RabbitmqBroker", "rabbitmq"),
    "memory": ("greenroom.brokers.stub", "StubBroker", None),
    "postgresql": ("greenroom.brokers.postgres", "PostgresBroker", "postgres"),
    "postgres": ("greenroom.brokers.postgres", "PostgresBroker", "postgres"),
}


def broker_from_url(url: str) -> Broker:
    """Create (without connecting) the broker a URL names; an empty URL is the default SQLite broker.

    Raises:
      ValueError: For a URL with an unknown scheme.
      ImportError: When the broker's extra is not installed; the message names it.
    """
    scheme = urlsplit(url).scheme.lower() if url else "sqlite"
    if scheme not in _SCHEMES:
        known = ", ".join(f"{s}://" for s in _SCHEMES)
        raise ValueError(f"unknown broker URL scheme {scheme!r} in greenroom_broker_url; use one of {known}")
    module_name, class_name, extra = _SCHEMES[scheme]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        if extra is None:
            raise
        raise ImportError(f"the {scheme}:// broker needs its extra: pip install 'greenroom[{extra}]' ({exc})") from exc
    broker_class: Any = getattr(module, class_name)
    if scheme == "sqlite":
        path = _sqlite_path(url) if url else DEFAULT_SQLITE_PATH
        broker: Broker = broker_class(path=path)
    elif scheme == "memory":
        broker = broker_class()
    else:
        broker = broker_class(url=url)
    return broker


def _sqlite_path(url: str) -> str:
    """``sqlite:///relative.db`` → ``relative.db``; ``sqlite:////abs/path.db`` → ``/abs/path.db``."""
    path = url[len("sqlite://") :]
    if path.startswith("/"):
        path = path[1:]
    return os.path.expanduser(path) or DEFAULT_SQLITE_PATH


def default_broker() -> Broker:
    """The broker ``get_broker()`` creates when none was set: the one ``greenroom_broker_url`` names.

    ``greenroom/__init__`` registers this function with :mod:`greenroom._globals`. With no URL
    configured it is the SQLite broker on :data:`DEFAULT_SQLITE_PATH`; nothing is opened yet.
    """
    return broker_from_url(_settings.broker_url() or "")
