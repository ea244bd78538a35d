"""Reading a message's status, reporting progress from inside an actor, and cancelling a message."""

from __future__ import annotations

import dataclasses
import math

from ..broker import Broker, get_broker
from ._middleware import JobTracking, current_run
from ._status import FINISHED, JobStatus
from ._stores import store_for

__all__ = ["CancelResult", "cancel", "get_status", "set_progress"]

#: How long a cancellation request is kept when the message has no tracked status to keep it in.
_CANCEL_TTL_MS = 30 * 24 * 3600 * 1000


def _check_id(message_id: object) -> str:
    if not isinstance(message_id, str) or not message_id.strip():
        raise ValueError(f"a message id is a non-empty string, not {message_id!r}")
    return message_id


def get_status(message_id: str, *, broker: Broker | None = None) -> JobStatus | None:
    """The status of a message, or ``None`` for an id nobody tracked (or whose status expired).

    Parameters:
      message_id: The ``message_id`` of a sent message.
      broker: Whose status store to read; the global broker when omitted.

    Raises:
      ValueError: When ``message_id`` is not a non-empty string.
      JobStoreNotConfigured: On RabbitMQ when no store was configured.
      BrokerConnectionError: When the store cannot be reached.
    """
    record = store_for(broker or get_broker()).get(_check_id(message_id))
    return None if record is None else JobStatus.from_record(message_id, record)


def set_progress(fraction: float, note: str | None = None) -> None:
    """Report how far the running actor has come, from 0.0 to 1.0, with an optional note.

    Any process reads it through :func:`get_status`. Reports closer together than the
    middleware's ``progress_interval`` are coalesced: the latest one is written a moment later,
    so a tight loop cannot flood the store.

    Raises:
      ValueError: When ``fraction`` is not a number from 0 to 1.
      RuntimeError: Outside an actor run by a worker whose broker has :class:`JobTracking`.
    """
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0.0 <= fraction <= 1.0:
        raise ValueError(f"progress is a number from 0.0 to 1.0, not {fraction!r}")
    if math.isnan(fraction):
        raise ValueError("progress is a number from 0.0 to 1.0, not NaN")
    run = current_run()
    if run is None:
        raise RuntimeError("set_progress() works only inside an actor whose message is tracked by JobTracking")
    run.tracking.report_progress(run, float(fraction), None if note is None else str(note)[:1000])


@dataclasses.dataclass(frozen=True)
class CancelResult:
    """What :func:`cancel` did.

    ``outcome`` is ``"requested"`` (the message will not run, or its actor is interrupted),
    ``"finished"`` (it had already ended: nothing to cancel) or ``"unknown"`` (no status for that
    id: never sent, untracked, or expired). ``state`` is the state it was in.
    """

    message_id: str
    outcome: str
    state: str | None = None

    @property
    def requested(self) -> bool:
        return self.outcome == "requested"


def cancel(message_id: str, *, broker: Broker | None = None) -> CancelResult:
    """Cancel a message from any process: if it has not started it never runs; if it runs, its actor
    is interrupted within about a second. Either way it is dead-lettered with the reason
    ``cancelled`` (its ``on_failure`` callback runs), never retried, and a pipeline stops there.

    Cancelling a finished message or an unknown id changes nothing and says so in the result.

    Raises:
      ValueError: When ``message_id`` is not a non-empty string.
      JobStoreNotConfigured: On RabbitMQ when no store was configured.
      BrokerConnectionError: When the store cannot be reached.
    """
    broker = broker or get_broker()
    store = store_for(broker)
    record = store.get(_check_id(message_id))
    if record is None:
        return CancelResult(message_id, "unknown")
    state = record.get("state")
    state = state if isinstance(state, str) else None
    if state in FINISHED:
        return CancelResult(message_id, "finished", state)
    ttl_ms = next((m.active_ttl for m in broker.middleware if isinstance(m, JobTracking)), _CANCEL_TTL_MS)
    store.update(message_id, {"cancel_requested": True}, ttl_ms)
    return CancelResult(message_id, "requested", state)
