"""Settings that come from the environment: the one module that reads greenroom's environment variables.

Each accessor reads the environment when it is called, that is when the setting is first needed
(a ``Worker`` is built, the default broker is created, a consumer starts), never at import: a
variable set after ``import greenroom`` is honoured, and importing greenroom reads nothing. An
accessor returns ``None`` when its variable is unset; the caller applies its own default, so that
a value passed to a constructor always wins over the environment.

Every ``greenroom_<name>`` variable is also read under its Dramatiq spelling, ``dramatiq_<name>``.
The CLI reads its own flags and passes values down as arguments.
"""

from __future__ import annotations

import os

__all__ = [
    "BROKER_URL_ENV",
    "DEFAULT_SQLITE_PATH",
    "GROUP_CALLBACK_BARRIER_TTL_ENV",
    "HEALTH_DIR_ENV",
    "PROMETHEUS_MULTIPROC_ENV",
    "TREE_ID_ENV",
    "broker_url",
    "dead_message_ttl_ms",
    "delay_queue_prefetch",
    "getenv_int",
    "group_callback_barrier_ttl_ms",
    "health_dir",
    "health_host",
    "health_port",
    "health_timeout_ms",
    "lua_max_stack",
    "prom_host",
    "prom_port",
    "prometheus_multiproc_dir",
    "queue_prefetch",
    "restart_delay_ms",
    "tree_id",
    "worker_timeout_ms",
]

#: The environment variable that selects the broker for producers and workers alike.
BROKER_URL_ENV = "greenroom_broker_url"
#: Deprecated override of ``GroupCallbacks(barrier_ttl=...)`` (kept for Dramatiq compatibility).
GROUP_CALLBACK_BARRIER_TTL_ENV = "greenroom_group_callback_barrier_ttl"
#: Set by the ``greenroom`` command for its worker processes: processes with the same value share
#: per-actor concurrency slots (``max_concurrency``).
TREE_ID_ENV = "greenroom_tree_id"
#: Where the default SQLite broker, results backend and rate-limiter backend keep their database:
#: relative to the working directory, so that a producer and a worker started from the same
#: project directory share it.
DEFAULT_SQLITE_PATH = "greenroom.db"
#: The environment variables prometheus_client reads to find the multiprocess directory, in the order
#: it reads them (they are prometheus_client's, so they have no ``dramatiq_`` spelling).
PROMETHEUS_MULTIPROC_ENV = ("PROMETHEUS_MULTIPROC_DIR", "prometheus_multiproc_dir")
#: Set by the ``greenroom`` command for its children: the directory where each worker process of
#: the run keeps its health record (see :mod:`greenroom._health`).
HEALTH_DIR_ENV = "greenroom_health_dir"

_PREFIX = "greenroom_"
_DRAMATIQ_PREFIX = "dramatiq_"


def _dramatiq_name(name: str) -> str:
    return _DRAMATIQ_PREFIX + name[len(_PREFIX) :]


def getenv_int(name: str) -> int | None:
    """Read an integer environment variable; ``None`` when unset or empty.

    The ``dramatiq_`` spelling of a ``greenroom_`` variable is read when the ``greenroom_`` one is
    not set at all.

    Raises:
      ValueError: When the variable is set to something other than an integer.
    """
    value = os.environ.get(name)
    if value is None and name.startswith(_PREFIX):
        value = os.environ.get(_dramatiq_name(name))
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name} must be an integer, not {value!r}") from None


def broker_url() -> str | None:
    """The URL of the global broker: ``greenroom_broker_url``, else ``dramatiq_broker_url``, else ``None``.

    An empty ``greenroom_broker_url`` counts as unset, so the Dramatiq spelling is read then.
    """
    return os.environ.get(BROKER_URL_ENV) or os.environ.get(_dramatiq_name(BROKER_URL_ENV)) or None


def worker_timeout_ms() -> int | None:
    """``greenroom_worker_timeout``: how long worker and consumer threads wait for work (ms)."""
    return getenv_int("greenroom_worker_timeout")


def queue_prefetch() -> int | None:
    """``greenroom_queue_prefetch``: unacknowledged messages per queue and worker."""
    return getenv_int("greenroom_queue_prefetch")


def delay_queue_prefetch() -> int | None:
    """``greenroom_delay_queue_prefetch``: unacknowledged delayed messages per delay queue and worker."""
    return getenv_int("greenroom_delay_queue_prefetch")


def restart_delay_ms() -> int | None:
    """``greenroom_restart_delay``: how long a consumer thread waits before reconnecting (ms)."""
    return getenv_int("greenroom_restart_delay")


def group_callback_barrier_ttl_ms() -> int | None:
    """The deprecated ``greenroom_group_callback_barrier_ttl`` (ms)."""
    return getenv_int(GROUP_CALLBACK_BARRIER_TTL_ENV)


def dead_message_ttl_ms() -> int | None:
    """``greenroom_dead_message_ttl``: how long dead-lettered messages are kept (ms)."""
    return getenv_int("greenroom_dead_message_ttl")


def lua_max_stack() -> int | None:
    """``greenroom_lua_max_stack``: the Lua stack limit of the Redis server, when it is not the default."""
    return getenv_int("greenroom_lua_max_stack")


def prom_host() -> str | None:
    """``greenroom_prom_host``, else ``dramatiq_prom_host``: where the metrics server listens.

    An empty ``greenroom_prom_host`` counts as unset, so the Dramatiq spelling is read then.
    """
    return os.environ.get("greenroom_prom_host") or os.environ.get("dramatiq_prom_host") or None


def prom_port() -> int | None:
    """``greenroom_prom_port``: the port the metrics server listens on."""
    return getenv_int("greenroom_prom_port")


def health_dir() -> str | None:
    """The health record directory of the ``greenroom`` run this process belongs to, if any."""
    return os.environ.get(HEALTH_DIR_ENV) or None


def health_host() -> str | None:
    """``greenroom_health_host``: where the health server of its own (``greenroom_health_port``) listens."""
    return os.environ.get("greenroom_health_host") or os.environ.get("dramatiq_health_host") or None


def health_port() -> int | None:
    """``greenroom_health_port``: the port of the health server of its own; ``None`` when there is none."""
    return getenv_int("greenroom_health_port")


def health_timeout_ms() -> int | None:
    """``greenroom_health_timeout``: how long (ms) a worker process may go without a successful broker
    round trip, or without renewing its health record, before ``/healthz`` counts it as unable to work."""
    return getenv_int("greenroom_health_timeout")


def tree_id() -> str | None:
    """Which ``greenroom`` process tree this process belongs to, if the command started it."""
    return os.environ.get(TREE_ID_ENV) or None


def prometheus_multiproc_dir() -> str | None:
    """The multiprocess directory of prometheus_client: the first of :data:`PROMETHEUS_MULTIPROC_ENV` set
    to a non-empty value, else ``None``."""
    for name in PROMETHEUS_MULTIPROC_ENV:
        value = os.environ.get(name)
        if value:
            return value
    return None
