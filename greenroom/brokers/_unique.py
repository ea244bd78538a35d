"""Unique jobs: the ``unique_key`` and ``unique_until`` options, resolved the same way by every broker that keeps them.

While a message with a given ``unique_key`` is queued or delayed, sending another message with the
same key returns the message already there instead of adding one. The key is let go when a worker
takes the message from its queue, or, with ``unique_until="finished"``, once the message is
acknowledged or dead-lettered. Keys are shared by every queue of a broker.

The key is a message option (``send_with_options(unique_key="report-42")``) or an actor option: a
string, or a function of the message's arguments (``unique_key=lambda user_id: f"sync-{user_id}"``).
:func:`with_unique_key` resolves it once, when the message is sent, and writes it into the message's
options, so that a retry or a delayed message moved to its queue carries it on. That next
incarnation (same message id) takes the key over from its predecessor; should another message hold
it by then, the incarnation is stored without a key rather than dropped: a message once accepted is
never lost.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

from .._options import NO_OPTIONS, resolve_option
from ..broker import ActorLike
from ..message import Message

__all__ = ["UNIQUE_OPTIONS", "UniqueKey", "unique_key_of", "with_unique_key"]

#: The actor options a broker that keeps unique jobs accepts.
UNIQUE_OPTIONS = frozenset({"unique_key", "unique_until"})
_UNTIL = ("started", "finished")


class UniqueKey(NamedTuple):
    """A message's unique key, and whether it is kept until the message is finished."""

    key: str
    until_finished: bool


def with_unique_key(message: Message[Any], actors: Mapping[str, ActorLike]) -> Message[Any]:
    """``message``, or a copy whose options carry its resolved unique key (and ``unique_until="finished"``).

    The message's own options win over its actor's (see :func:`~greenroom._options.resolve_option`);
    an explicit ``unique_key=None`` means none.

    Raises:
      ValueError: When the key is not a non-empty string (or its function returns none), or
        ``unique_until`` is neither ``"started"`` nor ``"finished"``.
    """
    options = message.options
    actor = actors.get(message.actor_name)
    actor_options = actor.options if actor is not None else NO_OPTIONS
    if "unique_key" not in options and "unique_key" not in actor_options:
        return message  # the common case, on every send: two lookups
    key = resolve_option("unique_key", options, actor_options, None)
    if key is None:
        return message
    if callable(key):
        key = key(*message.args, **message.kwargs)
    if not isinstance(key, str) or not key:
        raise ValueError(f"unique_key must be a non-empty string, not {key!r}")
    until = resolve_option("unique_until", options, actor_options, "started")
    if until not in _UNTIL:
        raise ValueError(f"unique_until must be 'started' or 'finished', not {until!r}")
    resolved = {"unique_key": key, "unique_until": until} if until == "finished" else {"unique_key": key}
    if all(options.get(name) == value for name, value in resolved.items()):
        return message
    return message.copy(options=resolved)


def unique_key_of(options: Mapping[str, Any]) -> UniqueKey | None:
    """The unique key that :func:`with_unique_key` wrote into a message's options, if any."""
    key = options.get("unique_key")
    if not isinstance(key, str) or not key:
        return None
    return UniqueKey(key, options.get("unique_until") == "finished")
