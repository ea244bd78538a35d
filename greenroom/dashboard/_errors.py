"""The pages shown instead of the one asked for: not found, refused, broker unreachable, not available.

A broker that cannot be reached gives a 503 page with a banner; its script keeps asking for the
page, which comes back by itself once the broker answers again.
"""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from ..errors import BrokerConnectionError, QueueNotFound
from ..jobs import JobStoreNotConfigured
from ..logging import get_logger
from ._actions import Forbidden
from ._pages import NotFound
from ._render import Renderer

__all__ = ["ErrorPages"]

#: The banner shown while the broker is unreachable.
UNREACHABLE = "The broker cannot be reached. This page comes back by itself when it answers again."


class ErrorPages:
    """Renders the error pages of one dashboard; its methods are Starlette exception handlers."""

    def __init__(self, renderer: Renderer) -> None:
        self.renderer = renderer
        self.logger = get_logger(__name__, type(self))

    def _page(self, request: Request, status_code: int, title: str, text: str, banner: str | None = None) -> Response:
        context = {"title": title, "text": text, "nav": ""}
        return self.renderer.render(request, "error.html", context, status_code=status_code, banner=banner)

    def not_found(self, request: Request, exc: Exception) -> Response:
        """A message, queue or page that does not exist."""
        if isinstance(exc, QueueNotFound):
            text = f"There is no queue named {exc}."
        elif isinstance(exc, NotFound):
            text = str(exc)
        else:
            text = "There is no such page."
        return self._page(request, 404, "Not found", text)

    def http_error(self, request: Request, exc: Exception) -> Response:
        """Starlette's own errors: unknown routes (404) and wrong methods (405)."""
        if isinstance(exc, HTTPException) and exc.status_code != 404:
            return self._page(request, exc.status_code, "Not allowed", str(exc.detail))
        return self.not_found(request, exc)

    def forbidden(self, request: Request, exc: Exception) -> Response:
        """An action refused: read-only mode, or a missing or wrong CSRF token."""
        return self._page(request, 403, "Refused", str(exc))

    def unreachable(self, request: Request, exc: Exception) -> Response:
        """The broker (or its job store) does not answer."""
        self.logger.warning("The broker cannot be reached: %s", exc)
        return self._page(request, 503, "Broker unreachable", str(exc), banner=UNREACHABLE)

    def not_configured(self, request: Request, exc: Exception) -> Response:
        """Job status asked of a broker that keeps none (RabbitMQ without a job store)."""
        return self._page(request, 501, "Job status is not available", str(exc))

    def handlers(self) -> dict[int | type[Exception], object]:
        """The handlers to give Starlette."""
        return {
            404: self.http_error,
            405: self.http_error,
            NotFound: self.not_found,
            QueueNotFound: self.not_found,
            Forbidden: self.forbidden,
            BrokerConnectionError: self.unreachable,
            JobStoreNotConfigured: self.not_configured,
        }
