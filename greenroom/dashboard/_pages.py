"""The dashboard's pages (GET): overview, workers, a message, dead letters, the purge confirmation, schedules.

Endpoints are plain functions, which Starlette runs in a thread pool: the broker calls they make
block. Errors are turned into pages by the handlers in :mod:`greenroom.dashboard._errors`.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from ..broker import Broker
from ..scheduling import schedule_statuses
from . import _data
from ._render import Renderer

__all__ = ["NOTICES", "NotFound", "Pages"]

#: What a page says after an action sent the browser back to it (``?notice=<code>&n=<count>``).
NOTICES = {
    "requeued": "{n} dead letter(s) put back on the queue.",
    "purged": "{n} dead letter(s) deleted.",
    "cancel-requested": "Cancellation requested: the message will not run, or its actor is interrupted.",
    "cancel-finished": "The message had already finished: nothing to cancel.",
    "cancel-unknown": "No status for this message: it cannot be cancelled.",
}

#: The ages a purge may be limited to, in milliseconds, as the confirmation page offers them.
PURGE_AGES = {
    "": "all of them",
    "3600000": "older than an hour",
    "86400000": "older than a day",
    "604800000": "older than a week",
}


class NotFound(Exception):
    """Render the 404 page with this message."""


def notice(request: Request) -> str | None:
    """The text of the notice an action asked the page to show, if any."""
    template = NOTICES.get(request.query_params.get("notice", ""))
    if template is None:
        return None
    count = request.query_params.get("n", "")
    return template.format(n=count if count.isdigit() else "some")


class Pages:
    """The GET endpoints of one dashboard.

    Parameters:
      broker: The broker shown.
      renderer: Renders the templates.
    """

    def __init__(self, broker: Broker, renderer: Renderer) -> None:
        self.broker = broker
        self.renderer = renderer

    def overview(self, request: Request) -> Response:
        """Every queue's counts and the last hour's throughput."""
        view = _data.overview(self.broker)
        return self.renderer.render(request, "overview.html", {"view": view, "nav": "overview"})

    def overview_json(self, request: Request) -> Response:
        """The overview as JSON, for scripts and monitoring."""
        return JSONResponse(_data.overview(self.broker).as_json(), headers={"Cache-Control": "no-store"})

    def workers(self, request: Request) -> Response:
        """The live worker processes."""
        rows = _data.workers(self.broker)
        return self.renderer.render(request, "workers.html", {"workers": rows, "nav": "workers"})

    def lookup(self, request: Request) -> Response:
        """The form's target: the message page of the id given, or the lookup page when none is."""
        message_id = request.query_params.get("id", "").strip()
        if not message_id:
            return self.renderer.render(request, "lookup.html", {"nav": "messages"})
        if not _data.valid_message_id(message_id):
            raise NotFound("That is not a message id.")
        return RedirectResponse(f"{Renderer.root(request)}/messages/{message_id}", 303)

    def message(self, request: Request) -> Response:
        """One message: status, arguments, timeline, progress, last error, and the cancel button."""
        message_id = request.path_params["message_id"]
        if not _data.valid_message_id(message_id):
            raise NotFound("That is not a message id.")
        details = _data.message_details(self.broker, message_id)
        if details is None:
            raise NotFound(f"No status for message {message_id}: never sent, not tracked, or expired.")
        context = {
            "details": details,
            "status": details.status,
            "arguments": None if details.arguments is None else _data.pretty_json(details.arguments),
            "timeline": _data.timeline(details),
            "failure": details.last_failure,
            "notice": notice(request),
            "nav": "messages",
        }
        return self.renderer.render(request, "message.html", context)

    def dead_index(self, request: Request) -> Response:
        """The queues and how many dead letters each has."""
        rows = _data.queue_rows(self.broker)
        return self.renderer.render(request, "dead_index.html", {"queues": rows, "nav": "dead"})

    def dead(self, request: Request) -> Response:
        """A queue's dead letters, filtered by actor and reason."""
        queue_name = request.path_params["queue"]
        view = _data.dead_letter_view(
            self.broker,
            queue_name,
            actor=request.query_params.get("actor", ""),
            reason=request.query_params.get("reason", ""),
        )
        context = {"view": view, "notice": notice(request), "nav": "dead"}
        return self.renderer.render(request, "dead.html", context)

    def purge_form(self, request: Request) -> Response:
        """The confirmation step before a queue's dead letters are deleted."""
        queue_name = request.path_params["queue"]
        counts = self.broker.get_queue_counts(queue_name)
        context = {"queue_name": queue_name, "counts": counts, "ages": PURGE_AGES, "nav": "dead"}
        return self.renderer.render(request, "purge.html", context)

    def schedules(self, request: Request) -> Response:
        """The periodic jobs: expression, last and next run, leader."""
        try:
            statuses, note = schedule_statuses(self.broker), None
        except TypeError as exc:  # a broker greenroom cannot schedule on
            statuses, note = [], str(exc)
        context = {"schedules": statuses, "note": note, "nav": "schedules"}
        return self.renderer.render(request, "schedules.html", context)
