"""Leases and tick records on the Redis broker's server, under its namespace.

Per schedule ``<name>``, with the broker's key prefix (``<namespace>:`` when it has one):

* ``__schedules__.<name>``, a hash: ``token`` (the fencing token), ``last_tick`` and
  ``last_run`` (epoch ms);
* ``__schedules__.<name>.lease``, a string ``"<token> <holder JSON>"`` that expires (``PX``) unless
  its holder renews it. Expiry runs on the Redis server's clock, so skewed hosts do not matter.

Each operation is one Lua script (``_scripts/*.lua``), so the fencing check and the write are
atomic; one round trip renews or takes all the leases of a scheduler.
"""

from __future__ import annotations

import importlib.resources
from collections.abc import Mapping, Sequence
from typing import Any

from .._redis import translate_redis_errors
from ._store import Claim, Holder, Lease, Recorded, ScheduleStore

__all__ = ["RedisStore"]

#: Key prefix of the schedules' hashes and leases (after the broker's namespace).
KEY_PREFIX = "__schedules__."
#: The reply of record.lua for each outcome.
_CLAIMS = {1: Claim.RECORDED, 0: Claim.TAKEN, -1: Claim.LOST}


def _optional_int(value: Any) -> int | None:
    return int(value) if value not in (None, b"", "") else None


class RedisStore(ScheduleStore):
    """The store of schedulers whose broker is a Redis server.

    Parameters:
      client: The broker's redis-py client.
      namespace: The broker's namespace (``""`` for none).
    """

    def __init__(self, client: Any, namespace: str) -> None:
        self.client = client
        self.prefix = f"{namespace}:{KEY_PREFIX}" if namespace else KEY_PREFIX
        self._scripts: dict[str, Any] = {}

    def _keys(self, name: str) -> list[str]:
        return [f"{self.prefix}{name}", f"{self.prefix}{name}.lease"]

    def _script(self, name: str) -> Any:
        script = self._scripts.get(name)
        if script is None:
            source = importlib.resources.files(__package__ or "greenroom.scheduling").joinpath(f"_scripts/{name}.lua")
            script = self.client.register_script(source.read_bytes())
            self._scripts[name] = script
        return script

    def _run_all(self, script_name: str, calls: Sequence[tuple[list[str], list[Any]]], doing: str) -> list[Any]:
        """One script call per ``(keys, args)``, sent together in one round trip."""
        if not calls:
            return []
        script = self._script(script_name)
        with translate_redis_errors(doing):
            pipe = self.client.pipeline(transaction=False)
            for keys, args in calls:
                script(keys=keys, args=args, client=pipe)
            return list(pipe.execute())

    def acquire(self, names: Sequence[str], holder: Holder, lease_ms: int, now_ms: int) -> list[Lease]:
        calls = [(self._keys(name), [holder.to_json(), lease_ms]) for name in names]
        replies = self._run_all("acquire", calls, "taking schedule leases")
        return [
            Lease(name, int(reply[0]), _optional_int(reply[1]), _optional_int(reply[2]))
            for name, reply in zip(names, replies, strict=True)
            if reply is not None
        ]

    def renew(self, leases: Sequence[Lease], holder: Holder, lease_ms: int, now_ms: int) -> list[Lease]:
        calls = [(self._keys(lease.name), [lease.token, holder.to_json(), lease_ms]) for lease in leases]
        replies = self._run_all("renew", calls, "renewing schedule leases")
        return [lease for lease, reply in zip(leases, replies, strict=True) if int(reply) == 1]

    def record(self, lease: Lease, tick_ms: int, *, run: bool) -> Claim:
        keys = self._keys(lease.name)[:1]
        with translate_redis_errors(f"recording a tick of schedule {lease.name!r}"):
            reply = self._script("record")(keys=keys, args=[lease.token, tick_ms, "1" if run else "0"])
        return _CLAIMS[int(reply)]

    def release(self, leases: Sequence[Lease], holder: Holder) -> None:
        calls = [(self._keys(lease.name), [lease.token, holder.to_json()]) for lease in leases]
        self._run_all("release", calls, "releasing schedule leases")

    def read(self, names: Sequence[str], now_ms: int) -> Mapping[str, Recorded]:
        with translate_redis_errors("reading schedules"):
            pipe = self.client.pipeline(transaction=False)
            for name in names:
                record_key, lease_key = self._keys(name)
                pipe.hmget(record_key, "last_tick", "last_run")
                pipe.get(lease_key)
            replies = pipe.execute()
        found = {}
        for index, name in enumerate(names):
            last_tick, last_run = replies[2 * index]
            lease = replies[2 * index + 1]
            if isinstance(lease, bytes):
                lease = lease.decode()
            # "<token> <holder JSON>"; a client built with decode_responses gives str already.
            holder_json = lease.partition(" ")[2] if isinstance(lease, str) else None
            found[name] = Recorded(_optional_int(last_tick), _optional_int(last_run), Holder.from_json(holder_json))
        return found
