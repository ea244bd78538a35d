"""How a broker hosts middleware: hook dispatch, adding middleware, and queue listeners.

:class:`MiddlewareHost` is the part of :class:`~greenroom.broker.Broker` that runs middleware
hooks; the broker adds actors and queues, and replays their declarations to middleware added late.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from ._hooks import AfterSignal, BeforeSignal, MiddlewareLike
from .errors import MiddlewareError

__all__ = ["MiddlewareHost", "QueueListener"]

#: Called with ``(queue_name, is_delay_queue)`` for every queue a broker declares.
QueueListener = Callable[[str, bool], None]

_Hook = Callable[..., None]


def _owner(hook: _Hook) -> object:
    """The middleware a bound hook belongs to."""
    return getattr(hook, "__self__", hook)


class MiddlewareHost:
    """Installed middleware and their hooks, dispatched by signal.

    Parameters:
      middleware: The middleware to install, in order.
      logger: Where failing hooks are reported.
    """

    def __init__(self, middleware: Iterable[MiddlewareLike], logger: logging.Logger) -> None:
        self.logger = logger
        self.middleware: list[MiddlewareLike] = []
        self.actor_options: set[str] = set()
        self.has_results_middleware = False
        #: Prebuilt dispatch lists, rebuilt by add_middleware: signal → bound hook methods.
        self._before: dict[str, list[_Hook]] = {}
        self._after: dict[str, list[_Hook]] = {}
        #: Workers listen for queue declarations here rather than through the middleware bus.
        self._queue_listeners: list[QueueListener] = []
        self._rebuild_dispatch()
        for m in middleware:
            self.add_middleware(m)

    def emit_before(self, signal: BeforeSignal, *args: Any, **kwargs: Any) -> None:
        """Run ``before_<signal>`` of every middleware in order (see :mod:`greenroom.middleware.middleware`)."""
        for hook in self._before.get(signal, ()):
            try:
                hook(self, *args, **kwargs)
            except MiddlewareError:
                raise
            except Exception:
                self.logger.critical("Unexpected failure in before_%s of %r.", signal, _owner(hook), exc_info=True)

    def emit_after(self, signal: AfterSignal, *args: Any, **kwargs: Any) -> None:
        """Run ``after_<signal>`` of every middleware in reverse order; failures are logged."""
        for hook in self._after.get(signal, ()):
            try:
                hook(self, *args, **kwargs)
            except Exception:
                self.logger.critical("Unexpected failure in after_%s of %r.", signal, _owner(hook), exc_info=True)

    def add_middleware(
        self,
        middleware: MiddlewareLike,
        *,
        before: type[MiddlewareLike] | None = None,
        after: type[MiddlewareLike] | None = None,
    ) -> None:
        """Install a middleware, then replay the declarations it missed.

        Parameters:
          middleware: The middleware to add.
          before: Insert it before the first installed middleware of this class.
          after: Insert it after the first installed middleware of this class.

        Raises:
          AssertionError: When both ``before`` and ``after`` are given.
          ValueError: When the class named by ``before`` or ``after`` is not installed.
        """
        assert not (before and after), "provide either 'before' or 'after', not both"
        if any(type(m) is type(middleware) for m in self.middleware):
            self.logger.warning("Middleware %r is already installed; adding another.", middleware)
        if before or after:
            anchor = before or after
            position = next((i for i, m in enumerate(self.middleware) if isinstance(m, anchor)), None)  # type: ignore[arg-type]
            if position is None:
                raise ValueError(f"middleware {anchor!r} is not installed")
            self.middleware.insert(position if before else position + 1, middleware)
        else:
            self.middleware.append(middleware)
        self.actor_options |= middleware.actor_options
        self._rebuild_dispatch()

        self._replay_declarations(middleware)

    def _replay_declarations(self, middleware: MiddlewareLike) -> None:
        """Call the declaration hooks of a middleware added late for what was declared before it."""

    def _call_hook(self, middleware: MiddlewareLike, name: str, *args: Any) -> None:
        try:
            getattr(middleware, name)(self, *args)
        except Exception:
            self.logger.critical("Unexpected failure in %s of %r.", name, middleware, exc_info=True)

    def _rebuild_dispatch(self) -> None:
        before: dict[str, list[_Hook]] = {}
        after: dict[str, list[_Hook]] = {}
        for m in self.middleware:
            for name in m.hooks():
                prefix, _, signal = name.partition("_")
                (before if prefix == "before" else after).setdefault(signal, []).append(getattr(m, name))
        for hooks in after.values():
            hooks.reverse()
        # Workers learn about new queues from the declaration signals themselves, so a broker
        # written for Dramatiq (which only emits them) still gets consumers for later queues.
        after.setdefault("declare_queue", []).append(lambda _, name: self._notify_queue_declared(name, False))
        after.setdefault("declare_delay_queue", []).append(lambda _, name: self._notify_queue_declared(name, True))
        self._before = before
        self._after = after
        self.has_results_middleware = any(m.stores_results for m in self.middleware)

    # -- queue listeners (internal wiring for the Worker) --------------------------------------

    def add_queue_listener(self, listener: QueueListener) -> None:
        """Call ``listener`` for every queue declared so far and every queue declared from now on."""
        self._queue_listeners.append(listener)
        for queue_name, is_delay_queue in self._declared_queues():
            listener(queue_name, is_delay_queue)

    def _declared_queues(self) -> list[tuple[str, bool]]:
        """``(queue name, is a delay queue)`` of every queue declared so far."""
        return []

    def remove_queue_listener(self, listener: QueueListener) -> None:
        """Stop calling ``listener``."""
        if listener in self._queue_listeners:
            self._queue_listeners.remove(listener)

    def _notify_queue_declared(self, queue_name: str, is_delay_queue: bool) -> None:
        """Tell the queue listeners about a queue (``emit_after`` of a declaration does this)."""
        for listener in list(self._queue_listeners):
            listener(queue_name, is_delay_queue)
