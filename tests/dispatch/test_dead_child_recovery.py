"""The main process of a tree returns a dead worker process's messages at once (through its replacement).

With the default lease (SQLite and PostgreSQL, 30 s) and heartbeat timeout (Redis, 60 s), the 20 messages a
worker process held when it was killed with SIGKILL are all done within 2 seconds (the replacement
of a first death starts at once and returns them while it boots).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from greenroom.testing import wait_for
from tests._postgres import URL as POSTGRES_URL
from tests._postgres import private_schema
from tests.cli._trees import Tree, app_env
from tests.conftest import redis_client_for

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT_S = 60.0
RECOVERY_BOUND_S = 2.0  # the issue: messages back within 2 s; done once back, as they are released

APP = """
import os, pathlib, time
import greenroom

if os.environ["GR_KIND"] == "sqlite":
    from greenroom.brokers.sqlite import SQLiteBroker
    broker = SQLiteBroker(os.environ["GR_TEST_DB"])
elif os.environ["GR_KIND"] == "postgres":
    from greenroom.brokers.postgres import PostgresBroker
    broker = PostgresBroker(url=os.environ["GR_PG_URL"], schema=os.environ["GR_PG_SCHEMA"])
else:
    from greenroom.brokers.redis import RedisBroker
    broker = RedisBroker(url="redis://127.0.0.1:6379/0", namespace=os.environ["GR_NS"])
greenroom.set_broker(broker)
ledger = pathlib.Path(os.environ["GR_TEST_RESULTS"])
release = pathlib.Path(os.environ["GR_RELEASE"])

@greenroom.actor(queue_name=os.environ["GR_QUEUE"])
def hold(n):
    deadline = time.monotonic() + 60
    while not release.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    with ledger.open("a") as file:
        file.write(f"done {n}\\n")
"""


@pytest.mark.parametrize("kind", ["sqlite", "redis", "postgres"])
def test_messages_of_a_killed_worker_process_are_done_within_seconds(tmp_path: Path, kind: str) -> None:
    namespace = f"gr-child-{uuid.uuid4().hex[:10]}"
    env = {
        **app_env(tmp_path),
        "PYTHONPATH": str(ROOT),
        "GR_KIND": kind,
        "GR_NS": namespace,
        "GR_QUEUE": f"child_{uuid.uuid4().hex[:8]}",
        "GR_RELEASE": str(tmp_path / "release"),
        "greenroom_queue_prefetch": "20",  # one thread holding twenty messages
    }
    (tmp_path / "app.py").write_text(APP)
    ledger = tmp_path / "results.txt"
    cleanup = redis_client_for(namespace)[1] if kind == "redis" else None
    schema = contextlib.ExitStack()
    if kind == "postgres":
        env["GR_PG_URL"] = POSTGRES_URL
        env["GR_PG_SCHEMA"] = schema.enter_context(private_schema())
    tree = Tree(tmp_path, ["-p", "1", "-t", "1"], env=env)
    try:
        tree.wait_ready()
        producer = "import app\nfor n in range(20): app.hold.send(n)\napp.broker.close()\n"
        subprocess.run([sys.executable, "-c", producer], cwd=tmp_path, env=env, check=True, timeout=60)
        held = (
            "import app\n"
            "b = app.broker\n"
            "if hasattr(b, 'get_queue_counts'):\n"
            "    c = b.get_queue_counts(app.hold.queue_name)\n"
            "    print(c.ready)\n"
            "b.close()\n"
        )

        def all_taken() -> bool:
            result = subprocess.run([sys.executable, "-c", held], cwd=tmp_path, env=env, capture_output=True, text=True)
            return result.stdout.strip() == "0"

        wait_for(all_taken, TIMEOUT_S)
        [victim] = tree.worker_pids()
        os.kill(victim, signal.SIGKILL)
        killed_s = time.monotonic()
        (tmp_path / "release").touch()
        wait_for(lambda: ledger.exists() and ledger.read_text().count("done ") >= 20, TIMEOUT_S)
        elapsed_s = time.monotonic() - killed_s
        print(f"{kind}: the 20 messages were done {elapsed_s:.2f} s after the kill")
        assert elapsed_s < RECOVERY_BOUND_S
        assert "Returned the messages of dead worker process" in tree.log_text()
    finally:
        tree.cleanup()
        if cleanup is not None:
            cleanup()
        schema.close()
