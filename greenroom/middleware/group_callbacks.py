"""Enqueue a group's completion callbacks once every member has succeeded."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

from .. import _settings
from ..composition import GroupBarriers
from ..message import Message
from ..rate_limits import Barrier
from .middleware import Middleware

if TYPE_CHECKING:
    from ..broker import Broker, MessageProxy
    from ..rate_limits import RateLimiterBackend

__all__ = ["DEFAULT_BARRIER_TTL", "GroupCallbacks"]

#: How long a group's barrier lives by default, in milliseconds (one day).
DEFAULT_BARRIER_TTL = 86400 * 1000


class GroupCallbacks(Middleware, GroupBarriers):
    """Run ``group.add_completion_callback`` messages when the whole group has succeeded.

    ``group.run`` creates a barrier with one party per member and tags each member (the last
    message of a pipeline member) with the barrier's key and the callbacks. Each member that
    succeeds arrives at the barrier; the last one to arrive enqueues the callbacks. A member that
    fails for good never arrives, so the callbacks never run.

    Parameters:
      rate_limiter_backend: Where the barriers live; producers and workers must share it.
      barrier_ttl: How long a group may take, in milliseconds, before its barrier expires.
    """

    def __init__(self, rate_limiter_backend: RateLimiterBackend, *, barrier_ttl: int = DEFAULT_BARRIER_TTL) -> None:
        self.rate_limiter_backend = rate_limiter_backend
        self.barrier_ttl = barrier_ttl
        env_ttl = _settings.group_callback_barrier_ttl_ms()
        if env_ttl is not None:
            variable = _settings.GROUP_CALLBACK_BARRIER_TTL_ENV
            warnings.warn(
                f"{variable} is deprecated; pass barrier_ttl to GroupCallbacks instead.",
                FutureWarning,
                stacklevel=2,
            )
            self.barrier_ttl = env_ttl

    def create_barrier(self, key: str, parties: int) -> None:
        """Create a group's barrier in the rate-limiter backend (``group.run`` calls this)."""
        Barrier(self.rate_limiter_backend, key, ttl=self.barrier_ttl).create(parties)

    def after_process_message(
        self, broker: Broker, message: MessageProxy, *, result: Any = None, exception: BaseException | None = None
    ) -> None:
        if exception is not None or message.failed:
            return
        completion_uuid = message.options.get("group_completion_uuid")
        callbacks = message.options.get("group_completion_callbacks")
        if not completion_uuid or not callbacks:
            return
        backend = self.rate_limiter_backend
        # Delivery is at-least-once: a member processed twice must count once, and the callbacks
        # must be sent once even if the barrier is seen cleared more than once.
        if not backend.add(f"{completion_uuid}@member@{message.message_id}", 1, self.barrier_ttl):
            return
        barrier = Barrier(backend, completion_uuid, ttl=self.barrier_ttl)
        if barrier.wait(block=False) and backend.add(f"{completion_uuid}@fired", 1, self.barrier_ttl):
            for callback in callbacks:
                broker.enqueue(Message(**callback))
