"""Results through the SQLite backend, fetched by a producer in another process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import greenroom
from greenroom import Worker
from greenroom.brokers.sqlite import SQLiteBroker
from greenroom.results import Results
from greenroom.results.backends import SQLiteBackend

ROOT = Path(__file__).resolve().parents[2]
PRODUCER = Path(__file__).with_name("_sqlite_producer.py")


def test_a_producer_process_gets_results_with_only_the_default_broker(tmp_path: Path) -> None:
    # The worker runs here, on the file the producer's default broker and backend will open.
    db = tmp_path / "greenroom.db"
    backend = SQLiteBackend(path=db)
    broker = SQLiteBroker(db, middleware=None)
    broker.add_middleware(Results(backend=backend))
    broker.emit_after("process_boot")

    @greenroom.actor(broker=broker, store_results=True)
    def add(x: int, y: int) -> int:
        return x + y

    @greenroom.actor(broker=broker, store_results=True, max_retries=0)
    def explode() -> None:
        raise OSError("disk on fire")

    env = {k: v for k, v in os.environ.items() if k not in ("greenroom_broker_url", "dramatiq_broker_url")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    worker = Worker(broker, worker_timeout=100, worker_threads=2)
    worker.start()
    producer = subprocess.Popen(
        [sys.executable, str(PRODUCER)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        stdout, stderr = producer.communicate(timeout=90)
    finally:
        if producer.poll() is None:
            producer.terminate()
            try:
                producer.wait(10)
            except subprocess.TimeoutExpired:
                producer.kill()
                producer.wait(10)
        worker.stop(timeout=10000)
        broker.close()
        backend.close()
    assert producer.returncode == 0, stderr
    report = json.loads(stdout.strip().splitlines()[-1])
    assert report == {"sum": 42, "failure": ["OSError", "disk on fire"]}
