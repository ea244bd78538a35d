"""Periodic jobs through the real commands: several ``greenroom`` runs on SQLite, Redis and RabbitMQ, a
leader killed with SIGKILL, ``--scheduler-only``/``--no-scheduler``, ``greenroomctl schedules``, bad input.

Every run is a process tree started in a session of its own (``tests/cli/_trees.py``) and killed
in the fixture's finaliser; the actor writes a ledger line per message it runs: the tick
(``options["scheduled_at"]``), the message id and when the message was created (enqueued).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from greenroom.testing import wait_for
from tests.cli._trees import Tree, app_env
from tests.scheduling.conftest import delete_streams, unique_name

pytestmark = pytest.mark.slow

APP_SOURCE = """
import json
import os

import greenroom
from greenroom.middleware import CurrentMessage

KIND = os.environ["GR_TEST_BROKER"]
if KIND == "sqlite":
    from greenroom.brokers.sqlite import SQLiteBroker, SQLiteSettings

    # Short message leases: a killed run's prefetched messages come back quickly.
    broker = SQLiteBroker(path=os.environ["GR_TEST_DB"], settings=SQLiteSettings(lease_ms=2000, synchronous="NORMAL"))
elif KIND == "redis":
    from greenroom.brokers.redis import RedisBroker

    broker = RedisBroker(namespace=os.environ["GR_TEST_NAMESPACE"], heartbeat_timeout=2000)
else:
    from greenroom.brokers.rabbitmq import RabbitmqBroker

    broker = RabbitmqBroker(url=os.environ["GR_TEST_AMQP_URL"])
broker.add_middleware(CurrentMessage())
greenroom.set_broker(broker)


@greenroom.actor(queue_name=os.environ["GR_TEST_QUEUE"], max_retries=0)
def tick():
    message = CurrentMessage.get_current_message()
    line = {"tick": message.options["scheduled_at"], "id": message.message_id, "sent": message.message_timestamp}
    fd = os.open(os.environ["GR_TEST_LEDGER"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (json.dumps(line) + "\\n").encode())
    finally:
        os.close(fd)


SCHEDULE
"""
GOOD_SCHEDULE = 'greenroom.schedule(tick, every=1, name=os.environ["GR_TEST_SCHEDULE"])'

#: Window A: three runs, nobody killed; window B: the same, the leader killed half-way through.
WINDOW_MS = 20_000


@dataclasses.dataclass
class Setup:
    """One broker's application directory and the runs started in it."""

    kind: str
    workdir: Path
    env: dict[str, str]
    trees: list[Tree] = dataclasses.field(default_factory=list)

    @property
    def ledger(self) -> Path:
        return self.workdir / "ledger.jsonl"

    def rows(self) -> list[dict[str, int]]:
        if not self.ledger.exists():
            return []
        return [json.loads(line) for line in self.ledger.read_text().splitlines() if line.strip()]

    def ctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return run_ctl(self.workdir, self.env, *args)


def make_setup(kind: str, base: Path, schedule: str = GOOD_SCHEDULE, **env: str) -> Setup:
    workdir = base / kind
    workdir.mkdir()
    (workdir / "app.py").write_text(APP_SOURCE.replace("SCHEDULE", schedule))
    variables = {
        "GR_TEST_BROKER": kind,
        "GR_TEST_QUEUE": unique_name(),
        "GR_TEST_SCHEDULE": unique_name(),
        "GR_TEST_LEDGER": str(workdir / "ledger.jsonl"),
        **env,
    }
    return Setup(kind, workdir, variables)


def run_ctl(workdir: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "greenroom.ctl", "--app", "app", *args],
        cwd=workdir,
        env={**app_env(workdir), **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def start_runs(setup: Setup, trees: list[Tree], count: int, *args: str) -> list[Tree]:
    started = [Tree(setup.workdir, ["-p", "1", "-t", "2", *args], env=setup.env) for _ in range(count)]
    trees.extend(started)
    setup.trees.extend(started)
    return started


def wait_until(wall_ms: float) -> None:
    """Wait for a moment on the wall clock (the windows of ticks are wall-clock instants)."""
    wait_for(lambda: time.time() * 1000 >= wall_ms, timeout_s=max(1.0, (wall_ms - time.time() * 1000) / 1000 + 5))


def leader_tree(setup: Setup) -> Tree:
    """The run whose scheduler leads, as ``greenroomctl schedules --json`` names it."""
    answer = setup.ctl("schedules", "--json")
    assert answer.returncode == 0, answer.stderr
    (status,) = json.loads(answer.stdout)["schedules"]
    assert status["leader"] is not None, status
    leading = [tree for tree in setup.trees if status["leader"]["pid"] in tree.worker_pids()]
    assert len(leading) == 1, (status, [t.worker_pids() for t in setup.trees])
    return leading[0]


def _served(port: int, sample: str) -> bool:
    try:
        return sample in scrape(port)
    except OSError:  # not listening yet
        return False


def stop_all(trees: list[Tree]) -> None:
    """TERM every run at once, then reap them (the fixture would stop them one after the other)."""
    for tree in trees:
        if tree.proc.poll() is None:
            tree.proc.terminate()
    for tree in trees:
        tree.wait_exit(timeout_s=30)


def percentile(values: list[int], share: float) -> int:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(share * len(ordered)) - 1)]


def check_window_a(setup: Setup, start_ms: int) -> list[int]:
    """Every tick of window A enqueued exactly once, none later than 1 s; returns the lateness (ms)."""
    rows = [r for r in setup.rows() if start_ms <= r["tick"] < start_ms + WINDOW_MS]
    ids: dict[int, set[str]] = {}
    for row in rows:
        ids.setdefault(row["tick"], set()).add(str(row["id"]))
    expected = list(range(start_ms, start_ms + WINDOW_MS, 1000))
    assert sorted(ids) == expected, f"{setup.kind}: missing {sorted(set(expected) - set(ids))}"
    assert all(len(messages) == 1 for messages in ids.values()), f"{setup.kind}: a tick was enqueued twice"
    lateness = sorted({r["tick"]: r["sent"] - r["tick"] for r in rows}.values())
    assert lateness[-1] <= 1000, f"{setup.kind}: enqueued {lateness[-1]} ms late"
    return lateness


def check_window_b(setup: Setup, start_ms: int, killed_at_ms: int) -> int:
    """No tick enqueued twice, takeover within 5 s, missed ticks per ``latest``; returns the takeover (ms)."""
    end_ms = start_ms + WINDOW_MS
    rows = [r for r in setup.rows() if start_ms <= r["tick"] < end_ms]
    ids: dict[int, set[str]] = {}
    for row in rows:
        ids.setdefault(row["tick"], set()).add(str(row["id"]))
    assert all(len(messages) == 1 for messages in ids.values()), f"{setup.kind}: a tick was enqueued twice"
    before = [r["tick"] for r in rows if r["sent"] < killed_at_ms]
    after = sorted((r["sent"], r["tick"]) for r in rows if r["sent"] >= killed_at_ms)
    takeover_at_ms, first_tick = after[0]
    assert takeover_at_ms - killed_at_ms <= 5000, f"{setup.kind}: takeover after {takeover_at_ms - killed_at_ms} ms"
    last_before = max(before)
    # Ticks that came while nobody led were missed; under "latest" only the newest of them ran.
    # (A tick within 100 ms of the boundary may count either way: it is left out of both lists.)
    gap = range(last_before + 1000, first_tick, 1000)
    assert not set(gap) & set(ids), f"{setup.kind}: a skipped tick ran"
    missed = [t for t in range(last_before + 1000, end_ms, 1000) if t <= takeover_at_ms - 1100]
    on_time = [t for t in range(last_before + 1000, end_ms, 1000) if t > takeover_at_ms - 900]
    if missed:
        assert first_tick >= missed[-1], f"{setup.kind}: {first_tick} ran instead of the latest missed {missed[-1]}"
    assert set(on_time) <= set(ids), f"{setup.kind}: missing {sorted(set(on_time) - set(ids))}"
    return takeover_at_ms - killed_at_ms


def test_three_runs_per_broker_enqueue_each_tick_once_and_survive_a_sigkilled_leader(
    tmp_path: Path, trees: list[Tree], redis_namespace: str, amqp_url: str
) -> None:
    setups = [
        make_setup("sqlite", tmp_path),
        make_setup("redis", tmp_path, GR_TEST_NAMESPACE=redis_namespace),
        make_setup("rabbitmq", tmp_path, GR_TEST_AMQP_URL=amqp_url),
    ]
    try:
        for setup in setups:
            start_runs(setup, trees, 3)
        for tree in trees:
            tree.wait_log("Scheduling", timeout_s=60)
        # Window A starts at the next whole second but one; window B overlaps its second half.
        start_ms = (int(time.time()) + 2) * 1000
        b_start_ms = start_ms + WINDOW_MS // 2
        wait_until(start_ms + WINDOW_MS * 3 // 4)
        with concurrent.futures.ThreadPoolExecutor(len(setups)) as pool:
            leaders = list(pool.map(leader_tree, setups))
        # Half-way, and half-way between two ticks: the kill cannot race the enqueue of a tick.
        wait_until(b_start_ms + WINDOW_MS // 2 + 500)
        killed_at_ms = time.time_ns() // 1_000_000
        for leader in leaders:
            os.killpg(leader.pid, signal.SIGKILL)
        wait_until(b_start_ms + WINDOW_MS + 500)
        for setup in setups:
            wanted = set(range(b_start_ms + WINDOW_MS - 3000, b_start_ms + WINDOW_MS, 1000))
            # Messages the killed run had prefetched come back once their lease or heartbeat expires.
            wait_for(lambda s=setup, w=wanted: w <= {r["tick"] for r in s.rows()}, timeout_s=15)
        stop_all([tree for tree in trees if tree not in leaders])
        for setup in setups:
            lateness = check_window_a(setup, start_ms)
            takeover_ms = check_window_b(setup, b_start_ms, killed_at_ms)
            print(
                f"{setup.kind}: enqueued after the tick p50 {percentile(lateness, 0.5)} ms,"
                f" p99 {percentile(lateness, 0.99)} ms, max {lateness[-1]} ms; takeover {takeover_ms} ms"
            )
    finally:
        rabbitmq = setups[2].env
        delete_streams(amqp_url, [rabbitmq["GR_TEST_SCHEDULE"]])
        delete_queues(amqp_url, rabbitmq["GR_TEST_QUEUE"])


def delete_queues(url: str, queue: str) -> None:
    import pika

    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        for name in (queue, f"{queue}.DQ", f"{queue}.XQ"):
            channel.queue_delete(name)
    finally:
        connection.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return str(response.read().decode())


def test_scheduler_only_and_no_scheduler_runs_greenroomctl_and_metrics(tmp_path: Path, trees: list[Tree]) -> None:
    pytest.importorskip("prometheus_client")
    setup = make_setup("sqlite", tmp_path)
    port = free_port()
    metrics = {
        "greenroom_prom_enabled": "1",
        "greenroom_prom_host": "127.0.0.1",
        "greenroom_prom_port": str(port),
        "greenroom_prom_db": str(tmp_path / "prom"),
    }
    (scheduler,) = [Tree(setup.workdir, ["--scheduler-only"], env={**setup.env, **metrics})]
    trees.append(scheduler)
    setup.trees.append(scheduler)
    (workers,) = start_runs(setup, trees, 1, "--no-scheduler")
    scheduler.wait_log("Greenroom is ready: the scheduler process is running")
    workers.wait_ready()
    wait_for(lambda: len(setup.rows()) >= 2, timeout_s=15)
    assert "Scheduling" not in workers.log_text()
    assert "Leading schedule" in scheduler.log_text()

    text = setup.ctl("schedules")
    assert text.returncode == 0, text.stderr
    header, row = text.stdout.splitlines()
    assert header.split() == ["NAME", "EXPRESSION", "TZ", "LAST", "RUN", "LAST", "RUN", "(UTC)", "NEXT", "RUN",
                              "NEXT", "RUN", "(UTC)", "LEADER"]  # fmt: skip
    assert row.startswith(setup.env["GR_TEST_SCHEDULE"])
    assert "every 1s" in row
    assert f"pid {scheduler.worker_pids()[0]}" in row

    answer = setup.ctl("schedules", "--json")
    assert answer.returncode == 0, answer.stderr
    (status,) = json.loads(answer.stdout)["schedules"]
    assert status["name"] == setup.env["GR_TEST_SCHEDULE"]
    assert (status["expression"], status["tz"], status["missed"]) == ("every 1s", "UTC", "latest")
    assert status["leader"]["pid"] == scheduler.worker_pids()[0]
    last, following = status["last_run"], status["next_run"]
    assert following["epoch_ms"] > last["epoch_ms"]
    assert last["utc"].endswith("Z")
    assert last["local"].endswith("+00:00")
    assert max(r["tick"] for r in setup.rows()) <= last["epoch_ms"]

    # The scheduler-only run serves the tick counters (its exposition process starts without workers).
    counter = f'greenroom_schedule_ticks_enqueued_total{{schedule="{setup.env["GR_TEST_SCHEDULE"]}"}}'
    wait_for(lambda: _served(port, counter), timeout_s=15)
    stop_all([scheduler, workers])
    assert scheduler.proc.returncode == 0
    assert workers.proc.returncode == 0


BAD_SCHEDULES = {
    "invalid cron": ('greenroom.schedule(tick, cron="61 * * * *", name="nightly")', "invalid cron expression"),
    "unknown tz": (
        'greenroom.schedule(tick, cron="0 3 * * *", tz="Mars/Olympus", name="nightly")',
        "unknown time zone 'Mars/Olympus'",
    ),
    "both": ('greenroom.schedule(tick, cron="0 3 * * *", every=60, name="nightly")', "(got both)"),
    "neither": ('greenroom.schedule(tick, name="nightly")', "(got neither)"),
    "duplicate": (
        'greenroom.schedule(tick, every=60, name="nightly")\ngreenroom.schedule(tick, every=30, name="nightly")',
        "declared twice",
    ),
}


def run_bad_app(base: Path, case: str) -> tuple[str, int, str, str]:
    schedule, problem = BAD_SCHEDULES[case]
    setup = make_setup("sqlite", base / case.replace(" ", "-"), schedule)
    tree = Tree(setup.workdir, ["-p", "1"], env=setup.env)
    try:
        code = tree.wait_exit(timeout_s=60)
    finally:
        tree.cleanup()
    ctl = setup.ctl("schedules")
    return problem, code, tree.output(), f"{ctl.returncode} {ctl.stderr}"


def test_bad_schedules_stop_the_command_with_exit_code_2_and_one_message(tmp_path: Path) -> None:
    for case in BAD_SCHEDULES:
        (tmp_path / case.replace(" ", "-")).mkdir()
    with concurrent.futures.ThreadPoolExecutor(len(BAD_SCHEDULES)) as pool:
        runs = pool.map(lambda case: run_bad_app(tmp_path, case), BAD_SCHEDULES)
        outcomes = dict(zip(BAD_SCHEDULES, runs, strict=True))
    for case, (problem, code, output, ctl) in outcomes.items():
        assert code == 2, f"{case}: exit code {code}\n{output}"
        assert "schedule 'nightly': " in output, f"{case}:\n{output}"
        assert problem in output, f"{case}:\n{output}"
        assert "Traceback" not in output, f"{case}:\n{output}"
        assert ctl.startswith("2 greenroomctl: could not import 'app': schedule 'nightly': "), f"{case}: {ctl}"
        assert problem in ctl, f"{case}: {ctl}"
