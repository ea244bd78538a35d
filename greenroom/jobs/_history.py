"""What job tracking records beside a message's status for people to read: an argument preview and its attempts.

:class:`~greenroom.jobs.JobTracking` merges these fields into the same writes as the status, so
they cost no extra round trip:

- ``arguments``: a shortened copy of the message's arguments (see :func:`preview_arguments`),
  written when the message is first sent; an actor (or message) with the option
  ``sensitive=True`` gets ``arguments_hidden`` instead, and its arguments are never stored.
- ``attempt_<slot>``: one entry per attempt (start, end, worker, outcome, error and traceback),
  in a ring of :data:`HISTORY_SLOTS` fields, so a message retried without end keeps a bounded
  record.

:func:`get_details` reads them back with the status, as the dashboard shows them.
"""

from __future__ import annotations

import dataclasses
import traceback
from collections.abc import Mapping, Sequence
from typing import Any

from .._options import resolve_option
from ..broker import Broker, get_broker
from ._status import ERROR_LIMIT, JobStatus
from ._stores import store_for

__all__ = [
    "HISTORY_SLOTS",
    "Attempt",
    "JobDetails",
    "argument_fields",
    "attempt_entry",
    "details_from_record",
    "get_details",
    "preview_arguments",
]

#: Longest string kept whole in an argument preview, in characters.
VALUE_LIMIT = 200
#: Most items of a list, or keys of a dict, kept in an argument preview.
ITEMS_LIMIT = 20
#: Deepest nesting kept in an argument preview; deeper values are replaced by a note.
DEPTH_LIMIT = 4
#: How many attempts a status keeps (the newest ones).
HISTORY_SLOTS = 25
#: Most characters of a traceback kept (its end, where the exception is).
TRACEBACK_LIMIT = 8192


def _cut(text: str) -> str:
    if len(text) <= VALUE_LIMIT:
        return text
    return f"{text[:VALUE_LIMIT]}… ({len(text) - VALUE_LIMIT} more characters)"


def _shorten(value: Any, depth: int) -> Any:
    """A JSON-ready copy of ``value`` with long strings cut, long containers clipped and deep nesting dropped."""
    if value is None or isinstance(value, (bool, float)):
        return value
    if isinstance(value, int):
        return value if abs(value) < 10**18 else _cut(str(value))
    if isinstance(value, str):
        return _cut(value)
    if isinstance(value, (list, tuple, dict)) and depth >= DEPTH_LIMIT:
        return f"… ({type(value).__name__} nested too deep to show)"
    if isinstance(value, (list, tuple)):
        items = [_shorten(item, depth + 1) for item in value[:ITEMS_LIMIT]]
        if len(value) > ITEMS_LIMIT:
            items.append(f"… ({len(value) - ITEMS_LIMIT} more items)")
        return items
    if isinstance(value, dict):
        shown = {_cut(str(key)): _shorten(item, depth + 1) for key, item in list(value.items())[:ITEMS_LIMIT]}
        if len(value) > ITEMS_LIMIT:
            shown["…"] = f"({len(value) - ITEMS_LIMIT} more keys)"
        return shown
    return _cut(repr(value))  # not JSON (a pickled payload's objects): shown as text


def preview_arguments(args: Sequence[Any], kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """A shortened, JSON-ready copy of a message's arguments, for people to read.

    Strings longer than 200 characters are cut, lists and dicts keep their first 20 items, nesting
    stops after 4 levels; each cut says how much was left out.
    """
    return {"args": _shorten(list(args), 0), "kwargs": _shorten(dict(kwargs), 0)}


def argument_fields(
    args: Sequence[Any], kwargs: Mapping[str, Any], message_options: Mapping[str, Any], actor_options: Mapping[str, Any]
) -> dict[str, Any]:
    """The status fields that describe a message's arguments: a preview, or a note that they are hidden.

    The ``sensitive`` option (the message's, else its actor's) hides them.
    """
    if resolve_option("sensitive", message_options, actor_options, False):
        return {"arguments_hidden": True}
    return {"arguments": preview_arguments(args, kwargs)}


def _traceback_text(exception: BaseException) -> str | None:
    if exception.__traceback__ is None:
        return None
    text = "".join(traceback.format_exception(type(exception), exception, exception.__traceback__, limit=30))
    if len(text) > TRACEBACK_LIMIT:
        text = "…\n" + text[-TRACEBACK_LIMIT:]
    return text


def attempt_entry(
    attempt: int,
    *,
    started_at_ms: int,
    worker: str,
    outcome: str,
    finished_at_ms: int | None = None,
    error: Mapping[str, Any] | None = None,
    exception: BaseException | None = None,
) -> dict[str, Any]:
    """The status field recording one attempt: ``{"attempt_<slot>": {...}}``.

    Parameters:
      attempt: The attempt's number, from 1.
      outcome: ``running`` while it runs, then the state it ended in.
      error: The ``error_type`` and ``error_message`` of its failure, if it failed.
      exception: The exception it failed with, whose traceback is kept (its end, capped).
    """
    entry: dict[str, Any] = {
        "attempt": attempt,
        "started_at_ms": started_at_ms,
        "finished_at_ms": finished_at_ms,
        "worker": worker,
        "outcome": outcome,
        **(error or {}),
    }
    if exception is not None:
        entry["traceback"] = _traceback_text(exception)
    return {f"attempt_{(attempt - 1) % HISTORY_SLOTS}": entry}


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _text(value: Any, limit: int = ERROR_LIMIT) -> str | None:
    return value[:limit] if isinstance(value, str) else None


@dataclasses.dataclass(frozen=True)
class Attempt:
    """One attempt at running a message, as its status recorded it (times in epoch ms)."""

    number: int
    started_at_ms: int | None
    finished_at_ms: int | None
    worker: str | None
    #: ``running``, or the state the attempt ended in (``succeeded``, ``retrying``, ``failed``, ``cancelled``).
    outcome: str
    error_type: str | None = None
    error_message: str | None = None
    traceback: str | None = None

    @classmethod
    def from_entry(cls, entry: Mapping[str, Any]) -> Attempt | None:
        """The attempt an ``attempt_<slot>`` field holds, or ``None`` when it is not one."""
        number = _int(entry.get("attempt"))
        if number is None:
            return None
        return cls(
            number=number,
            started_at_ms=_int(entry.get("started_at_ms")),
            finished_at_ms=_int(entry.get("finished_at_ms")),
            worker=_text(entry.get("worker")),
            outcome=_text(entry.get("outcome")) or "unknown",
            error_type=_text(entry.get("error_type")),
            error_message=_text(entry.get("error_message")),
            traceback=_text(entry.get("traceback"), TRACEBACK_LIMIT + 2),
        )


@dataclasses.dataclass(frozen=True)
class JobDetails:
    """A message's status with its argument preview and its attempts, oldest first."""

    status: JobStatus
    #: ``{"args": [...], "kwargs": {...}}`` shortened, or ``None`` when not recorded (or hidden).
    arguments: dict[str, Any] | None
    #: The arguments are not shown because the message is ``sensitive``.
    arguments_hidden: bool
    attempts: list[Attempt]

    @property
    def last_failure(self) -> Attempt | None:
        """The newest attempt that failed, if any did."""
        failed = [attempt for attempt in self.attempts if attempt.error_type is not None]
        return failed[-1] if failed else None


def details_from_record(message_id: str, record: Mapping[str, Any]) -> JobDetails:
    """The details held in a status record (fields of the wrong shape are ignored)."""
    attempts = []
    for name, value in record.items():
        if name.startswith("attempt_") and isinstance(value, Mapping):
            attempt = Attempt.from_entry(value)
            if attempt is not None:
                attempts.append(attempt)
    arguments = record.get("arguments")
    return JobDetails(
        status=JobStatus.from_record(message_id, record),
        arguments=arguments if isinstance(arguments, dict) else None,
        arguments_hidden=record.get("arguments_hidden") is True,
        attempts=sorted(attempts, key=lambda attempt: attempt.number),
    )


def get_details(message_id: str, *, broker: Broker | None = None) -> JobDetails | None:
    """A message's status with its arguments and attempts, or ``None`` for an id nobody tracked.

    Raises:
      ValueError: When ``message_id`` is not a non-empty string.
      JobStoreNotConfigured: On RabbitMQ when no store was configured.
      BrokerConnectionError: When the store cannot be reached.
    """
    if not isinstance(message_id, str) or not message_id.strip():
        raise ValueError(f"a message id is a non-empty string, not {message_id!r}")
    record = store_for(broker or get_broker()).get(message_id)
    return None if record is None else details_from_record(message_id, record)
