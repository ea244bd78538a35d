"""What stands between a request and the dashboard: the auth hook, CSRF tokens and protective headers.

**CSRF.** Each browser gets a random, HTTP-only, ``SameSite=Strict`` cookie on its first page; the
forms it is shown carry an HMAC of that cookie under the dashboard's secret, and a POST is refused
unless the two agree. A page on another site can neither read the cookie nor compute the token.
Processes that serve one dashboard behind a load balancer must share the ``secret``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from collections.abc import Callable

from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["CSRF_COOKIE", "AuthHook", "BasicAuth", "CsrfTokens", "Guard"]

#: The name of the cookie the CSRF token is derived from.
CSRF_COOKIE = "greenroom_dashboard_csrf"

#: Decides whether a request may see the dashboard (it sees the request: headers, session, user).
AuthHook = Callable[[Request], bool]

#: Headers every response gets: no framing, no sniffing, nothing loaded from elsewhere.
_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"x-frame-options", b"DENY"),
]


class BasicAuth:
    """An :data:`AuthHook` that asks for one user name and password (HTTP Basic; use it over TLS or loopback).

    Parameters:
      user: The user name.
      password: The password.
    """

    #: The challenge a refused browser gets, so that it asks for the credentials.
    challenge = 'Basic realm="greenroom dashboard", charset="UTF-8"'

    def __init__(self, user: str, password: str) -> None:
        if not user or not password:
            raise ValueError("the dashboard's user and password must both be non-empty")
        self._expected = hashlib.sha256(f"{user}:{password}".encode()).digest()

    def __call__(self, request: Request) -> bool:
        scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            given = base64.b64decode(encoded.strip(), validate=True)
        except (binascii.Error, ValueError):
            return False
        # Compared as digests, in constant time: the length of the secret leaks nothing either.
        return hmac.compare_digest(hashlib.sha256(given).digest(), self._expected)


class CsrfTokens:
    """Issues and checks the CSRF tokens of one dashboard (see the module docstring).

    Parameters:
      secret: The key of the HMAC; a random one (good for one process) when ``None``.
    """

    def __init__(self, secret: str | bytes | None = None) -> None:
        if secret is None:
            secret = secrets.token_bytes(32)
        self._key = secret.encode() if isinstance(secret, str) else bytes(secret)

    @staticmethod
    def new_cookie() -> str:
        """A fresh random cookie value."""
        return secrets.token_urlsafe(32)

    def token(self, cookie: str) -> str:
        """The token that forms carry for a browser holding ``cookie``."""
        return hmac.new(self._key, cookie.encode(), hashlib.sha256).hexdigest()

    def valid(self, cookie: str | None, token: str | None) -> bool:
        """Whether a POST that carried ``token`` from a browser holding ``cookie`` may change something."""
        if not cookie or not token:
            return False
        return hmac.compare_digest(self.token(cookie), token)


class Guard:
    """ASGI middleware: refuses requests the auth hook rejects and adds protective headers to every response.

    Parameters:
      app: The dashboard's routes.
      auth: The hook; ``None`` lets every request in.
    """

    def __init__(self, app: ASGIApp, auth: AuthHook | None) -> None:
        self.app = app
        self.auth = auth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *_HEADERS]
            await send(message)

        if self.auth is not None and not self.auth(Request(scope)):
            challenge = getattr(self.auth, "challenge", None)
            if isinstance(challenge, str):
                refused = PlainTextResponse("Sign in to see the dashboard.", 401, {"WWW-Authenticate": challenge})
            else:
                refused = PlainTextResponse("You may not see the dashboard.", 403)
            await refused(scope, receive, send_with_headers)
            return
        await self.app(scope, receive, send_with_headers)
