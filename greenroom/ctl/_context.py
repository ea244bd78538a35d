"""The application a ``greenroomctl`` command works on, imported when a command first needs it."""

from __future__ import annotations

import sys

from .. import _settings
from ..broker import Broker
from ..brokers._url import broker_from_url
from ..cli import ExitCode
from ..cli._app import import_broker

__all__ = ["AppContext", "ContextError"]


class ContextError(Exception):
    """The command cannot run; the message is the line to show, ``code`` the exit code."""

    def __init__(self, code: ExitCode, message: str) -> None:
        super().__init__(message)
        self.code = code


class AppContext:
    """The application named by ``--app``, or a broker named by ``--url`` (or ``greenroom_broker_url``).

    Parameters:
      app: ``module``, ``module:broker`` or ``module:callable``, as for ``greenroom``.
      paths: Directories put in front of the import path first.
      url: A broker URL, used when no ``app`` is given: queues, dead letters, status, cancel and
        workers need no application code; schedules do.
    """

    def __init__(self, app: str | None, paths: tuple[str, ...], url: str | None = None) -> None:
        self.app = app
        self.paths = paths
        self.url = url
        self._broker: Broker | None = None

    @property
    def broker(self) -> Broker:
        """The application's broker, with its actors and schedules declared.

        Raises:
          ContextError: When no ``--app`` was given, or it does not import (exit code 2).
        """
        if self._broker is None and not self.app:
            url = self.url or _settings.broker_url()
            if not url:
                raise ContextError(ExitCode.IMPORT, "name the broker: --url, greenroom_broker_url, or --app")
            try:
                self._broker = broker_from_url(url)
            except (ValueError, ImportError) as exc:
                raise ContextError(ExitCode.IMPORT, f"bad broker URL: {exc}") from exc
        if self._broker is None:
            if not self.app:
                raise ContextError(ExitCode.IMPORT, "this command needs --app (the application module)")
            for path in reversed(self.paths):
                sys.path.insert(0, path)
            try:
                self._broker = import_broker(self.app)
            except ImportError as exc:
                raise ContextError(ExitCode.IMPORT, f"could not import {self.app!r}: {exc}") from exc
        return self._broker

    def close(self) -> None:
        """Close the broker's connections, if it was imported."""
        if self._broker is not None:
            self._broker.close()
