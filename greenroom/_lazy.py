"""Small shared helpers with no place in the public modules."""

from __future__ import annotations

import importlib
import os
import warnings
from typing import Any

__all__ = ["BACKENDS_WITH_EXTRAS", "import_optional", "process_exists"]

#: The backends that results and rate limiters both offer and that need an extra, imported on
#: first access: name → (relative module, extra).
BACKENDS_WITH_EXTRAS = {
    "RedisBackend": (".redis", "redis"),
    "MemcachedBackend": (".memcached", "memcached"),
    "PostgresBackend": (".postgres", "postgres"),
}


def import_optional(package: str, name: str, lazy: dict[str, tuple[str, str]]) -> Any:
    """The attribute ``name`` of a package whose backends need extras (a module ``__getattr__``).

    Parameters:
      package: The package's ``__name__``.
      name: The attribute looked up.
      lazy: name → (relative module, extra that provides its library).

    Raises:
      AttributeError: For an unknown name, or when the extra is missing (an ``ImportWarning``
        names the extra to install).
    """
    if name not in lazy:
        raise AttributeError(f"module {package!r} has no attribute {name!r}")
    module_name, extra = lazy[name]
    try:
        module = importlib.import_module(module_name, package)
    except ImportError as exc:
        warnings.warn(f"{name} needs an extra: pip install 'greenroom[{extra}]'.", ImportWarning, stacklevel=3)
        raise AttributeError(f"{name} is unavailable: {exc}") from exc
    return getattr(module, name)


def process_exists(pid: int) -> bool:
    """Whether a process with this PID exists (it may belong to another user)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
