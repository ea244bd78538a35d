"""What the dashboard's pages show, read from a broker through the operations and job-control APIs.

Nothing here knows about HTTP: the pages call these functions in a worker thread and render what
they return, so ``greenroomctl`` and the dashboard read the same truth through the same calls.
Every function may raise :class:`~greenroom.errors.BrokerConnectionError` (the pages show a
banner) and, for a queue neither declared nor stored, :class:`~greenroom.errors.QueueNotFound`
(a 404 page).
"""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Any

from .._operations import DeadLetter, QueueCounts, read_payload
from .._options import resolve_option
from ..broker import Broker
from ..jobs import JobDetails, JobStoreNotConfigured, get_details, minute_counts_for, preview_arguments, store_for
from ..message import Message

__all__ = [
    "DEAD_SCAN_LIMIT",
    "DeadLetterRow",
    "DeadLetterView",
    "Overview",
    "QueueRow",
    "TimelineEntry",
    "dead_letter_view",
    "message_details",
    "overview",
    "pretty_json",
    "queue_rows",
    "timeline",
    "valid_message_id",
    "workers",
]

#: How many dead letters of a queue (the oldest) are read to filter them.
DEAD_SCAN_LIMIT = 1000
#: Message ids the lookup accepts; anything else is a 404 without asking the store.
_MESSAGE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@+=-]{0,199}")


def valid_message_id(message_id: str) -> bool:
    """Whether ``message_id`` looks like a message id (UUIDs and similar tokens)."""
    return _MESSAGE_ID.fullmatch(message_id) is not None


def pretty_json(value: Any) -> str:
    """``value`` as indented JSON (values that are not JSON are shown through ``repr``)."""
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False, default=repr)


@dataclasses.dataclass(frozen=True)
class QueueRow:
    """One queue of the overview: its counts, or why there are none."""

    name: str
    counts: QueueCounts | None
    note: str | None = None


@dataclasses.dataclass(frozen=True)
class Overview:
    """The overview page: every declared queue, the totals, and the last hour of throughput."""

    queues: list[QueueRow]
    totals: QueueCounts
    #: ``(minute, processed, failed)`` for the last 60 minutes, or ``None`` with ``throughput_note``.
    throughput: list[tuple[int, int, int]] | None
    throughput_note: str | None
    live_workers: int | None

    def as_json(self) -> dict[str, Any]:
        """The overview as JSON-ready values (the dashboard's ``api/overview``)."""
        return {
            "queues": [
                {"name": row.name, **(row.counts._asdict() if row.counts else {}), "note": row.note}
                for row in self.queues
            ],
            "totals": self.totals._asdict(),
            "throughput": None
            if self.throughput is None
            else [
                {"minute_ms": minute * 60_000, "processed": processed, "failed": failed}
                for minute, processed, failed in self.throughput
            ],
            "workers": self.live_workers,
        }


def _queue_row(broker: Broker, queue_name: str) -> QueueRow:
    try:
        return QueueRow(queue_name, broker.get_queue_counts(queue_name))
    except NotImplementedError:
        return QueueRow(queue_name, None, "this broker cannot count its queues")


def _totals(rows: list[QueueRow]) -> QueueCounts:
    counted = [row.counts for row in rows if row.counts is not None]
    in_progress = [counts.in_progress for counts in counted if counts.in_progress is not None]
    return QueueCounts(
        ready=sum(counts.ready for counts in counted),
        delayed=sum(counts.delayed for counts in counted),
        in_progress=sum(in_progress) if in_progress or not counted else None,
        dead=sum(counts.dead for counts in counted),
    )


def queue_rows(broker: Broker) -> list[QueueRow]:
    """The counts of every queue declared on ``broker``, by name."""
    return [_queue_row(broker, name) for name in sorted(broker.get_declared_queues())]


def overview(broker: Broker) -> Overview:
    """The counts of every queue declared on ``broker``, and what job tracking knows of the last hour."""
    rows = queue_rows(broker)
    try:
        store = store_for(broker)
    except JobStoreNotConfigured:
        return Overview(rows, _totals(rows), None, "job tracking has no store on this broker", None)
    counts = minute_counts_for(store)
    if counts is None:
        throughput, note = None, "this job store keeps no per-minute counts"
    else:
        throughput, note = counts.last_hour(), None
    return Overview(rows, _totals(rows), throughput, note, len(store.workers()))


def workers(broker: Broker) -> list[dict[str, Any]]:
    """The live worker processes, from their heartbeats, sorted by host and pid.

    Raises:
      JobStoreNotConfigured: On RabbitMQ when job tracking has no store.
    """
    infos = store_for(broker).workers()
    return sorted(infos, key=lambda info: (str(info.get("host", "")), str(info.get("pid", ""))))


def message_details(broker: Broker, message_id: str) -> JobDetails | None:
    """A tracked message's status, arguments and attempts; ``None`` when nobody tracked that id.

    Raises:
      JobStoreNotConfigured: On RabbitMQ when job tracking has no store.
    """
    return get_details(message_id, broker=broker)


@dataclasses.dataclass(frozen=True)
class DeadLetterRow:
    """A dead letter as the page shows it."""

    letter: DeadLetter
    actor_name: str | None
    #: Pretty-printed, shortened arguments; ``None`` when hidden (sensitive, or an actor this
    #: process does not know, whose options cannot be checked) or undecodable.
    arguments: str | None


def _row(broker: Broker, letter: DeadLetter) -> DeadLetterRow:
    message = read_payload(letter.payload)
    if message is None:
        return DeadLetterRow(letter, None, None)
    return DeadLetterRow(letter, message.actor_name, _shown_arguments(broker, message))


def _shown_arguments(broker: Broker, message: Message[Any]) -> str | None:
    actor = broker.actors.get(message.actor_name)
    if actor is None or resolve_option("sensitive", message.options, actor.options, False):
        return None
    return pretty_json(preview_arguments(message.args, message.kwargs))


@dataclasses.dataclass(frozen=True)
class DeadLetterView:
    """The dead letters of a queue that match the filters, with what the filters can choose from."""

    queue_name: str
    counts: QueueCounts | None
    rows: list[DeadLetterRow]
    #: How many dead letters were read (at most :data:`DEAD_SCAN_LIMIT`, the oldest).
    scanned: int
    #: The actors of the dead letters read, to filter by.
    actors: list[str]
    actor: str
    reason: str

    @property
    def filtered(self) -> bool:
        return bool(self.actor or self.reason)

    @property
    def matching_ids(self) -> list[str]:
        """The message ids of the rows shown (what "requeue all" requeues when a filter is set)."""
        return [row.letter.message_id for row in self.rows if row.letter.message_id is not None]


def dead_letter_view(broker: Broker, queue_name: str, *, actor: str = "", reason: str = "") -> DeadLetterView:
    """The oldest dead letters of a queue, those of ``actor`` (exactly) whose reason contains ``reason``.

    Raises:
      QueueNotFound: When the queue is unknown.
    """
    letters = broker.get_dead_letters(queue_name, limit=DEAD_SCAN_LIMIT)
    rows = [_row(broker, letter) for letter in letters]
    actors = sorted({row.actor_name for row in rows if row.actor_name is not None})
    wanted = reason.casefold()
    shown = [
        row
        for row in rows
        if (not actor or row.actor_name == actor) and (not wanted or wanted in row.letter.reason.casefold())
    ]
    try:
        counts: QueueCounts | None = broker.get_queue_counts(queue_name)
    except NotImplementedError:
        counts = None
    return DeadLetterView(queue_name, counts, shown, len(letters), actors, actor, reason)


@dataclasses.dataclass(frozen=True)
class TimelineEntry:
    """One line of a message's timeline: when, what happened, and the details (an error, a worker)."""

    at_ms: int | None
    event: str
    detail: str = ""
    #: ``ok``, ``failed``, ``waiting`` or ``""``: how the page colours it.
    tone: str = ""


def _attempt_entries(details: JobDetails) -> list[TimelineEntry]:
    entries = []
    for attempt in details.attempts:
        entries.append(TimelineEntry(attempt.started_at_ms, f"attempt {attempt.number} started", attempt.worker or ""))
        if attempt.outcome == "running":
            continue
        error = f"{attempt.error_type}: {attempt.error_message}" if attempt.error_type else ""
        tone = "ok" if attempt.outcome == "succeeded" else "failed"
        event = f"attempt {attempt.number} {attempt.outcome}"
        entries.append(TimelineEntry(attempt.finished_at_ms, event, error, tone))
    return entries


def timeline(details: JobDetails) -> list[TimelineEntry]:
    """What happened to a message, in order: sent, each attempt's start and end, and what it waits for now."""
    status = details.status
    entries = [TimelineEntry(status.enqueued_at_ms, "sent", f"to queue {status.queue_name or '?'}")]
    entries.extend(_attempt_entries(details))
    if not details.attempts and status.started_at_ms is not None:
        # Recorded by a version that kept no attempts: the latest one is all there is.
        entries.append(TimelineEntry(status.started_at_ms, f"attempt {status.attempts} started", status.worker or ""))
    if status.state in ("delayed", "retrying") and status.eta_ms is not None:
        entries.append(TimelineEntry(status.eta_ms, "due", f"{status.state}: runs again from then", "waiting"))
    if status.cancel_requested and not status.finished:
        entries.append(TimelineEntry(None, "cancellation requested", "the worker interrupts it or skips it", "waiting"))
    if status.finished and not details.attempts:
        entries.append(TimelineEntry(status.finished_at_ms, status.state, status.error_type or ""))
    return entries
