"""Hard stops: an actor that ignores its interrupt gets its worker process replaced (SQLite, real trees).

The actor waits in ``select`` on a socket that never becomes readable: the time limit's
interrupt, an asynchronous exception, cannot land while the thread is in that C call. After the
grace period its message counts as failed (the retry policy applies: here the retry succeeds, a
file flag says so), the process finishes its other messages and is replaced.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from greenroom.testing import wait_for
from tests.cli._trees import Tree, app_env

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT_S = 60.0
RETIRED = "retired; starting a new one"

APP = """
import os, pathlib, select, socket, time
import greenroom
from greenroom.brokers.sqlite import SQLiteBroker

broker = SQLiteBroker(os.environ["GR_TEST_DB"])
greenroom.set_broker(broker)
ledger = pathlib.Path(os.environ["GR_TEST_RESULTS"])
flag = pathlib.Path(os.environ["GR_FLAG"])
never_readable, _writer = socket.socketpair()

def note(line):
    with ledger.open("a") as file:
        file.write(f"{line} {os.getpid()} {time.time():.3f}\\n")

@greenroom.actor(time_limit=int(os.environ["GR_LIMIT_MS"]), max_retries=3, min_backoff=100, max_backoff=200)
def stuck():
    if flag.exists():
        note("stuck-done")
        return
    flag.touch()
    note("stuck-start")
    select.select([never_readable], [], [], 30)
    note("stuck-woke")  # never: the process is gone by then

@greenroom.actor(max_retries=0)
def work(n, seconds):
    time.sleep(seconds)
    note(f"work-done {n}")
"""


def _start(tmp_path: Path, args: list[str], limit_ms: int) -> tuple[Tree, dict[str, str]]:
    env = {
        **app_env(tmp_path),
        "PYTHONPATH": str(ROOT),
        "GR_FLAG": str(tmp_path / "flag"),
        "GR_LIMIT_MS": str(limit_ms),
    }
    (tmp_path / "app.py").write_text(APP)
    return Tree(tmp_path, args, env=env), env


def _send(tmp_path: Path, env: dict[str, str], code: str) -> None:
    producer = f"import app\n{code}\napp.broker.close()\n"
    subprocess.run([sys.executable, "-c", producer], cwd=tmp_path, env=env, check=True, timeout=TIMEOUT_S)


def _entries(ledger: Path, what: str) -> list[list[str]]:
    """The fields after ``what`` of each ledger line that starts with it."""
    text = ledger.read_text() if ledger.exists() else ""
    return [line.split()[1:] for line in text.splitlines() if line.split()[0] == what]


def test_a_process_whose_actor_ignores_its_time_limit_is_replaced_and_the_message_retried(tmp_path: Path) -> None:
    limit_s, grace_s = 1.0, 1.0
    tree, env = _start(tmp_path, ["-p", "1", "-t", "4", "--time-limit-grace", str(int(grace_s * 1000))], 1000)
    ledger = tmp_path / "results.txt"
    try:
        tree.wait_ready()
        # Three messages run beside the stuck one and end after the take-over; six more wait.
        _send(tmp_path, env, "app.stuck.send()\nfor n in range(3): app.work.send(n, 2.5)")
        _send(tmp_path, env, "for n in range(3, 9): app.work.send(n, 0)")
        wait_for(lambda: _entries(ledger, "stuck-start"), TIMEOUT_S)
        [[stuck_pid, started_at]] = _entries(ledger, "stuck-start")
        tree.wait_log(RETIRED)
        replaced_after_s = time.time() - float(started_at)
        wait_for(lambda: _entries(ledger, "stuck-done") and len(_entries(ledger, "work-done")) >= 9, TIMEOUT_S)

        # Replaced once the limit and the grace have passed and its other messages are done.
        assert limit_s + grace_s <= replaced_after_s < limit_s + grace_s + 3.0
        [[done_pid, _]] = _entries(ledger, "stuck-done")
        assert done_pid != stuck_pid  # the retry ran in the replacement
        work = _entries(ledger, "work-done")
        assert sorted(int(n) for n, _, _ in work) == list(range(9))  # each exactly once
        assert {pid for n, pid, _ in work if int(n) < 3} == {stuck_pid}  # finished by the old process
        log = tree.log_text()
        assert log.count(RETIRED) == 1
        assert "ignored its time limit" in log
        assert "died with" not in log
        tree.signal(signal.SIGTERM)
        assert tree.wait_exit() == 0
        assert _entries(ledger, "stuck-woke") == []
    finally:
        tree.cleanup()


def test_shutdown_timeout_interrupts_then_takes_over_a_stuck_actor(tmp_path: Path) -> None:
    # No time limit in reach: only the shutdown timeout and the grace period end the run.
    args = ["-p", "1", "-t", "2", "--worker-shutdown-timeout", "500", "--time-limit-grace", "500"]
    tree, env = _start(tmp_path, args, 600_000)
    ledger = tmp_path / "results.txt"
    try:
        tree.wait_ready()
        _send(tmp_path, env, "app.stuck.send()")
        wait_for(lambda: _entries(ledger, "stuck-start"), TIMEOUT_S)
        tree.signal(signal.SIGTERM)
        stopped_s = time.monotonic()
        assert tree.wait_exit() == 0
        assert time.monotonic() - stopped_s < 5.0
        log = tree.log_text()
        assert "still runs at the shutdown timeout" in log
        assert "ignored the shutdown interrupt" in log
    finally:
        tree.cleanup()

    # Its retry was stored (not left to the 30-second lease): the next run does it at once.
    second = Tree(tmp_path, ["-p", "1", "-t", "1"], env=env)
    try:
        second.wait_ready()
        wait_for(lambda: _entries(ledger, "stuck-done"), 10.0)
        assert Counter(line.split()[0] for line in ledger.read_text().splitlines()) == {
            "stuck-start": 1,
            "stuck-done": 1,
        }
    finally:
        second.cleanup()
