"""Fair dispatch across the processes of a worker tree: a busy process leaves work to idle ones.

With 2 processes × 4 threads and 8 long messages sent at once, every message starts at once, on
every broker: no process keeps messages waiting in its memory while the other has idle threads.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

from greenroom.testing import wait_for
from tests._postgres import URL as POSTGRES_URL
from tests._postgres import private_schema
from tests.cli._trees import Tree, app_env
from tests.cli.test_metrics import free_port
from tests.conftest import redis_client_for

parser = pytest.importorskip("prometheus_client.parser")

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT_S = 60.0
#: Every one of the 8 messages must have started within this long of the send.
START_BOUND_S = 1.0


def _in_progress(port: int) -> float:
    """The sum of ``greenroom_messages_inprogress`` over every actor and queue, or -1 when unreachable."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text = response.read().decode()
    except OSError:
        return -1.0
    return sum(
        sample.value
        for family in parser.text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "greenroom_messages_inprogress"
    )


@pytest.mark.parametrize("kind", ["sqlite", "redis", "rabbitmq", "postgres"])
def test_eight_long_tasks_start_at_once_on_two_processes_of_four_threads(
    tmp_path: Path, kind: str, request: pytest.FixtureRequest
) -> None:
    namespace = f"gr-fair-{uuid.uuid4().hex[:10]}"
    port = free_port()
    release = tmp_path / "release"
    env = {
        **app_env(tmp_path),
        "PYTHONPATH": str(ROOT),
        "GR_FAIR_BROKER": kind,
        "GR_FAIR_NS": namespace,
        "GR_FAIR_QUEUE": f"fair_{uuid.uuid4().hex[:8]}",
        "GR_FAIR_RELEASE": str(release),
        "greenroom_prom_enabled": "1",
        "greenroom_prom_host": "127.0.0.1",
        "greenroom_prom_port": str(port),
        "greenroom_prom_db": str(tmp_path / "prom"),
    }
    if kind == "rabbitmq":
        env["GR_FAIR_AMQP"] = request.getfixturevalue("rabbitmq_vhost")
    schemas = contextlib.ExitStack()
    if kind == "postgres":
        env["GR_FAIR_PG"] = POSTGRES_URL
        env["GR_FAIR_SCHEMA"] = schemas.enter_context(private_schema())
    (tmp_path / "app.py").write_text("from tests.dispatch._fair_app import *  # noqa: F403\n")
    ledger = tmp_path / "results.txt"
    tree = Tree(tmp_path, ["-p", "2", "-t", "4"], env=env)
    cleanup = redis_client_for(namespace)[1] if kind == "redis" else None
    try:
        tree.wait_ready()
        wait_for(lambda: _in_progress(port) == 0, TIMEOUT_S)  # both processes up and serving metrics
        sent_at = time.time()
        producer = "import app\nfor n in range(8): app.long_task.send(n)\napp.broker.close()\n"
        subprocess.run([sys.executable, "-c", producer], cwd=tmp_path, env=env, check=True, timeout=60)

        def starts() -> list[list[str]]:
            lines = ledger.read_text().splitlines() if ledger.exists() else []
            return [line.split() for line in lines if line.startswith("start ")]

        wait_for(lambda: len(starts()) == 8, TIMEOUT_S)
        started = starts()
        latest = max(float(fields[2]) for fields in started)
        assert latest - sent_at < START_BOUND_S, f"the last of 8 started {latest - sent_at:.2f} s after the send"
        assert len({fields[3] for fields in started}) == 2  # both processes took their share
        wait_for(lambda: _in_progress(port) == 8, TIMEOUT_S)
        release.touch()
        wait_for(lambda: ledger.read_text().count("end ") == 8, TIMEOUT_S)
    finally:
        release.touch()
        tree.cleanup()
        if cleanup is not None:
            cleanup()
        schemas.close()
