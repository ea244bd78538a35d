"""The results backend contract: the base class owns keys, encoding, blocking and backoff."""

from __future__ import annotations

import abc
import hashlib
import time
from typing import TYPE_CHECKING, Any, ClassVar

from .._globals import get_encoder
from .._types import MessageLike
from ..common import Deadline, compute_backoff, q_name
from .errors import ResultMissing, ResultTimeout
from .result import Missing, unwrap_result, wrap_exception, wrap_result

if TYPE_CHECKING:
    from ..encoder import Encoder

__all__ = ["DEFAULT_NAMESPACE", "DEFAULT_TIMEOUT", "MessageLike", "ResultBackend"]

#: The default prefix of result keys.
DEFAULT_NAMESPACE = "greenroom-results"
#: How long a blocking ``get_result`` waits by default, in milliseconds.
DEFAULT_TIMEOUT = 10000


class ResultBackend(abc.ABC):
    """Base class for results backends.

    Subclasses implement two primitives, :meth:`_get` and :meth:`_store`, working on keys and
    (decoded) values; they may also override :meth:`_get_blocking` when their store can wait for a
    key more cheaply than by polling. Everything else — key layout, failure wrapping, the
    blocking/backoff policy and timeouts — lives here.

    Parameters:
      namespace: The prefix of every key.
      encoder: How values are turned into bytes; the global encoder (at construction) by default.
      use_namespace_prefix_keys: Store under the readable ``namespace:queue:actor:id`` key instead
        of its MD5 digest (the two layouts do not see each other's results).
    """

    #: The longest pause between two polls of a blocking get, in milliseconds.
    poll_max_backoff_ms: ClassVar[int] = 2000
    #: The first pause between two polls, in milliseconds (doubling, with jitter).
    poll_min_backoff_ms: ClassVar[int] = 100

    def __init__(
        self,
        *,
        namespace: str = DEFAULT_NAMESPACE,
        encoder: Encoder | None = None,
        use_namespace_prefix_keys: bool = False,
    ) -> None:
        self.namespace = namespace
        self.encoder = encoder or get_encoder()
        self.use_namespace_prefix_keys = use_namespace_prefix_keys

    # -- public API -----------------------------------------------------------------------------

    def get_result(self, message: MessageLike, *, block: bool = False, timeout: int | None = None) -> Any:
        """Fetch the result of a message.

        Parameters:
          message: The message whose result to fetch (only its queue, actor and id matter).
          block: Wait for the result to be stored.
          timeout: How long to wait when blocking, in milliseconds (10 s by default).

        Raises:
          ResultMissing: When not blocking and there is no result.
          ResultTimeout: When blocking and no result was stored in time.
          ResultFailure: When the message failed; it names the actor's exception.
        """
        key = self.build_message_key(message)
        if not block:
            value = self._get(key)
            if value is Missing:
                raise ResultMissing(message)
        else:
            timeout_ms = DEFAULT_TIMEOUT if timeout is None else timeout
            value = self._get_blocking(key, max(0, timeout_ms))
            if value is Missing:
                raise ResultTimeout(message)
        return self.unwrap_result(value)

    def store_result(self, message: MessageLike, result: Any, ttl: int) -> None:
        """Store a message's result for ``ttl`` milliseconds."""
        self._store(self.build_message_key(message), self.wrap_result(result), ttl)

    def store_exception(self, message: MessageLike, exception: BaseException, ttl: int) -> None:
        """Store a message's failure for ``ttl`` milliseconds."""
        self._store(self.build_message_key(message), self.wrap_exception(exception), ttl)

    def build_message_key(self, message: MessageLike) -> str:
        """The key a message's result is stored under."""
        key = f"{self.namespace}:{q_name(message.queue_name)}:{message.actor_name}:{message.message_id}"
        if self.use_namespace_prefix_keys:
            return key
        return hashlib.md5(key.encode("utf-8")).hexdigest()

    def wrap_result(self, result: Any) -> Any:
        """The value stored for a result."""
        return wrap_result(result)

    def wrap_exception(self, exception: BaseException) -> Any:
        """The value stored for a failure."""
        return wrap_exception(exception)

    def unwrap_result(self, value: Any) -> Any:
        """A stored value turned back into a result (raising ``ResultFailure`` for a failure)."""
        return unwrap_result(value)

    # -- helpers for subclasses -----------------------------------------------------------------

    def _encode(self, value: Any) -> bytes:
        return self.encoder.encode(value)

    def _decode(self, data: bytes | str) -> Any:
        return self.encoder.decode(data)  # type: ignore[arg-type]  # JSON also takes str

    # -- primitives -----------------------------------------------------------------------------

    @abc.abstractmethod
    def _get(self, message_key: str) -> Any:
        """The (decoded) value stored under a key, or :data:`Missing`."""

    @abc.abstractmethod
    def _store(self, message_key: str, result: Any, ttl: int) -> None:
        """Store a value under a key, replacing any previous one, for ``ttl`` milliseconds."""

    def _get_blocking(self, message_key: str, timeout_ms: int) -> Any:
        """Wait up to ``timeout_ms`` for a value under a key; :data:`Missing` on timeout.

        The default polls :meth:`_get` with jittered exponential backoff, never sleeping past the
        deadline, and checks one last time at the deadline.
        """
        deadline = Deadline.after_ms(timeout_ms)
        attempts = 0
        while True:
            value = self._get(message_key)
            if value is not Missing:
                return value
            if deadline.expired():
                return Missing
            attempts, backoff_ms = compute_backoff(
                attempts, factor=self.poll_min_backoff_ms, max_backoff=self.poll_max_backoff_ms
            )
            time.sleep(deadline.left_s(backoff_ms / 1000))
