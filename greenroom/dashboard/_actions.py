"""The dashboard's actions (POST): cancel a message, requeue dead letters, purge them.

Each action checks, before touching the broker, that the dashboard is not read-only and that the
form carries a valid CSRF token; then it does its work in a worker thread and sends the browser
back to the page it came from (POST, redirect, GET), with a notice saying what was done.
"""

from __future__ import annotations

import urllib.parse

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from ..broker import Broker
from ..jobs import cancel
from . import _data
from ._guards import CSRF_COOKIE, CsrfTokens
from ._pages import PURGE_AGES, NotFound
from ._render import Renderer

__all__ = ["Actions", "Forbidden"]

#: The largest form body read, in bytes: the dashboard's forms are a few fields.
MAX_FORM_BYTES = 64 * 1024


class Forbidden(Exception):
    """Render the 403 page with this message."""


async def _read_form(request: Request) -> dict[str, str]:
    """The fields of an url-encoded form (the first value of each).

    Raises:
      Forbidden: When the body is larger than :data:`MAX_FORM_BYTES`.
    """
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise Forbidden("That form is too large.")
    fields = urllib.parse.parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
    return {name: values[0] for name, values in fields.items()}


class Actions:
    """The POST endpoints of one dashboard.

    Parameters:
      broker: The broker acted on.
      tokens: Checks the forms' CSRF tokens.
      read_only: Refuse every action.
    """

    def __init__(self, broker: Broker, tokens: CsrfTokens, *, read_only: bool) -> None:
        self.broker = broker
        self.tokens = tokens
        self.read_only = read_only

    async def _checked_form(self, request: Request) -> dict[str, str]:
        """The form of an action that may go ahead.

        Raises:
          Forbidden: In read-only mode, or when the CSRF token is missing or wrong.
        """
        if self.read_only:
            raise Forbidden("This dashboard is read-only.")
        form = await _read_form(request)
        if not self.tokens.valid(request.cookies.get(CSRF_COOKIE), form.get("csrf_token")):
            raise Forbidden("This form has expired or did not come from this dashboard. Reload the page and try again.")
        return form

    async def cancel(self, request: Request) -> Response:
        """Cancel a message from its page."""
        message_id = request.path_params["message_id"]
        await self._checked_form(request)
        if not _data.valid_message_id(message_id):
            raise NotFound("That is not a message id.")
        result = await run_in_threadpool(cancel, message_id, broker=self.broker)
        target = f"{Renderer.root(request)}/messages/{message_id}?notice=cancel-{result.outcome}"
        return RedirectResponse(target, 303)

    async def requeue(self, request: Request) -> Response:
        """Requeue one dead letter (``message_id``), or all those the filters match (``scope=all``)."""
        queue_name = request.path_params["queue"]
        form = await self._checked_form(request)
        actor, reason = form.get("actor", ""), form.get("reason", "")
        if form.get("scope") == "all":
            moved = await run_in_threadpool(self._requeue_all, queue_name, actor, reason)
        elif form.get("message_id"):
            moved = await run_in_threadpool(self.broker.requeue_dead_letters, queue_name, [form["message_id"]])
        else:
            raise Forbidden("Say which dead letters to requeue.")
        query = urllib.parse.urlencode({"actor": actor, "reason": reason, "notice": "requeued", "n": moved})
        return RedirectResponse(f"{self._dead_page(request, queue_name)}?{query}", 303)

    def _requeue_all(self, queue_name: str, actor: str, reason: str) -> int:
        if not actor and not reason:
            return self.broker.requeue_dead_letters(queue_name, None)
        # With filters, "all" means the letters the page showed: the filters are applied again here.
        matching = _data.dead_letter_view(self.broker, queue_name, actor=actor, reason=reason).matching_ids
        return self.broker.requeue_dead_letters(queue_name, matching) if matching else 0

    async def purge(self, request: Request) -> Response:
        """Delete a queue's dead letters, once the confirmation page was answered."""
        queue_name = request.path_params["queue"]
        form = await self._checked_form(request)
        dead_page = self._dead_page(request, queue_name)
        if form.get("confirm") != "yes":
            return RedirectResponse(f"{dead_page}/purge", 303)
        age = form.get("older_than", "")
        if age not in PURGE_AGES:
            raise Forbidden("Choose an age the confirmation page offers.")
        older_than_ms = int(age) if age else None
        deleted = await run_in_threadpool(self._purge, queue_name, older_than_ms)
        return RedirectResponse(f"{dead_page}?notice=purged&n={deleted}", 303)

    def _purge(self, queue_name: str, older_than_ms: int | None) -> int:
        return self.broker.purge_dead_letters(queue_name, older_than_ms=older_than_ms)

    @staticmethod
    def _dead_page(request: Request, queue_name: str) -> str:
        return f"{Renderer.root(request)}/queues/{urllib.parse.quote(queue_name, safe='')}/dead"
