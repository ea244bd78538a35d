"""A rate-limiter backend on memcached (pylibmc)."""

from __future__ import annotations

from typing import Any

from ..._memcached import make_pool, translate_memcached_errors, ttl_seconds
from ..backend import Compute, UpdatingBackend

__all__ = ["MemcachedBackend"]

#: memcached's clock advances in whole-second ticks, so an item may expire up to one tick early.
_CLOCK_TICK_MS = 1000


def _expiry(ttl_ms: int) -> int:
    """memcached's expiry for a key that must live at least ``ttl_ms``: one clock tick longer.

    memcached stamps an item with its own clock, which ticks once a second and so lags the real
    time by up to a second: an item stored with expiry ``n`` lives between ``n - 1`` and ``n``
    seconds. A window limiter's key for second ``s`` must count until second ``s + window``
    begins; expiring a second early let a second batch in per window (12 acquisitions over 20 s
    of a ``limit=2, window=5`` limiter, where at most 10 fit). Keys that live up to a second
    longer than asked cost nothing: bucket and window keys are per bucket or second, and barrier
    and concurrent-limiter TTLs are upper bounds for crashed holders anyway.
    """
    return ttl_seconds(ttl_ms + _CLOCK_TICK_MS)


class MemcachedBackend(UpdatingBackend):
    """Counters in memcached, updated with compare-and-swap loops.

    Unlike Dramatiq's, a refused ``incr`` leaves the counter untouched (Dramatiq's increments
    unconditionally, so refusals pile up and starve a concurrent limiter), ``decr`` honours its
    minimum, TTLs are rounded *up* to whole seconds plus one (memcached's clock ticks once a
    second, see :func:`_expiry`), and barriers can block (by polling).

    Parameters:
      pool: A ``pylibmc.ClientPool``; ``pool_size`` and ``client_params`` are ignored then.
      pool_size: How many connections the pool holds.
      client_params: Keyword arguments for ``pylibmc.Client`` (``servers`` defaults to
        ``["127.0.0.1:11211"]``); CAS is always turned on.
    """

    poll_max_backoff_ms = 250

    def __init__(self, *, pool: Any = None, pool_size: int = 8, **client_params: Any) -> None:
        self.pool = make_pool(pool, pool_size, client_params)

    def add(self, key: str, value: int, ttl: int) -> bool:
        with translate_memcached_errors(), self.pool.reserve(block=True) as client:
            return bool(client.add(key, value, time=_expiry(ttl)))

    def _update(self, key: str, ttl: int, compute: Compute, others: list[str]) -> bool:
        """Compare-and-swap ``key`` to ``compute(current, others_sum)`` unless it is None; retry on conflict."""
        expiry = _expiry(ttl)
        with translate_memcached_errors(), self.pool.reserve(block=True) as client:
            while True:
                current, cas_id = client.gets(key)
                if cas_id is None and client.get(key) is not None:
                    # libmemcached's gets can report a present key as missing (seen on a client's
                    # first gets); a plain get tells the truth, so read again.
                    continue
                # The other keys are read, not locked: a concurrent write to one of them can let a
                # window sum overshoot by that write, a race every per-key store shares.
                others_sum = sum(int(v) for v in client.get_multi(others).values()) if others else 0
                new_value = compute(int(current or 0), others_sum)
                if new_value is None:
                    return False
                if cas_id is None:
                    if client.add(key, new_value, time=expiry):
                        return True
                elif client.cas(key, new_value, cas_id, time=expiry):
                    return True

    def wait_notify(self, key: str, ttl: int) -> None:
        with translate_memcached_errors(), self.pool.reserve(block=True) as client:
            client.set(key, 1, time=_expiry(ttl))

    def _is_notified(self, key: str) -> bool:
        with translate_memcached_errors(), self.pool.reserve(block=True) as client:
            return client.get(key) is not None
