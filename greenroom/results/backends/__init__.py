"""Results backends. ``StubBackend`` and ``SQLiteBackend`` need nothing extra; ``RedisBackend`` and
``MemcachedBackend`` need the ``redis`` and ``memcached`` extras and are imported on first access.
"""

from __future__ import annotations

import importlib
import warnings
from typing import Any

from .sqlite import SQLiteBackend
from .stub import StubBackend

__all__ = ["MemcachedBackend", "RedisBackend", "SQLiteBackend", "StubBackend"]

#: Lazily imported backends: name → (module, extra).
_LAZY = {"RedisBackend": (".redis", "redis"), "MemcachedBackend": (".memcached", "memcached")}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module_name, extra = _LAZY[name]
    try:
        module = importlib.import_module(module_name, __name__)
    except ImportError as exc:
        warnings.warn(f"{name} needs an extra: pip install 'greenroom[{extra}]'.", ImportWarning, stacklevel=2)
        raise AttributeError(f"{name} is unavailable: {exc}") from exc
    return getattr(module, name)
