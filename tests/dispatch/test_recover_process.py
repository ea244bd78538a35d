"""``broker.recover_process``: a worker process killed with SIGKILL gets its messages back at once.

Without it, SQLite waits for the lease (30 s) and Redis for the heartbeat timeout (60 s).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest

import greenroom
from greenroom import Worker
from greenroom.broker import Broker
from greenroom.testing import wait_for
from tests.conftest import redis_client_for

ROOT = Path(__file__).resolve().parents[2]
REDIS_URL = "redis://127.0.0.1:6379/0"
TIMEOUT_S = 60.0
#: The 20 messages of the killed process must all be done within this long of its death.
RECOVERY_BOUND_S = 5.0

HOLDER = textwrap.dedent(
    """
    import os, sys, threading
    import greenroom
    from greenroom import Worker
    kind, target, queue = sys.argv[1:4]
    if kind == "sqlite":
        from greenroom.brokers.sqlite import SQLiteBroker
        broker = SQLiteBroker(target)
    else:
        from greenroom.brokers.redis import RedisBroker
        broker = RedisBroker(url="{redis_url}", namespace=target)
    broker.emit_after("process_boot")

    @greenroom.actor(broker=broker, queue_name=queue)
    def job(n):
        threading.Event().wait()  # held until the process is killed

    Worker(broker, worker_threads=1, queue_prefetch=20, worker_timeout=100).start()
    threading.Event().wait()
    """
).replace("{redis_url}", REDIS_URL)


def _make_broker(kind: str, target: str) -> Broker:
    if kind == "sqlite":
        from greenroom.brokers.sqlite import SQLiteBroker

        return SQLiteBroker(target)
    from greenroom.brokers.redis import RedisBroker

    return RedisBroker(url=REDIS_URL, namespace=target)


def _all_taken(kind: str, broker: Broker, queue: str) -> bool:
    if kind == "sqlite":
        return broker.get_queue_counts(queue).in_progress == 20  # type: ignore[attr-defined]
    return int(broker._storage().execute("LLEN", broker._storage().keys.queue(queue).messages)) == 0  # type: ignore[attr-defined]


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_messages_of_a_killed_process_are_back_at_once(tmp_path: Path, kind: str) -> None:
    target = str(tmp_path / "broker.db") if kind == "sqlite" else f"gr-recover-{uuid.uuid4().hex[:10]}"
    cleanup = redis_client_for(target)[1] if kind == "redis" else None
    queue = f"recover_{uuid.uuid4().hex[:8]}"
    broker = _make_broker(kind, target)
    broker.emit_after("process_boot")
    done: Counter[int] = Counter()

    @greenroom.actor(broker=broker, queue_name=queue)
    def job(n: int) -> None:
        done[n] += 1

    for n in range(20):
        job.send(n)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, kind, target, queue], env=env)
    worker = None
    try:
        wait_for(lambda: _all_taken(kind, broker, queue), TIMEOUT_S)
        holder.send_signal(signal.SIGKILL)
        holder.wait(TIMEOUT_S)
        killed_s = time.monotonic()
        worker = Worker(broker, worker_threads=4, worker_timeout=100)
        worker.start()
        assert broker.recover_process(socket.gethostname(), holder.pid) >= 1
        wait_for(lambda: len(done) == 20, TIMEOUT_S)
        assert time.monotonic() - killed_s < RECOVERY_BOUND_S
        assert set(done.values()) == {1}
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(TIMEOUT_S)
        if worker is not None:
            worker.stop(timeout=10000)
        broker.close()
        if cleanup is not None:
            cleanup()
