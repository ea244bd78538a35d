"""What greenroom knows about one message: its state, attempts, times, worker, last error and progress."""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Mapping
from typing import Any

__all__ = [
    "ERROR_LIMIT",
    "FINISHED",
    "JobStatus",
    "State",
]


class State:
    """The states of a tracked message (plain strings, as stored and as ``greenroomctl`` prints them)."""

    #: On its queue, waiting for a worker.
    ENQUEUED = "enqueued"
    #: Sent with a delay; waits for its eta.
    DELAYED = "delayed"
    #: An actor is running it.
    RUNNING = "running"
    #: An attempt failed and another is scheduled.
    RETRYING = "retrying"
    #: The actor returned.
    SUCCEEDED = "succeeded"
    #: The last attempt failed and no other follows: the message is dead-lettered (or dropped
    #: by a ``throws`` rule).
    FAILED = "failed"
    #: Cancelled with :func:`greenroom.cancel`; dead-lettered with the reason ``cancelled``.
    CANCELLED = "cancelled"


#: The states after which nothing more happens to a message.
FINISHED = frozenset({State.SUCCEEDED, State.FAILED, State.CANCELLED})
#: The most characters of an error message kept in a status.
ERROR_LIMIT = 2048


def _when(ms: int | None) -> datetime.datetime | None:
    return None if ms is None else datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.timezone.utc)


@dataclasses.dataclass(frozen=True)
class JobStatus:
    """The status of a message, as :func:`greenroom.get_status` returns it.

    Times are epoch milliseconds (``*_ms``); the ``*_at`` properties give them as UTC datetimes.
    """

    message_id: str
    state: str
    actor_name: str | None = None
    queue_name: str | None = None
    #: How many times an actor started on it.
    attempts: int = 0
    enqueued_at_ms: int | None = None
    started_at_ms: int | None = None
    finished_at_ms: int | None = None
    #: When a delayed or retrying message is due.
    eta_ms: int | None = None
    #: ``host:pid`` of the worker process that ran the last attempt.
    worker: str | None = None
    #: The exception class and message of the last failed attempt (the message capped in size).
    error_type: str | None = None
    error_message: str | None = None
    #: From 0.0 to 1.0, as the actor last reported it with :func:`greenroom.set_progress`.
    progress: float | None = None
    progress_note: str | None = None
    #: Cancellation was asked for (the message may not have ended yet).
    cancel_requested: bool = False

    @property
    def finished(self) -> bool:
        """Whether nothing more will happen to the message."""
        return self.state in FINISHED

    @property
    def enqueued_at(self) -> datetime.datetime | None:
        return _when(self.enqueued_at_ms)

    @property
    def started_at(self) -> datetime.datetime | None:
        return _when(self.started_at_ms)

    @property
    def finished_at(self) -> datetime.datetime | None:
        return _when(self.finished_at_ms)

    def as_dict(self) -> dict[str, Any]:
        """The status as plain JSON-ready values."""
        return dataclasses.asdict(self)

    @classmethod
    def from_record(cls, message_id: str, record: Mapping[str, Any]) -> JobStatus:
        """A status from what a store holds; unknown fields are ignored, wrong types dropped."""
        known = {field.name: field.type for field in dataclasses.fields(cls)}
        values: dict[str, Any] = {}
        for name, value in record.items():
            if name in known and name != "message_id" and _fits(name, value):
                values[name] = value
        values.setdefault("state", State.ENQUEUED)
        return cls(message_id=message_id, **values)


_INTS = {"attempts", "enqueued_at_ms", "started_at_ms", "finished_at_ms", "eta_ms"}
_STRINGS = {"state", "actor_name", "queue_name", "worker", "error_type", "error_message", "progress_note"}


def _fits(name: str, value: Any) -> bool:
    """Whether a stored value has the type of its field (a store written by a newer version may differ)."""
    if value is None:
        return name != "state"
    if name in _INTS:
        return isinstance(value, int) and not isinstance(value, bool)
    if name in _STRINGS:
        return isinstance(value, str)
    if name == "progress":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if name == "cancel_requested":
        return isinstance(value, bool)
    return False
