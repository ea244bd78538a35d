"""Protocols through which the lower layers name what the higher layers provide.

A message's ``get_result`` needs a results backend, and the global broker is asked for it; both
live above the message module (``greenroom.results``, ``greenroom.broker``), so the message module
names them through these protocols instead of importing them. :class:`greenroom.results.ResultBackend`
and :class:`greenroom.broker.Broker` satisfy them.
"""

from __future__ import annotations

from typing import Any, Protocol

__all__ = ["GlobalBroker", "MessageLike", "ResultBackendLike"]


class MessageLike(Protocol):
    """What a results backend reads from a message (a ``Message`` or a ``MessageProxy``)."""

    @property
    def queue_name(self) -> str: ...

    @property
    def actor_name(self) -> str: ...

    @property
    def message_id(self) -> str: ...


class ResultBackendLike(Protocol):
    """The public operations of a results backend."""

    def get_result(self, message: MessageLike, *, block: bool = ..., timeout: int | None = ...) -> Any: ...

    def store_result(self, message: MessageLike, result: Any, ttl: int) -> None: ...

    def store_exception(self, message: MessageLike, exception: BaseException, ttl: int) -> None: ...

    def build_message_key(self, message: MessageLike) -> str: ...


class GlobalBroker(Protocol):
    """What the layers below the broker ask of the global broker: where results are kept.

    :func:`greenroom.broker.get_broker` returns the same object with its full type.
    """

    def get_results_backend(self) -> ResultBackendLike: ...
