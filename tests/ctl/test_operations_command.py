"""``greenroomctl`` against real brokers: queues, dead letters, status, cancel, workers, and bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from greenroom.testing import wait_for
from tests.cli._trees import Tree, app_env
from tests.conftest import redis_client_for

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT_S = 60.0

APP = """
import os
import greenroom
from greenroom.jobs import JobTracking, RedisJobStore

kind = os.environ["GR_CTL_BROKER"]
store = None
if kind == "sqlite":
    from greenroom.brokers.sqlite import SQLiteBroker
    broker = SQLiteBroker(os.environ["GR_TEST_DB"])
elif kind == "redis":
    from greenroom.brokers.redis import RedisBroker
    broker = RedisBroker(url="redis://127.0.0.1:6379/0", namespace=os.environ["GR_CTL_NS"])
else:
    from greenroom.brokers.rabbitmq import RabbitmqBroker
    broker = RabbitmqBroker(url=os.environ["GR_CTL_AMQP"])
    store = RedisJobStore.from_url("redis://127.0.0.1:6379/0", namespace=os.environ["GR_CTL_NS"])
broker.add_middleware(JobTracking(store=store, heartbeat_interval=300))
greenroom.set_broker(broker)
QUEUE = os.environ["GR_CTL_QUEUE"]

@greenroom.actor(queue_name=QUEUE, max_retries=0)
def doomed(n):
    if not os.path.exists(os.environ["GR_CTL_HEALED"]):
        raise RuntimeError(f"doomed {n}")
"""


class Ctl:
    """Runs ``greenroomctl --app app ...`` for one broker kind in a work directory."""

    def __init__(self, workdir: Path, env: dict[str, str]) -> None:
        self.workdir = workdir
        self.env = env
        self.queue = env["GR_CTL_QUEUE"]

    def run(self, *args: str, app: bool = True) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "greenroom.ctl", *(["--app", "app"] if app else []), *args]
        return subprocess.run(command, cwd=self.workdir, env=self.env, capture_output=True, text=True, timeout=120)

    def json(self, *args: str) -> Any:
        result = self.run(*args, "--json")
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    def python(self, code: str) -> None:
        subprocess.run([sys.executable, "-c", f"import app\n{code}"], cwd=self.workdir, env=self.env, check=True)


@pytest.fixture(params=["sqlite", "redis", "rabbitmq"])
def ctl(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Ctl]:
    kind = request.param
    namespace = f"gr-ctl-{uuid.uuid4().hex[:10]}"
    env = {
        **app_env(tmp_path),
        "PYTHONPATH": str(ROOT),
        "GR_CTL_BROKER": kind,
        "GR_CTL_NS": namespace,
        "GR_CTL_QUEUE": f"ctl_{uuid.uuid4().hex[:8]}",
        "GR_CTL_HEALED": str(tmp_path / "healed"),
    }
    if kind == "rabbitmq":
        env["GR_CTL_AMQP"] = request.getfixturevalue("rabbitmq_vhost")
    (tmp_path / "app.py").write_text(APP)
    cleanup = redis_client_for(namespace)[1]
    yield Ctl(tmp_path, env)
    cleanup()


def test_dead_letters_round_trip_with_json_output(ctl: Ctl) -> None:
    ctl.python("for n in range(3): app.doomed.send(n)")
    tree = Tree(ctl.workdir, ["-p", "1", "-t", "2"], env=ctl.env)
    try:
        wait_for(lambda: ctl.json("queues", ctl.queue)["queues"][0]["dead"] == 3, TIMEOUT_S)
        listed = ctl.json("dead", "list", ctl.queue)["dead_letters"]
        assert len(listed) == 3
        assert {letter["actor"] for letter in listed} == {"doomed"}
        assert all("doomed" in letter["reason"] for letter in listed)
        first = listed[0]["message_id"]

        # Requeue one by id: it runs again (and now succeeds); the other two stay dead.
        Path(ctl.env["GR_CTL_HEALED"]).touch()
        assert ctl.json("dead", "requeue", ctl.queue, first, "--yes") == {"queue": ctl.queue, "requeued": 1}
        wait_for(lambda: ctl.json("status", first)["state"] == "succeeded", TIMEOUT_S)
        assert {letter["message_id"] for letter in ctl.json("dead", "list", ctl.queue)["dead_letters"]} == {
            letter["message_id"] for letter in listed[1:]
        }
        # Purging only older ones keeps them; purging all empties the queue's dead letters.
        assert ctl.json("dead", "purge", ctl.queue, "--older-than", "1h", "--yes")["purged"] == 0
        assert ctl.json("dead", "purge", ctl.queue, "--yes")["purged"] == 2
        assert ctl.json("dead", "list", ctl.queue)["dead_letters"] == []
    finally:
        tree.cleanup()


def test_destructive_commands_ask_first(ctl: Ctl) -> None:
    result = ctl.run("dead", "purge", ctl.queue)  # input is not a terminal: nothing confirms
    assert result.returncode == 1
    assert "pass --yes" in result.stderr


def test_workers_come_and_go_with_their_heartbeats(ctl: Ctl) -> None:
    trees = [Tree(ctl.workdir, ["-p", "1", "-t", "2"], env=ctl.env) for _ in range(2)]
    try:
        pids: list[int] = []
        for tree in trees:
            tree.wait_ready()
            pids += tree.worker_pids()

        def listed() -> set[int]:
            return {int(info["pid"]) for info in ctl.json("workers")["workers"]}

        wait_for(lambda: set(pids) <= listed(), TIMEOUT_S)
        os.kill(pids[0], signal.SIGKILL)
        wait_for(lambda: pids[0] not in listed(), TIMEOUT_S)  # within 3 heartbeats of 300 ms
        assert pids[1] in listed()
        text = ctl.run("workers").stdout
        assert "HOST" in text
        assert str(pids[1]) in text
    finally:
        for tree in trees:
            tree.cleanup()


def test_status_and_cancel_say_clearly_what_is_wrong(ctl: Ctl) -> None:
    unknown = ctl.run("status", str(uuid.uuid4()))
    assert unknown.returncode == 1
    assert "No status" in unknown.stdout
    malformed = ctl.run("status", "not an id")
    assert malformed.returncode == 2
    assert "is not a message id" in malformed.stderr
    nothing = ctl.run("cancel", str(uuid.uuid4()), "--yes")
    assert nothing.returncode == 1
    assert "nothing cancelled" in nothing.stdout
    no_queue = ctl.run("dead", "list", "no_such_queue_here")
    assert no_queue.returncode == 1
    assert "unknown queue" in no_queue.stderr
    assert "Traceback" not in unknown.stderr + malformed.stderr + nothing.stderr + no_queue.stderr


def test_an_unreachable_broker_is_one_line_and_exit_3(tmp_path: Path) -> None:
    env = {**app_env(tmp_path), "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "greenroom.ctl", "--url", "redis://127.0.0.1:1/0", "queues", "default"]
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 3
    assert result.stderr.count("\n") == 1
    assert "could not be reached" in result.stderr


def test_the_dashboard_command_serves_the_application(tmp_path: Path) -> None:
    import urllib.request

    from tests.cli.test_metrics import free_port

    port = free_port()
    env = {
        **app_env(tmp_path),
        "PYTHONPATH": str(ROOT),
        "GR_CTL_BROKER": "sqlite",
        "GR_CTL_NS": "unused",
        "GR_CTL_QUEUE": "ctl_dashboard",
        "GR_CTL_HEALED": str(tmp_path / "healed"),
    }
    (tmp_path / "app.py").write_text(APP)
    command = [sys.executable, "-m", "greenroom.ctl", "--app", "app", "dashboard", "--port", str(port)]
    errors = tmp_path / "dashboard.stderr"
    with errors.open("wb") as stderr:
        server = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=stderr)

    def page() -> str:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as response:
                return str(response.read().decode())
        except OSError:
            return ""

    try:
        wait_for(lambda: "ctl_dashboard" in page() or server.poll() is not None, TIMEOUT_S)
        assert server.poll() is None, errors.read_text()
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(30)
    bad = subprocess.run([*command[:-1], "0"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2
    assert "--port must be" in bad.stderr
