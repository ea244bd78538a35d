"""``GET /healthz`` on real ``greenroom`` trees: on a port of its own, on the metrics server, and
as the broker goes away and comes back."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from greenroom.cli import make_argument_parser
from greenroom.cli._args import options_from_namespace
from greenroom.testing import wait_for
from tests.brokers._redis_server import RedisServer, free_port
from tests.cli._trees import Tree, app_env, is_running
from tests.conftest import service_unavailable

pytestmark = pytest.mark.slow

SQLITE_APP = textwrap.dedent(
    """
    import os

    import greenroom
    from greenroom.brokers.sqlite import SQLiteBroker

    greenroom.set_broker(SQLiteBroker(path=os.environ["GR_TEST_DB"]))


    @greenroom.actor
    def job(n):
        pass
    """
)

REDIS_APP = textwrap.dedent(
    """
    import os

    import greenroom
    from greenroom.brokers.redis import RedisBroker

    # A short retry budget: a lost connection is reported to the consumers within half a second.
    greenroom.set_broker(RedisBroker(url=os.environ["GR_TEST_REDIS_URL"], retry_timeout=500))


    @greenroom.actor
    def job(n):
        pass
    """
)

#: How long a tree may take to notice a change in its health (boot, a broker leaving or coming back).
TIMEOUT_S = 60.0


def get_health(port: int, path: str = "/healthz") -> tuple[int | None, Any, str]:
    """(status, JSON body, content type) of ``GET path``; (None, None, "") when nothing listens yet."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
            return response.status, json.loads(response.read()), response.headers["Content-Type"]
    except urllib.error.HTTPError as exc:
        with exc:
            body = exc.read()
            content_type = exc.headers["Content-Type"]
        return exc.code, json.loads(body) if content_type == "application/json" else body, content_type
    except OSError:
        return None, None, ""


def wait_health(port: int, code: int, status: str) -> dict[str, Any]:
    """Wait until ``/healthz`` answers ``code`` with this ``status`` in its body; returns that body."""
    answers: list[Any] = []

    def answered() -> bool:
        answers.append(get_health(port))
        code_now, body, _ = answers[-1]
        return code_now == code and isinstance(body, dict) and body["status"] == status

    try:
        wait_for(answered, timeout_s=TIMEOUT_S, interval_s=0.02)
    except TimeoutError:
        raise AssertionError(f"/healthz never answered {code} {status!r}; last answer: {answers[-1:]}") from None
    body: dict[str, Any] = answers[-1][1]
    return body


def assert_healthy(body: dict[str, Any], processes: int) -> None:
    assert body["status"] == "ok"
    assert body["worker_processes"] == {"alive": processes, "can_work": processes}
    # One consumer per queue and delay queue of each process, all connected.
    assert body["consumers"]["total"] == 2 * processes
    assert body["consumers"]["connected"] == body["consumers"]["total"]
    assert 0 <= body["last_broker_contact_age_s"] < body["timeout_s"]
    assert body["last_broker_contact"].endswith("+00:00")
    assert len(body["processes"]) == processes
    assert all(p["can_work"] and p["problem"] is None for p in body["processes"])


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "app.py").write_text(SQLITE_APP)
    return tmp_path


def test_healthz_on_a_port_of_its_own_while_metrics_are_off(workdir: Path, trees: list[Tree]) -> None:
    port = free_port()
    tree = Tree(workdir, ["-p", "2", "-t", "2", "--health-port", str(port)])
    trees.append(tree)
    tree.wait_ready()
    body = wait_health(port, 200, "ok")
    assert_healthy(body, processes=2)
    assert get_health(port)[2] == "application/json"
    assert get_health(port, "/metrics")[0] == 404

    # Every worker process killed: no live one until the replacements boot and reach the broker.
    workers = {p["pid"] for p in body["processes"]}
    for pid in workers:
        os.kill(pid, signal.SIGKILL)
    down = wait_health(port, 503, "unavailable")
    assert down["worker_processes"]["can_work"] == 0
    assert not workers & {p["pid"] for p in down["processes"]}
    back = wait_health(port, 200, "ok")
    assert_healthy(back, processes=2)
    assert not workers & {p["pid"] for p in back["processes"]}

    tree.signal(signal.SIGTERM)
    assert tree.wait_exit() == 0
    assert get_health(port)[0] is None  # the health server went with the tree


def test_healthz_on_the_metrics_server(workdir: Path, trees: list[Tree]) -> None:
    pytest.importorskip("prometheus_client")
    port = free_port()
    env = {
        "greenroom_prom_enabled": "1",
        "greenroom_prom_host": "127.0.0.1",
        "greenroom_prom_port": str(port),
        "greenroom_prom_db": str(workdir / "prom"),
    }
    tree = Tree(workdir, ["-p", "1", "-t", "2"], env=env)
    trees.append(tree)
    tree.wait_ready()
    assert_healthy(wait_health(port, 200, "ok"), processes=1)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        assert response.headers["Content-Type"].startswith("text/plain")
    assert "health checks" not in tree.log_text()  # no second server: the metrics one answers


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    try:
        server.start()
    except (FileNotFoundError, TimeoutError) as exc:
        service_unavailable("redis-server", exc)
    yield server
    server.kill()


def test_healthz_answers_503_while_the_broker_is_unreachable(
    tmp_path: Path, redis_server: RedisServer, trees: list[Tree]
) -> None:
    (tmp_path / "app.py").write_text(REDIS_APP)
    port = free_port()
    env = {"GR_TEST_REDIS_URL": f"redis://127.0.0.1:{redis_server.port}/0", "greenroom_restart_delay": "200"}
    tree = Tree(tmp_path, ["-p", "1", "-t", "2", "--health-port", str(port)], env=env)
    trees.append(tree)
    tree.wait_ready()
    up = wait_health(port, 200, "ok")
    assert_healthy(up, processes=1)

    redis_server.kill()
    down = wait_health(port, 503, "unavailable")
    assert down["consumers"]["connected"] == 0
    assert down["processes"][0]["problem"] == "no consumer is connected to the broker"
    # The worker process lives on: it is the broker that is missing.
    assert down["processes"][0]["pid"] == up["processes"][0]["pid"]
    assert is_running(up["processes"][0]["pid"])

    redis_server.start()  # the same port and data directory
    back = wait_health(port, 200, "ok")
    assert_healthy(back, processes=1)
    assert back["processes"][0]["pid"] == up["processes"][0]["pid"]


def test_health_flags_are_parsed() -> None:
    namespace = make_argument_parser().parse_args(["app", "--health-port", "8080", "--health-host", "0.0.0.0"])
    options = options_from_namespace(namespace)
    assert (options.health_port, options.health_host) == (8080, "0.0.0.0")
    assert options_from_namespace(make_argument_parser().parse_args(["app"])).health_port is None


@pytest.mark.parametrize(
    ("args", "env", "error"),
    [
        (["--health-port", "0"], {}, "out of range"),
        ([], {"greenroom_health_port": "http"}, "greenroom_health_port must be an integer"),
        ([], {"greenroom_health_port": "70000"}, "out of range"),
        ([], {"greenroom_health_timeout": "soon"}, "greenroom_health_timeout must be an integer"),
    ],
)
def test_a_bad_health_setting_stops_the_run_with_one_line(
    workdir: Path, args: list[str], env: dict[str, str], error: str
) -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "greenroom", "app", "-p", "1", *args],
        cwd=workdir,
        env={**app_env(workdir), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert completed.returncode == 2
    assert error in completed.stderr
    assert "Traceback" not in completed.stderr
