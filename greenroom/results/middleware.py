"""The Results middleware: store what actors return, and why they failed."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .._options import resolve_option
from ..logging import get_logger
from ..middleware.middleware import Middleware

if TYPE_CHECKING:
    from ..broker import Broker, MessageProxy
    from .backend import ResultBackend

__all__ = ["DEFAULT_RESULT_TTL", "Results"]

#: How long results are kept by default, in milliseconds (10 minutes).
DEFAULT_RESULT_TTL = 600000


class Results(Middleware):
    """Store actor results (and final failures) in a results backend.

    A result is stored after every successful attempt. A failure is stored only when the message
    is dead-lettered (retries exhausted, ``throws``, age limit...), so while a message is being
    retried there is no result. A message skipped without failing stores ``None``.

    Actor and message options ``store_results`` and ``result_ttl`` (ms) override the defaults;
    a message option wins over the actor's.

    Parameters:
      backend: Where results are stored.
      store_results: Whether actors store results unless they say otherwise.
      result_ttl: How long results are kept, in milliseconds (10 minutes by default).
    """

    stores_results = True

    def __init__(self, *, backend: ResultBackend, store_results: bool = False, result_ttl: int | None = None) -> None:
        self.logger = get_logger(__name__, type(self))
        self.backend = backend
        self.store_results = store_results
        self.result_ttl = result_ttl or DEFAULT_RESULT_TTL

    @property
    def actor_options(self) -> set[str]:
        return {"store_results", "result_ttl"}

    def _lookup_options(self, broker: Broker, message: MessageProxy) -> tuple[bool, int]:
        """``(store_results, result_ttl)`` for a message: message option, else actor option, else default."""
        actor = broker.actors.get(message.actor_name)
        if actor is None:
            return False, 0
        store_results = resolve_option("store_results", message.options, actor.options, self.store_results)
        result_ttl = resolve_option("result_ttl", message.options, actor.options, self.result_ttl)
        return bool(store_results), int(result_ttl)

    def after_process_message(
        self, broker: Broker, message: MessageProxy, *, result: Any = None, exception: BaseException | None = None
    ) -> None:
        store_results, result_ttl = self._lookup_options(broker, message)
        if store_results and exception is None:
            self.backend.store_result(message, result, result_ttl)
        elif not store_results and result is not None and "pipe_target" not in message.options:
            self.logger.warning(
                "Actor %r returned a value that was discarded; set store_results=True to keep it.",
                message.actor_name,
            )

    def after_skip_message(self, broker: Broker, message: MessageProxy) -> None:
        store_results, result_ttl = self._lookup_options(broker, message)
        if store_results and not message.failed:
            self.backend.store_result(message, None, result_ttl)

    def after_nack(self, broker: Broker, message: MessageProxy) -> None:
        store_results, result_ttl = self._lookup_options(broker, message)
        if store_results and message.failed:
            exception = message.exception or Exception("unknown")
            self.backend.store_exception(message, exception, result_ttl)
