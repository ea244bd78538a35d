"""Health of a ``greenroom`` process tree: the records its worker processes write, and ``GET /healthz``.

Each worker process of a run writes a small JSON record, ``<pid>.json``, into a directory private
to the run about once a second (write to a temporary file, then rename, so that a reader never
sees half a record). The server that answers ``/healthz`` (the metrics exposition process, or a
health server of its own) reads the records of the processes that still exist and decides:

* a worker process *can work* when its record was renewed within the timeout and, if it consumes
  queues, at least one of its consumers is connected and the last successful broker round trip of
  the process (a consumer's fetch that returned a message or an idle tick) is within the timeout;
* the tree answers 200 when at least one worker process can work (``"status": "ok"``, or
  ``"degraded"`` when some process or consumer cannot), and 503 (``"unavailable"``) otherwise,
  which covers no live worker process, every consumer disconnected, and a broker silent for
  longer than the timeout.

The records cross process boundaries, so they carry wall-clock times (the one clock Python
promises to be comparable between processes); ages within a process come from the monotonic clock.
A wall-clock step can therefore skew the answer until the next record, about one second.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Iterable
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from . import _settings
from ._lazy import process_exists

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

__all__ = [
    "DEFAULT_HEALTH_HOST",
    "DEFAULT_TIMEOUT_S",
    "HEALTH_PATH",
    "ProcessRecord",
    "TreeHealth",
    "answer_health",
    "assess",
    "make_threaded_server",
    "read_records",
    "remove_record",
    "timeout_s",
    "write_record",
]

#: The path both servers answer.
HEALTH_PATH = "/healthz"
#: Where the health server of its own listens unless ``--health-host``/``greenroom_health_host`` says
#: otherwise: only this machine, since the body tells a little about the run (Kubernetes probes,
#: which come from the node, need ``0.0.0.0``).
DEFAULT_HEALTH_HOST = "127.0.0.1"
#: Seconds a worker process may go without a broker round trip, or without renewing its record,
#: before it counts as unable to work (``greenroom_health_timeout``, in ms, changes it).
DEFAULT_TIMEOUT_S = 30.0
_SUFFIX = ".json"


@dataclasses.dataclass(frozen=True)
class ProcessRecord:
    """What one worker process says of itself.

    Parameters:
      pid: The worker process.
      index: Its position in the tree (``WorkerProcess(index)`` in the logs).
      written_s: Wall time (Unix seconds) the record was written.
      consumers: How many consumer threads it runs (0 when it consumes nothing, e.g. ``--scheduler-only``).
      connected: How many of them are connected: their last call to the broker went through.
      contact_age_s: Seconds between its last successful broker round trip and ``written_s``;
        ``None`` before the first.
    """

    pid: int
    index: int
    written_s: float
    consumers: int
    connected: int
    contact_age_s: float | None

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ProcessRecord:
        """Raises: ValueError, TypeError or KeyError when ``text`` is not a record."""
        fields = json.loads(text)
        contact_age = fields["contact_age_s"]
        return cls(
            pid=int(fields["pid"]),
            index=int(fields["index"]),
            written_s=float(fields["written_s"]),
            consumers=int(fields["consumers"]),
            connected=int(fields["connected"]),
            contact_age_s=None if contact_age is None else float(contact_age),
        )


def write_record(directory: str, record: ProcessRecord) -> None:
    """Replace the record of ``record.pid`` atomically (a reader sees the old one or the new one)."""
    path = os.path.join(directory, f"{record.pid}{_SUFFIX}")
    temporary = f"{path}.tmp"
    with open(temporary, "w", encoding="utf-8") as file:
        file.write(record.to_json())
    os.replace(temporary, path)


def remove_record(directory: str, pid: int) -> None:
    """Remove the record of ``pid`` (a worker process stopping) and any temporary file it left."""
    for name in (f"{pid}{_SUFFIX}", f"{pid}{_SUFFIX}.tmp"):
        try:
            os.remove(os.path.join(directory, name))
        except FileNotFoundError:
            pass


def read_records(directory: str) -> list[ProcessRecord]:
    """The records of processes that exist; those of processes that are gone are removed."""
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    records = []
    for name in names:
        pid_text = name.partition(".")[0]
        if not pid_text.isdigit() or not name.startswith(f"{pid_text}{_SUFFIX}"):
            continue
        if not process_exists(int(pid_text)):
            remove_record(directory, int(pid_text))  # killed: it could not remove its own
            continue
        if name.endswith(_SUFFIX):
            try:
                with open(os.path.join(directory, name), encoding="utf-8") as file:
                    records.append(ProcessRecord.from_json(file.read()))
            except (OSError, ValueError, TypeError, KeyError):
                continue  # removed meanwhile (the process stopped), or not a record
    return sorted(records, key=lambda record: record.index)


@dataclasses.dataclass(frozen=True)
class TreeHealth:
    """The answer to ``GET /healthz``: whether the tree can do work, and the JSON body that says why."""

    can_work: bool
    body: dict[str, Any]

    @property
    def http_status(self) -> str:
        return "200 OK" if self.can_work else "503 Service Unavailable"


def _problem(record: ProcessRecord, now_s: float, timeout_s: float) -> str | None:
    """Why this worker process cannot work, or ``None`` when it can."""
    silent_s = max(0.0, now_s - record.written_s)
    if silent_s > timeout_s:
        return f"no health record for {silent_s:.0f} s"
    if record.consumers == 0:
        return None  # it consumes nothing: being alive is all it can show
    if record.connected == 0:
        if record.contact_age_s is None:
            return "no consumer has reached the broker yet"
        return "no consumer is connected to the broker"
    if record.contact_age_s is None or silent_s + record.contact_age_s > timeout_s:
        return f"no successful broker round trip for more than {timeout_s:g} s"
    return None


def _process_body(record: ProcessRecord, problem: str | None, now_s: float) -> dict[str, Any]:
    return {
        "pid": record.pid,
        "index": record.index,
        "can_work": problem is None,
        "problem": problem,
        "consumers": {"total": record.consumers, "connected": record.connected},
        "last_broker_contact_age_s": _contact_age_s(record, now_s),
    }


def _contact_age_s(record: ProcessRecord, now_s: float) -> float | None:
    if record.contact_age_s is None:
        return None
    return round(max(0.0, now_s - record.written_s) + record.contact_age_s, 3)


def assess(records: Iterable[ProcessRecord], now_s: float, timeout_s: float) -> TreeHealth:
    """Decide whether the tree whose live worker processes wrote ``records`` can work at ``now_s`` (wall time)."""
    records = list(records)
    problems = [_problem(record, now_s, timeout_s) for record in records]
    working = sum(problem is None for problem in problems)
    consumers = sum(record.consumers for record in records)
    connected = sum(record.connected for record in records)
    ages = [age for age in (_contact_age_s(record, now_s) for record in records) if age is not None]
    if not working:
        status = "unavailable"
    elif working == len(records) and connected == consumers:
        status = "ok"
    else:
        status = "degraded"
    last_contact_age_s = min(ages, default=None)
    body = {
        "status": status,
        "worker_processes": {"alive": len(records), "can_work": working},
        "consumers": {"total": consumers, "connected": connected},
        "last_broker_contact": None if last_contact_age_s is None else _iso(now_s - last_contact_age_s),
        "last_broker_contact_age_s": last_contact_age_s,
        "timeout_s": timeout_s,
        "processes": [_process_body(r, p, now_s) for r, p in zip(records, problems, strict=True)],
    }
    if not records:
        body["problem"] = "no live worker process"
    return TreeHealth(can_work=working > 0, body=body)


def _iso(unix_s: float) -> str:
    return datetime.fromtimestamp(unix_s, timezone.utc).isoformat(timespec="milliseconds")


def timeout_s() -> float:
    """The health timeout in seconds: ``greenroom_health_timeout`` (ms), else :data:`DEFAULT_TIMEOUT_S`."""
    timeout_ms = _settings.health_timeout_ms()
    return DEFAULT_TIMEOUT_S if timeout_ms is None or timeout_ms <= 0 else timeout_ms / 1000


def answer_health(start_response: Any) -> list[bytes]:
    """A WSGI answer to ``GET /healthz`` for the run this process belongs to (404 outside one)."""
    directory = _settings.health_dir()
    if directory is None:
        body = b'{"status": "unknown", "problem": "this process is not part of a greenroom run"}'
        status = "404 Not Found"
    else:
        health = assess(read_records(directory), time.time(), timeout_s())
        body = json.dumps(health.body).encode()
        status = health.http_status
    headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body))), ("Cache-Control", "no-store")]
    start_response(status, headers)
    return [body]


def make_threaded_server(host: str, port: int, app: Any, handler_class: type[WSGIRequestHandler]) -> WSGIServer:
    """A WSGI server that answers each request in a thread of its own: a slow scrape or a client
    that stalls cannot hold a health probe back.

    Raises:
      OSError: When it cannot listen on ``host:port``.
    """
    # Imported here: the worker processes import this module but never serve.
    from socketserver import ThreadingMixIn
    from wsgiref.simple_server import WSGIServer, make_server

    class ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
        daemon_threads = True

    return make_server(host, port, app, server_class=ThreadingWSGIServer, handler_class=handler_class)
