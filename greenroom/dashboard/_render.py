"""Turning what a page shows into HTML: the templates, their filters, and what every page shares.

Templates are Jinja2 with autoescaping on for every template, so whatever comes from the broker
(queue names, reasons, arguments, tracebacks) is escaped; no template marks anything safe.
"""

from __future__ import annotations

import dataclasses
import datetime
import time
from collections.abc import Mapping
from typing import Any

import jinja2
from starlette.requests import Request
from starlette.responses import HTMLResponse

from ._chart import bar_chart
from ._guards import CSRF_COOKIE, CsrfTokens

__all__ = ["Page", "Renderer"]


def _when(epoch_ms: Any) -> str:
    if not isinstance(epoch_ms, (int, float)) or isinstance(epoch_ms, bool) or epoch_ms <= 0:
        return "—"
    moment = datetime.datetime.fromtimestamp(epoch_ms / 1000, datetime.timezone.utc)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def _span(milliseconds: float) -> str:
    seconds = abs(milliseconds) / 1000
    if seconds < 1:
        return f"{int(abs(milliseconds))} ms"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172_800:
        return f"{seconds / 3600:.0f} h"
    return f"{seconds / 86_400:.0f} days"


def _ago(epoch_ms: Any) -> str:
    if not isinstance(epoch_ms, (int, float)) or isinstance(epoch_ms, bool) or epoch_ms <= 0:
        return ""
    delta_ms = time.time() * 1000 - epoch_ms
    return f"{_span(delta_ms)} ago" if delta_ms >= 0 else f"in {_span(delta_ms)}"


def _duration(start_ms: Any, end_ms: Any) -> str:
    if not isinstance(start_ms, int) or not isinstance(end_ms, int):
        return ""
    return _span(end_ms - start_ms)


def _count(value: Any) -> str:
    return "n/a" if value is None else f"{value:,}"


@dataclasses.dataclass(frozen=True)
class Page:
    """What every page knows about the request and the dashboard."""

    #: The prefix of every link (where the dashboard is mounted), without a trailing slash.
    root: str
    csrf_token: str
    read_only: bool
    refresh_ms: int
    #: The banner shown above the page, if any (the broker is unreachable).
    banner: str | None = None


class Renderer:
    """Renders the dashboard's templates and hands each browser its CSRF cookie.

    Parameters:
      tokens: The dashboard's CSRF tokens.
      read_only: Whether actions are hidden (and refused).
      refresh_ms: How often pages refresh their counts.
    """

    def __init__(self, tokens: CsrfTokens, *, read_only: bool, refresh_ms: int) -> None:
        self.tokens = tokens
        self.read_only = read_only
        self.refresh_ms = refresh_ms
        self.env = jinja2.Environment(
            loader=jinja2.PackageLoader("greenroom.dashboard", "templates"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.filters.update(when=_when, ago=_ago, duration=_duration, count=_count)
        self.env.globals.update(bar_chart=bar_chart)

    @staticmethod
    def root(request: Request) -> str:
        """Where the dashboard is mounted, as a link prefix ("" at the root of a site)."""
        return str(request.scope.get("root_path", "")).rstrip("/")

    def _cookie(self, request: Request) -> tuple[str, bool]:
        cookie = request.cookies.get(CSRF_COOKIE)
        if cookie and len(cookie) <= 100:
            return cookie, False
        return self.tokens.new_cookie(), True

    def render(
        self,
        request: Request,
        template: str,
        context: Mapping[str, Any],
        *,
        status_code: int = 200,
        banner: str | None = None,
    ) -> HTMLResponse:
        """The page ``template`` filled with ``context``, with the CSRF cookie set on a browser that has none."""
        cookie, fresh = self._cookie(request)
        page = Page(self.root(request), self.tokens.token(cookie), self.read_only, self.refresh_ms, banner)
        html = self.env.get_template(template).render({**context, "page": page})
        response = HTMLResponse(html, status_code, headers={"Cache-Control": "no-store"})
        if fresh:
            response.set_cookie(
                CSRF_COOKIE,
                cookie,
                path=page.root or "/",
                httponly=True,
                samesite="strict",
                secure=request.url.scheme == "https",
            )
        return response
