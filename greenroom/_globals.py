"""The only module-level mutable state in greenroom: the global broker and the global encoder.

Both are read on hot paths (every encode/decode reads the encoder), so reads are plain attribute
loads; writes and the lazy creation of the default broker are serialised by ``_lock``.
"""

from __future__ import annotations

import importlib
import os
import threading
from typing import TYPE_CHECKING

from .encoder import Encoder, JSONEncoder

if TYPE_CHECKING:
    from .broker import Broker

#: Serialises set_broker/set_encoder and the lazy creation of the default broker.
_lock = threading.Lock()
_broker: Broker | None = None
_encoder: Encoder = JSONEncoder()

#: The environment variable that selects the broker for producers and workers alike.
BROKER_URL_ENV = "greenroom_broker_url"


def get_encoder() -> Encoder:
    """The process-global encoder used by every ``Message.encode``/``decode``."""
    return _encoder


def set_encoder(encoder: Encoder) -> None:
    """Replace the process-global encoder. Producers and workers must agree on it."""
    global _encoder
    with _lock:
        _encoder = encoder


def get_broker() -> Broker:
    """The global broker, created on first use when none was set.

    With nothing configured this is the embedded SQLite broker; the ``greenroom_broker_url``
    environment variable (or ``dramatiq_broker_url``) selects another one by URL. Creating the
    broker opens no file or socket: that happens on the first enqueue or consume.
    """
    broker = _broker
    if broker is not None:
        return broker
    with _lock:
        if _broker is None:
            # The broker classes live in higher layers; they are reached by module path at run
            # time so that this module imports nothing above it.
            urls = importlib.import_module("greenroom.brokers._url")
            url = os.environ.get(BROKER_URL_ENV) or os.environ.get("dramatiq_broker_url") or ""
            _set_broker_locked(urls.broker_from_url(url))
        assert _broker is not None
        return _broker


def set_broker(broker: Broker) -> None:
    """Make ``broker`` the global broker."""
    with _lock:
        _set_broker_locked(broker)


def _set_broker_locked(broker: Broker) -> None:
    global _broker
    _broker = broker
