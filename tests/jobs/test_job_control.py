"""Job control on real brokers: status read from another process, progress, and cancellation.

A ``greenroom`` process tree runs the actors of ``_jobs_app.py``; the test process sends to it and
reads status through a broker of its own (another process, another connection).
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

import greenroom
from greenroom.jobs import JobStatus, State, store_for
from greenroom.testing import wait_for
from tests._postgres import URL as POSTGRES_URL
from tests._postgres import private_schema
from tests.cli._trees import Tree, app_env
from tests.conftest import redis_client_for
from tests.jobs import _jobs_app

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT_S = 30.0
#: How long after cancel() a running actor must be interrupted.
INTERRUPT_BOUND_MS = 1000


class Setup:
    """A tree running the app on one broker, and the test's own producer on the same broker."""

    def __init__(self, workdir: Path, env: dict[str, str], trees: list[Tree]) -> None:
        self.workdir = workdir
        self.env = env
        (workdir / "app.py").write_text("from tests.jobs._jobs_app import *  # noqa: F403\n")
        self.broker, self.actors = _jobs_app.build(env)
        self.tree = Tree(workdir, ["-p", "1", "-t", "4"], env=env)
        trees.append(self.tree)
        self.ledger = Path(env["GR_TEST_RESULTS"])

    def status(self, message_id: str) -> JobStatus | None:
        return greenroom.get_status(message_id, broker=self.broker)

    def lines(self) -> list[str]:
        return self.ledger.read_text().splitlines() if self.ledger.exists() else []

    def wait_state(self, message_id: str, state: str) -> JobStatus:
        wait_for(lambda: (s := self.status(message_id)) is not None and s.state == state, TIMEOUT_S)
        status = self.status(message_id)
        assert status is not None
        return status


@pytest.fixture(params=["sqlite", "redis", "rabbitmq", "postgres"])
def setup(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Setup]:
    kind = request.param
    namespace = f"gr-jobs-{uuid.uuid4().hex[:10]}"
    env = {
        **app_env(tmp_path),
        "PYTHONPATH": str(ROOT),
        "GR_JOBS_BROKER": kind,
        "GR_JOBS_NS": namespace,
        "GR_JOBS_QUEUE": f"jobs_{uuid.uuid4().hex[:8]}",
    }
    cleanup = None
    if kind in ("redis", "rabbitmq"):
        _, cleanup = redis_client_for(namespace)
    if kind == "rabbitmq":
        env["GR_JOBS_AMQP"] = request.getfixturevalue("rabbitmq_vhost")
    schemas = contextlib.ExitStack()
    if kind == "postgres":
        env["GR_JOBS_PG"] = POSTGRES_URL
        env["GR_JOBS_SCHEMA"] = schemas.enter_context(private_schema())
    trees: list[Tree] = []
    setup = Setup(tmp_path, env, trees)
    yield setup
    for tree in trees:
        tree.cleanup()
    store_for(setup.broker).close()  # a store the broker's storage does not hold owns connections
    setup.broker.close()
    if cleanup is not None:
        cleanup()
    schemas.close()  # drops the Postgres schema, if any


def _dead_reason(setup: Setup, queue_name: str, message_id: str) -> str | None:
    """The reason a message was dead-lettered with, where the broker keeps reasons (None elsewhere)."""
    kind = setup.env["GR_JOBS_BROKER"]
    if kind == "sqlite":
        letters = setup.broker.get_dead_letters(queue_name)  # type: ignore[attr-defined]
        return next((letter.reason for letter in letters if letter.message_id == message_id), "")
    if kind == "redis":
        client = redis.Redis.from_url(_jobs_app.REDIS_URL)
        try:
            for redis_id, payload in client.hgetall(f"{setup.env['GR_JOBS_NS']}:{queue_name}.XQ.msgs").items():
                if message_id.encode() in payload:
                    reason = client.hget(f"{setup.env['GR_JOBS_NS']}:{queue_name}.XQ.reasons", redis_id)
                    return (reason or b"").decode()
            return ""
        finally:
            client.close()
    return None


def test_status_progress_and_cancellation_read_from_another_process(setup: Setup) -> None:
    actors: dict[str, Any] = setup.actors
    queue_name = setup.env["GR_JOBS_QUEUE"]

    # Cancelled before it starts: sent with a delay, cancelled before its eta, never run.
    early = actors["slow"].send_with_options(args=("early", 0.0), delay=1500)
    assert setup.status(early.message_id).state == State.DELAYED  # type: ignore[union-attr]
    assert greenroom.cancel(early.message_id, broker=setup.broker).requested
    setup.tree.wait_ready()

    # Fails twice, then succeeds: every state is visible from this process.
    flaky = actors["flaky"].send("f")
    seen: list[str] = []

    def finished() -> bool:
        status = setup.status(flaky.message_id)
        if status is not None and (not seen or seen[-1] != status.state):
            seen.append(status.state)
        return status is not None and status.state == State.SUCCEEDED

    wait_for(finished, TIMEOUT_S, interval_s=0.005)
    final = setup.status(flaky.message_id)
    assert final is not None
    assert final.attempts == 3
    assert final.finished_at_ms is not None
    assert final.error_type == "RuntimeError"
    assert "attempt 2 of f failed" in (final.error_message or "")
    assert State.RETRYING in seen
    assert seen[-1] == State.SUCCEEDED
    assert final.worker is not None
    assert final.worker.endswith(f":{setup.tree.worker_pids()[0]}")

    early_status = setup.wait_state(early.message_id, State.CANCELLED)
    assert early_status.attempts == 1
    assert "start early" not in setup.lines()
    reason = _dead_reason(setup, queue_name, early.message_id)
    assert reason is None or reason == "cancelled"

    # Progress set inside a running actor is read here while it runs; then it is cancelled.
    running = actors["slow"].send("long", 60.0)
    wait_for(lambda: (s := setup.status(running.message_id)) is not None and s.progress == 0.5, TIMEOUT_S)
    status = setup.status(running.message_id)
    assert status is not None
    assert status.state == State.RUNNING
    assert status.progress_note == "half way"
    asked_ms = int(time.time() * 1000)
    assert greenroom.cancel(running.message_id, broker=setup.broker).requested
    cancelled = setup.wait_state(running.message_id, State.CANCELLED)
    assert cancelled.finished_at_ms is not None
    assert cancelled.finished_at_ms - asked_ms < INTERRUPT_BOUND_MS
    assert "end long" not in setup.lines()

    # Cancelling the first step of a pipeline: the second step is never enqueued.
    steps = [actors["slow"].message("first", 60.0), actors["step"].message("second")]
    pipe = greenroom.pipeline(steps, broker=setup.broker)
    pipe.run()
    first_id = pipe.messages[0].message_id
    setup.wait_state(first_id, State.RUNNING)
    assert greenroom.cancel(first_id, broker=setup.broker).requested
    setup.wait_state(first_id, State.CANCELLED)
    actors["step"].send("sentinel")  # runs after anything the cancelled step could have enqueued
    wait_for(lambda: "step sentinel" in setup.lines(), TIMEOUT_S)
    assert "step second" not in setup.lines()
    assert setup.status(pipe.messages[1].message_id) is None

    # Finished and unknown ids: said so, nothing raised.
    assert greenroom.cancel(flaky.message_id, broker=setup.broker).outcome == "finished"
    assert greenroom.cancel(str(uuid.uuid4()), broker=setup.broker).outcome == "unknown"
    assert greenroom.get_status(str(uuid.uuid4()), broker=setup.broker) is None


def test_worker_list_comes_from_heartbeats(setup: Setup) -> None:
    from greenroom.jobs import store_for

    setup.tree.wait_ready()
    store = store_for(setup.broker)
    wait_for(lambda: any(info["pid"] in setup.tree.worker_pids() for info in store.workers()), TIMEOUT_S)
    info = next(info for info in store.workers() if info["pid"] in setup.tree.worker_pids())
    assert info["host"]
    assert setup.env["GR_JOBS_QUEUE"] in info["queues"]
    assert info["running"] == 0
    os.kill(setup.tree.worker_pids()[0], 9)
    pid = info["pid"]
    wait_for(lambda: all(other["pid"] != pid for other in store.workers()), TIMEOUT_S)
