"""How the value of a message option is chosen: the message's own, else its actor's, else a default.

One rule everywhere: **presence decides, not truthiness.** An option that the message (or the
actor) sets is used as given, even when it is ``0``, ``False`` or ``None``; only an option that is
absent falls through to the next place. ``None`` given explicitly therefore means "none" where the
option allows it (no time limit, no retry cap, no callback), and ``0`` means zero.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

__all__ = ["NO_OPTIONS", "resolve_option", "select_options"]

#: The options of an actor that is not declared in this process.
NO_OPTIONS: Mapping[str, Any] = MappingProxyType({})


def resolve_option(
    name: str, message_options: Mapping[str, Any], actor_options: Mapping[str, Any], default: Any
) -> Any:
    """The message's ``name`` option if it has one, else the actor's, else ``default``."""
    if name in message_options:
        return message_options[name]
    if name in actor_options:
        return actor_options[name]
    return default


def select_options(options: Mapping[str, Any], names: set[str]) -> Mapping[str, Any]:
    """The options among ``names`` that ``options`` sets (to keep an actor's, for resolve_option)."""
    return {name: value for name, value in options.items() if name in names}
