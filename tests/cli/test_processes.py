"""The ``greenroom`` command as real process trees: signals, reload, replacement, burst, gevent, exit codes.

Every test starts the main process in a session of its own, with its application module, SQLite
database, log file and results file under ``tmp_path``, waits for log lines rather than sleeping,
and kills whatever is left of the tree in its finaliser.
"""

from __future__ import annotations

import collections
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from greenroom.brokers.sqlite import SQLiteBroker
from greenroom.message import Message
from greenroom.testing import wait_for
from tests.cli._trees import Tree, app_env, is_running
from tests.conftest import redis_client_for, service_unavailable

pytestmark = pytest.mark.slow

WORKER_READY = "Worker process is ready for action."

APP_SOURCE = """
import logging
import os
import time

import greenroom
from greenroom.brokers.sqlite import SQLiteBroker, SQLiteSettings
from greenroom.middleware import Middleware

VERSION = 1

lease_ms = int(os.environ.get("GR_TEST_LEASE_MS", "30000"))
settings = SQLiteSettings(lease_ms=lease_ms, renew_interval_ms=max(1, lease_ms // 3), synchronous="NORMAL")
broker = SQLiteBroker(path=os.environ["GR_TEST_DB"], settings=settings)
greenroom.set_broker(broker)


def record(line):
    fd = os.open(os.environ["GR_TEST_RESULTS"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\\n").encode())
    finally:
        os.close(fd)


record(f"import {os.getpid()}")
time.sleep(float(os.environ.get("GR_TEST_SLOW_IMPORT_S", "0")))


@greenroom.actor(max_retries=0)
def work(n, sleep_s=0.0):
    record(f"start {n} {os.getpid()}")
    time.sleep(sleep_s)
    record(f"done {n} {os.getpid()}")


@greenroom.actor(max_retries=0)
def slow_once(n):
    # Sleeps a minute on its first delivery only, so the redelivery finishes at once.
    marker = os.path.join(os.path.dirname(os.environ["GR_TEST_RESULTS"]), f"slow-{n}")
    record(f"start {n} {os.getpid()}")
    if not os.path.exists(marker):
        open(marker, "w").close()
        time.sleep(60)
    record(f"done {n} {os.getpid()}")


@greenroom.actor(queue_name="follow")
def follow(n):
    pass


@greenroom.actor(max_retries=0, notify_shutdown=True)
def chatty(n):
    # Sends without pause until the shutdown notification lands, most likely inside a send.
    record(f"chatting {n} {os.getpid()}")
    try:
        while True:
            follow.send(n)
    except greenroom.middleware.Shutdown:
        record(f"notified {n} {os.getpid()}")


@greenroom.actor(max_retries=0)
def report_version(n):
    record(f"version {n} {VERSION}")


@greenroom.actor(max_retries=0)
def chatter(n):
    line = f"print {n} " + "x" * 5000
    for i in range(20):
        print(line)
        logging.getLogger("app").info("log %d %d %s", n, i, "y" * 3000)
    record(f"done {n} {os.getpid()}")


def fork_function():
    record(f"fork {os.getpid()}")
    while True:
        time.sleep(1)


class ForkingMiddleware(Middleware):
    @property
    def forks(self):
        return [fork_function]


if os.environ.get("GR_TEST_MIDDLEWARE_FORK"):
    broker.add_middleware(ForkingMiddleware())
"""


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "app.py").write_text(APP_SOURCE)
    return tmp_path


@pytest.fixture
def producer(workdir: Path) -> Iterator[SQLiteBroker]:
    broker = SQLiteBroker(path=workdir / "broker.db", middleware=[])
    broker.declare_queue("default")
    yield broker
    broker.close()


def send(broker: SQLiteBroker, actor: str, *args: object, delay: int | None = None) -> None:
    broker.enqueue(Message(queue_name="default", actor_name=actor, args=args, kwargs={}, options={}), delay=delay)


def start(trees: list[Tree], workdir: Path, *args: str, **kwargs: object) -> Tree:
    tree = Tree(workdir, list(args), **kwargs)  # type: ignore[arg-type]
    trees.append(tree)
    return tree


def results(workdir: Path) -> list[list[str]]:
    path = workdir / "results.txt"
    return [line.split() for line in path.read_text().splitlines()] if path.exists() else []


def events(workdir: Path, kind: str) -> collections.Counter[str]:
    return collections.Counter(fields[1] for fields in results(workdir) if fields[0] == kind)


# -- signals --------------------------------------------------------------------------------


def test_term_notifies_actors_that_keep_sending_and_leaves_the_database_writable(
    workdir: Path, trees: list[Tree], producer: SQLiteBroker
) -> None:
    tree = start(trees, workdir, "-p", "1", "-t", "4")
    tree.wait_ready()
    for n in range(4):
        send(producer, "chatty", n)
    wait_for(lambda: len(events(workdir, "chatting")) == 4, timeout_s=30)
    tree.signal(signal.SIGTERM)
    assert tree.wait_exit(60) == 0, tree.output()
    assert sorted(events(workdir, "notified")) == ["0", "1", "2", "3"]
    # No transaction was left open: another process takes the write lock at once.
    conn = sqlite3.connect(workdir / "broker.db", timeout=0.5, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("COMMIT")
    finally:
        conn.close()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["TERM", "INT"])
def test_graceful_stop_finishes_running_tasks_and_requeues_prefetched_ones(
    workdir: Path, trees: list[Tree], producer: SQLiteBroker, signum: int
) -> None:
    tree = start(trees, workdir, "-p", "1", "-t", "8", env={"greenroom_queue_prefetch": "64"})
    tree.wait_ready()
    for n in range(58):
        send(producer, "work", n, 2.0)
    # 8 running, the other 50 fetched into the worker's memory.
    wait_for(lambda: len(events(workdir, "start")) == 8, timeout_s=30)
    wait_for(lambda: producer.get_queue_counts("default").in_progress == 58, timeout_s=30)
    assert producer.get_queue_counts("default").ready == 0

    tree.signal(signum)
    assert tree.wait_exit(60) == 0, tree.output()
    assert len(events(workdir, "done")) == 8
    assert events(workdir, "done") == events(workdir, "start")
    counts = producer.get_queue_counts("default")
    assert (counts.ready, counts.in_progress) == (50, 0)

    # The next worker processes the 50 handed back, and nothing twice.
    again = start(trees, workdir, "-p", "1", "-t", "50", "--burst")
    assert again.wait_exit(60) == 0, again.output()
    assert events(workdir, "done") == collections.Counter({str(n): 1 for n in range(58)})
    assert events(workdir, "start") == events(workdir, "done")
    # The main process never imported the application.
    importers = {int(fields[1]) for fields in results(workdir) if fields[0] == "import"}
    assert tree.pid not in importers
    assert again.pid not in importers


def test_a_replacement_that_cannot_import_the_app_ends_the_run(workdir: Path, trees: list[Tree]) -> None:
    tree = start(trees, workdir, "-p", "2", "-t", "1")
    tree.wait_ready()
    with open(workdir / "app.py", "a") as app:
        app.write("\nraise ImportError('the new code is broken')\n")
    os.kill(tree.worker_pids()[0], signal.SIGKILL)
    assert tree.wait_exit(60) == 2, tree.output()
    assert "failed to boot" in tree.log_text()


def test_term_to_the_whole_process_group_is_still_graceful(
    workdir: Path, trees: list[Tree], producer: SQLiteBroker
) -> None:
    # systemd and supervisord send TERM to every process of the group: each worker then gets it
    # twice (directly and forwarded by the main process), which must not count as a second TERM.
    tree = start(trees, workdir, "-p", "2", "-t", "2")
    tree.wait_ready()
    for n in range(4):
        send(producer, "work", n, 1.5)
    wait_for(lambda: len(events(workdir, "start")) == 4, timeout_s=30)
    os.killpg(tree.pid, signal.SIGTERM)
    assert tree.wait_exit(60) == 0, tree.output()
    assert events(workdir, "done") == collections.Counter({str(n): 1 for n in range(4)})
    counts = producer.get_queue_counts("default")
    assert (counts.ready, counts.in_progress) == (0, 0)


def test_second_term_kills_worker_processes_and_the_message_is_redelivered(
    workdir: Path, trees: list[Tree], producer: SQLiteBroker
) -> None:
    env = {"GR_TEST_LEASE_MS": "2000"}
    tree = start(trees, workdir, "-p", "2", "-t", "1", env=env)
    tree.wait_ready()
    workers = tree.worker_pids()
    assert len(workers) == 2
    send(producer, "slow_once", 1)
    wait_for(lambda: events(workdir, "start")["1"] == 1, timeout_s=30)

    tree.signal(signal.SIGTERM)
    tree.wait_log("Stopping worker process...", 2)
    tree.signal(signal.SIGTERM)
    started_s = time.monotonic()
    assert tree.wait_exit(5) == 1
    wait_for(lambda: not any(is_running(pid) for pid in workers), timeout_s=2)
    assert time.monotonic() - started_s < 2.0
    assert events(workdir, "done")["1"] == 0

    # Its lease runs out and the next worker processes it.
    again = start(trees, workdir, "-p", "1", "--burst", env=env)
    assert again.wait_exit(60) == 0, again.output()
    assert events(workdir, "done") == collections.Counter({"1": 1})


def test_hup_reloads_fresh_code_in_the_same_main_process(
    workdir: Path, trees: list[Tree], producer: SQLiteBroker
) -> None:
    tree = start(trees, workdir, "-p", "1", "-t", "2")
    tree.wait_ready()
    send(producer, "report_version", 1)
    wait_for(lambda: ["version", "1", "1"] in results(workdir), timeout_s=30)

    app = workdir / "app.py"
    app.write_text(app.read_text().replace("VERSION = 1", "VERSION = 2"))
    tree.signal(signal.SIGHUP)
    tree.wait_ready(2)
    assert tree.proc.poll() is None
    assert f"[PID {tree.pid}] [MainThread] [greenroom.MainProcess] [INFO] Reloading" in tree.log_text()
    assert tree.log_text().count(f"[PID {tree.pid}] [MainThread] [greenroom.MainProcess] [INFO] Greenroom '") == 2

    send(producer, "report_version", 2)
    wait_for(lambda: ["version", "2", "2"] in results(workdir), timeout_s=30)
    tree.signal(signal.SIGTERM)
    assert tree.wait_exit(30) == 0


# -- supervision ----------------------------------------------------------------------------


def test_killed_worker_process_is_replaced_and_its_messages_processed(
    workdir: Path, trees: list[Tree], producer: SQLiteBroker
) -> None:
    tree = start(trees, workdir, "-p", "2", "-t", "2", env={"GR_TEST_LEASE_MS": "2000"})
    tree.wait_ready()
    for n in range(8):
        send(producer, "work", n, 1.0)
    wait_for(lambda: len(events(workdir, "start")) >= 1, timeout_s=30)
    victim = int(next(fields[2] for fields in results(workdir) if fields[0] == "start"))
    os.kill(victim, signal.SIGKILL)

    tree.wait_log("died with signal SIGKILL")
    tree.wait_log(WORKER_READY, 3)
    wait_for(lambda: set(events(workdir, "done")) == {str(n) for n in range(8)}, timeout_s=60)
    assert victim not in tree.worker_pids()
    assert len(tree.worker_pids()) == 2
    tree.signal(signal.SIGTERM)
    assert tree.wait_exit(30) == 0


def test_worker_processes_exit_when_the_main_process_disappears(workdir: Path, trees: list[Tree]) -> None:
    tree = start(trees, workdir, "-p", "2", "-t", "1", "-f", "app:fork_function")
    tree.wait_ready()
    wait_for(lambda: len(tree.worker_pids()) == 3, timeout_s=30)
    children = tree.worker_pids()
    tree.proc.kill()
    tree.proc.wait(10)
    wait_for(lambda: not any(is_running(pid) for pid in children), timeout_s=30)


def test_fork_processes_run_fork_functions_and_middleware_forks(workdir: Path, trees: list[Tree]) -> None:
    tree = start(trees, workdir, "-p", "1", "-t", "1", "-f", "app:fork_function", env={"GR_TEST_MIDDLEWARE_FORK": "1"})
    tree.wait_ready()
    wait_for(lambda: len([f for f in results(workdir) if f[0] == "fork"]) == 2, timeout_s=30)
    fork_pids = {int(f[1]) for f in results(workdir) if f[0] == "fork"}
    assert fork_pids <= set(tree.worker_pids())
    tree.signal(signal.SIGTERM)
    assert tree.wait_exit(30) == 0
    assert not any(is_running(pid) for pid in fork_pids)


# -- burst ----------------------------------------------------------------------------------


def test_burst_exits_0_once_queues_and_delayed_messages_are_drained(
    workdir: Path, trees: list[Tree], producer: SQLiteBroker
) -> None:
    for n in range(20):
        send(producer, "work", n, 0.05)
    for n in range(20, 23):
        send(producer, "work", n, 0.0, delay=1500)
    tree = start(trees, workdir, "-p", "2", "-t", "4", "--burst")
    assert tree.wait_exit(60) == 0, tree.output()
    assert events(workdir, "done") == collections.Counter({str(n): 1 for n in range(23)})
    counts = producer.get_queue_counts("default")
    assert counts.ready == counts.delayed == counts.in_progress == 0


def test_use_spawn_runs_the_same_tree(workdir: Path, trees: list[Tree], producer: SQLiteBroker) -> None:
    for n in range(10):
        send(producer, "work", n, 0.0)
    tree = start(trees, workdir, "-p", "2", "-t", "2", "--burst", "--use-spawn")
    assert tree.wait_exit(60) == 0, tree.output()
    assert events(workdir, "done") == collections.Counter({str(n): 1 for n in range(10)})


def test_log_lines_of_all_processes_are_never_interleaved(
    workdir: Path, trees: list[Tree], producer: SQLiteBroker
) -> None:
    for n in range(12):
        send(producer, "chatter", n)
    tree = start(trees, workdir, "-p", "2", "-t", "4", "--burst")
    assert tree.wait_exit(60) == 0, tree.output()
    record = re.compile(r"^\[[-\d:, ]+\] \[PID \d+\] \[[^\]]+\] \[[\w.()]+\] \[[A-Z]+\] ")
    printed = {f"print {n} " + "x" * 5000 for n in range(12)}
    lines = tree.log_text().splitlines()
    assert [line for line in lines if not (record.match(line) or line in printed)] == []
    assert sum(line in printed for line in lines) == 12 * 20
    logged = [line for line in lines if "[app] [INFO] log " in line]
    assert len(logged) == 12 * 20
    assert all(line.endswith(" " + "y" * 3000) for line in logged)


def test_slow_worker_boot_is_waited_for_up_to_the_fork_timeout(
    workdir: Path, trees: list[Tree], producer: SQLiteBroker
) -> None:
    tree = start(trees, workdir, "-p", "1", "--worker-fork-timeout", "300", env={"GR_TEST_SLOW_IMPORT_S": "1.5"})
    tree.wait_ready()
    assert "did not boot within 300 ms" in tree.log_text()
    assert WORKER_READY not in tree.log_text()
    tree.wait_log(WORKER_READY)
    send(producer, "work", 1, 0.0)
    wait_for(lambda: events(workdir, "done")["1"] == 1, timeout_s=30)
    tree.signal(signal.SIGTERM)
    assert tree.wait_exit(30) == 0


@pytest.mark.parametrize("polling", [True, False], ids=["polling", "native"])
def test_watch_reloads_when_a_source_file_changes(
    workdir: Path, trees: list[Tree], producer: SQLiteBroker, polling: bool
) -> None:
    flags = ["--watch", str(workdir)] + (["--watch-use-polling"] if polling else [])
    tree = start(trees, workdir, "-p", "1", "-t", "1", *flags)
    tree.wait_ready()
    app = workdir / "app.py"
    source = app.read_text().replace("VERSION = 1", "VERSION = 2")
    edits = iter(range(1000))

    def edited_and_noticed() -> bool:
        # The watcher takes its first snapshot in a thread of its own: edit until a change is seen.
        if "Detected a change to" in tree.log_text():
            return True
        app.write_text(source + f"# edit {next(edits)}\n")
        return False

    wait_for(edited_and_noticed, timeout_s=30, interval_s=0.5)
    tree.wait_ready(2)
    send(producer, "report_version", 1)
    wait_for(lambda: ["version", "1", "2"] in results(workdir), timeout_s=30)
    tree.signal(signal.SIGTERM)
    assert tree.wait_exit(30) == 0, tree.output()


# -- gevent ---------------------------------------------------------------------------------


def test_gevent_runs_hundreds_of_greenlets_per_process(
    workdir: Path, trees: list[Tree], producer: SQLiteBroker
) -> None:
    for n in range(2000):
        send(producer, "work", n, 0.1)
    started_s = time.monotonic()
    tree = start(trees, workdir, "-p", "1", "-t", "500", "--burst", gevent=True)
    # Serially this is 200 s of sleeping; the bound only guards against that, it is no benchmark.
    assert tree.wait_exit(90) == 0, tree.output()
    elapsed_s = time.monotonic() - started_s
    assert len(events(workdir, "done")) == 2000
    print(f"gevent: 2000 tasks of 100 ms with -p 1 -t 500 in {elapsed_s:.1f} s")


def test_gevent_tree_stops_gracefully_and_reloads(workdir: Path, trees: list[Tree], producer: SQLiteBroker) -> None:
    tree = start(trees, workdir, "-p", "2", "-t", "50", gevent=True)
    tree.wait_ready()
    for n in range(40):
        send(producer, "work", n, 1.0)
    wait_for(lambda: len(events(workdir, "start")) == 40, timeout_s=30)
    tree.signal(signal.SIGHUP)
    tree.wait_ready(2)
    tree.signal(signal.SIGTERM)
    assert tree.wait_exit(30) == 0, tree.output()
    assert events(workdir, "done") == collections.Counter({str(n): 1 for n in range(40)})
    assert "Traceback" not in tree.output()


# -- bad input ------------------------------------------------------------------------------


def run_cli(
    workdir: Path, *args: str, env: dict[str, str] | None = None, timeout_s: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m greenroom *args`` in ``workdir`` to its end, capturing its output."""
    return subprocess.run(
        [sys.executable, "-m", "greenroom", *args],
        cwd=workdir,
        env=app_env(workdir) if env is None else env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )


def test_unknown_module_exits_2(workdir: Path) -> None:
    missing = run_cli(workdir, "no_such_app_module", "-p", "1")
    assert missing.returncode == 2
    assert "Traceback" not in missing.stderr
    assert "No module named 'no_such_app_module'" in missing.stderr


def test_syntax_error_in_the_app_exits_2_with_one_line(workdir: Path) -> None:
    (workdir / "broken_app.py").write_text("import greenroom\n\nvalue = = 1\n")
    completed = run_cli(workdir, "broken_app", "-p", "1")
    assert completed.returncode == 2, completed.stderr
    assert "Traceback" not in completed.stderr
    expected = "Could not import module 'broken_app': SyntaxError: invalid syntax (broken_app.py, line 3)"
    failures = [line for line in completed.stderr.splitlines() if "Could not import" in line]
    assert len(failures) == 1, completed.stderr
    assert failures[0].endswith(expected)


def test_syntax_error_in_a_fork_function_module_exits_that_fork_process_2(workdir: Path, trees: list[Tree]) -> None:
    (workdir / "broken_forks.py").write_text("def run(:\n    pass\n")
    tree = start(trees, workdir, "-p", "1", "-t", "1", "-f", "broken_forks:run")
    tree.wait_log("Fork process 0 exited with")
    assert "Fork process 0 exited with exit code 2." in tree.log_text()
    assert "Could not import the fork function 'broken_forks:run': SyntaxError: " in tree.log_text()
    assert "Traceback" not in tree.output()
    tree.signal(signal.SIGTERM)
    assert tree.wait_exit(30) == 0, tree.output()


def test_unknown_attribute_exits_2(workdir: Path) -> None:
    completed = run_cli(workdir, "app:no_such_broker", "-p", "2")
    assert completed.returncode == 2
    assert "Traceback" not in completed.stderr
    assert "does not define 'no_such_broker'" in completed.stderr


def test_unreachable_broker_exits_3_naming_the_url_without_its_password(workdir: Path) -> None:
    (workdir / "urlapp.py").write_text("import greenroom\n\n@greenroom.actor\ndef f():\n    pass\n")
    env = {**app_env(workdir), "greenroom_broker_url": "redis://someone:hunter2@127.0.0.1:1/0"}
    completed = run_cli(workdir, "urlapp", "-p", "1", env=env, timeout_s=90)
    assert completed.returncode == 3, completed.stderr
    assert "Traceback" not in completed.stderr
    assert "redis://someone:***@127.0.0.1:1/0" in completed.stderr
    assert "hunter2" not in completed.stderr


def test_bad_flag_prints_usage_and_exits_2(workdir: Path) -> None:
    completed = run_cli(workdir, "app", "--no-such-flag")
    assert completed.returncode == 2
    assert completed.stderr.startswith("usage: greenroom")
    assert "Traceback" not in completed.stderr


def test_pid_file_held_by_a_running_process_exits_4(workdir: Path, trees: list[Tree]) -> None:
    pid_file = workdir / "greenroom.pid"
    tree = start(trees, workdir, "-p", "1", "-t", "1", "--pid-file", str(pid_file))
    tree.wait_ready()
    assert pid_file.read_text() == str(tree.pid)
    completed = run_cli(workdir, "app", "-p", "1", "--pid-file", str(pid_file))
    assert completed.returncode == 4
    assert completed.stderr.strip().count("\n") == 0
    assert f"already running with PID {tree.pid}" in completed.stderr
    tree.signal(signal.SIGTERM)
    assert tree.wait_exit(30) == 0
    assert not pid_file.exists()


OTHER_BROKER_APP = """
import os
import time

import greenroom

if os.environ["GR_TEST_BROKER"] == "redis":
    from greenroom.brokers.redis import RedisBroker

    broker = RedisBroker(url="redis://127.0.0.1:6379/0", namespace=os.environ["GR_TEST_NAME"])
else:
    from greenroom.brokers.rabbitmq import RabbitmqBroker

    broker = RabbitmqBroker(url=os.environ["GR_TEST_AMQP_URL"])
greenroom.set_broker(broker)


@greenroom.actor(max_retries=0, queue_name=os.environ["GR_TEST_NAME"])
def work(n):
    fd = os.open(os.environ["GR_TEST_RESULTS"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.write(fd, f"done {n} {os.getpid()}\\n".encode())
    os.close(fd)
"""


def _cleanup_other_broker(kind: str, name: str, amqp_url: str) -> None:
    if kind == "redis":
        _, cleanup = redis_client_for(name)
        cleanup()
    else:
        import pika

        connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
        channel = connection.channel()
        for suffix in ("", ".DQ", ".XQ"):
            channel.queue_delete(name + suffix)
        connection.close()


@pytest.mark.parametrize("kind", ["redis", "rabbitmq"])
def test_burst_with_other_brokers(tmp_path: Path, trees: list[Tree], kind: str, request: pytest.FixtureRequest) -> None:
    name = f"grcli_{kind}_{os.getpid()}_{time.monotonic_ns()}"
    (tmp_path / "app.py").write_text(OTHER_BROKER_APP)
    # RabbitMQ: a virtual host of this test process's own (see tests/_rabbitmq_vhost.py).
    amqp_url = request.getfixturevalue("rabbitmq_vhost") if kind == "rabbitmq" else ""
    env = {**app_env(tmp_path), "GR_TEST_BROKER": kind, "GR_TEST_NAME": name, "GR_TEST_AMQP_URL": amqp_url}
    producer_code = "import app\nfor n in range(20): app.work.send(n)\n"
    producer_code += "for n in range(20, 22): app.work.send_with_options(args=(n,), delay=1000)\napp.broker.close()\n"
    try:
        sent = subprocess.run(
            [sys.executable, "-c", producer_code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
        )
        if sent.returncode != 0:
            service_unavailable(kind, RuntimeError(sent.stderr.strip().splitlines()[-1]))
        tree = start(trees, tmp_path, "-p", "2", "-t", "2", "--burst", env=env)
        assert tree.wait_exit(60) == 0, tree.output()
        assert events(tmp_path, "done") == collections.Counter({str(n): 1 for n in range(22)})
    finally:
        try:
            _cleanup_other_broker(kind, name, amqp_url)
        except Exception:
            pass  # the service is down: there is nothing to clean
