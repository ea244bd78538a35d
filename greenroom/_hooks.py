"""The middleware hook protocol, as the broker sees it: the hook names, the signals, and what a middleware offers.

The broker dispatches the hooks, but the :class:`~greenroom.middleware.Middleware` base class lives
in the middleware package above it (its hook signatures name the worker and the actor). The broker
therefore knows middleware only through :class:`MiddlewareLike`; :mod:`greenroom.middleware.middleware`
re-exports :data:`HOOKS` and documents the lifecycle.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final, Literal, Protocol

__all__ = ["HOOKS", "AfterSignal", "BeforeSignal", "MiddlewareLike"]

#: The name of every hook method a middleware may override.
HOOKS: Final = frozenset(
    {
        "before_declare_actor",
        "after_declare_actor",
        "before_declare_queue",
        "after_declare_queue",
        "after_declare_delay_queue",
        "before_enqueue",
        "after_enqueue",
        "after_process_boot",
        "before_worker_boot",
        "after_worker_boot",
        "after_consumer_thread_boot",
        "before_consumer_thread_shutdown",
        "after_worker_thread_boot",
        "before_worker_thread_shutdown",
        "before_delay_message",
        "before_process_message",
        "after_process_message",
        "after_skip_message",
        "before_ack",
        "after_ack",
        "before_nack",
        "after_nack",
        "before_worker_shutdown",
        "after_worker_shutdown",
    }
)

#: Signals that have a ``before_`` hook.
BeforeSignal = Literal[
    "declare_actor",
    "declare_queue",
    "enqueue",
    "worker_boot",
    "consumer_thread_shutdown",
    "worker_thread_shutdown",
    "delay_message",
    "process_message",
    "ack",
    "nack",
    "worker_shutdown",
]
#: Signals that have an ``after_`` hook.
AfterSignal = Literal[
    "declare_actor",
    "declare_queue",
    "declare_delay_queue",
    "enqueue",
    "process_boot",
    "worker_boot",
    "consumer_thread_boot",
    "worker_thread_boot",
    "process_message",
    "skip_message",
    "ack",
    "nack",
    "worker_shutdown",
]


class MiddlewareLike(Protocol):
    """What a broker and the CLI need of a middleware; :class:`greenroom.middleware.Middleware` provides it.

    The broker calls each hook named by :meth:`hooks` by that name, with the signature the
    ``Middleware`` base class gives it.
    """

    @property
    def stores_results(self) -> bool:
        """Whether the middleware stores actor results (it then has a ``backend``)."""
        ...

    @property
    def actor_options(self) -> set[str]:
        """The actor options this middleware reads."""
        ...

    @property
    def forks(self) -> list[Callable[[], int]]:
        """Module-level functions the CLI runs in their own processes."""
        ...

    def hooks(self) -> list[str]:
        """The names of the hooks the middleware overrides (a subset of :data:`HOOKS`)."""
        ...
