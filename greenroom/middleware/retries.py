"""Retry failed messages with exponential backoff."""

from __future__ import annotations

import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .._options import NO_OPTIONS, resolve_option
from ..common import compute_backoff, current_millis, is_expected
from ..errors import Cancelled, Retry
from ..logging import get_logger
from .middleware import Middleware, enqueue_or_fail

if TYPE_CHECKING:
    from ..broker import Broker, MessageProxy

__all__ = ["DEFAULT_MAX_BACKOFF", "DEFAULT_MAX_RETRIES", "DEFAULT_MIN_BACKOFF", "Retries"]

#: Retries before a message is dead-lettered.
DEFAULT_MAX_RETRIES = 20
#: The first retry waits between this and twice this many milliseconds.
DEFAULT_MIN_BACKOFF = 15000
#: The longest backoff, in milliseconds (7 days); also the cap on any configured max_backoff.
DEFAULT_MAX_BACKOFF = 7 * 24 * 3600 * 1000


class Retries(Middleware):
    """Re-enqueue failed messages with exponential backoff and jitter; dead-letter them when done.

    The delay before retry *n* (0-based) is ``min_backoff * 2**n * U[1, 2]`` ms, replaced by
    ``max_backoff * U[0.5, 1]`` above ``max_backoff``. A :class:`~greenroom.Retry` raised with a
    ``delay`` overrides it. ``retry_when(retries, exception)`` replaces the ``max_retries`` test;
    exceptions listed in ``throws`` are dead-lettered at once.

    Parameters:
      max_retries: The default retry count (``None`` retries forever).
      min_backoff: The default base delay in milliseconds.
      max_backoff: The default cap in milliseconds.
      retry_when: A default predicate deciding whether to retry.
    """

    def __init__(
        self,
        *,
        max_retries: int | None = DEFAULT_MAX_RETRIES,
        min_backoff: int | None = None,
        max_backoff: int | None = None,
        retry_when: Callable[[int, BaseException], bool] | None = None,
    ) -> None:
        self.logger = get_logger(__name__, type(self))
        self.max_retries = max_retries
        self.min_backoff = min_backoff or DEFAULT_MIN_BACKOFF
        self.max_backoff = max_backoff or DEFAULT_MAX_BACKOFF
        self.retry_when = retry_when

    @property
    def actor_options(self) -> set[str]:
        return {"max_retries", "min_backoff", "max_backoff", "retry_when", "throws", "on_retry_exhausted"}

    def after_process_message(
        self, broker: Broker, message: MessageProxy, *, result: Any = None, exception: BaseException | None = None
    ) -> None:
        if exception is None:
            return
        if isinstance(exception, Cancelled):
            self.logger.info("Message %r was cancelled; it is not retried.", message.message_id)
            message.fail()
            return
        options = message.options
        actor = broker.actors.get(message.actor_name)
        actor_options = actor.options if actor is not None else NO_OPTIONS

        throws = resolve_option("throws", options, actor_options, None)
        if is_expected(exception, throws):
            self.logger.info("Aborting message %r: %s is in 'throws'.", message.message_id, type(exception).__name__)
            message.fail()
            return

        retries = options.setdefault("retries", 0)
        options["retries"] = retries + 1
        options["traceback"] = "".join(
            traceback.format_exception(type(exception), exception, exception.__traceback__, limit=30)
        )
        options["requeue_timestamp"] = current_millis()

        max_retries = resolve_option("max_retries", options, actor_options, self.max_retries)
        retry_when = resolve_option("retry_when", NO_OPTIONS, actor_options, self.retry_when)
        if (retry_when is not None and not retry_when(retries, exception)) or (
            retry_when is None and max_retries is not None and retries >= max_retries
        ):
            self.logger.warning("Retries exceeded for message %r.", message.message_id)
            message.fail()
            target = resolve_option("on_retry_exhausted", options, actor_options, None)
            if target:
                broker.get_actor(target).send(message.asdict(), {"retries": retries, "max_retries": max_retries})
            return

        if isinstance(exception, Retry) and exception.delay is not None:
            delay = exception.delay
        else:
            min_backoff = resolve_option("min_backoff", options, actor_options, self.min_backoff)
            max_backoff = resolve_option("max_backoff", options, actor_options, self.max_backoff)
            max_backoff = min(max_backoff, DEFAULT_MAX_BACKOFF)
            _, delay = compute_backoff(retries, factor=min_backoff, max_backoff=max_backoff)

        self.logger.info("Retrying message %r in %d milliseconds.", message.message_id, delay)
        enqueue_or_fail(broker, message, message.message.copy(), delay, self.logger, "the retry")
