"""A worker process frozen in C code that holds the GIL is killed by the main process (SQLite, real trees).

The actor calls libc's ``sleep`` through ``ctypes.PyDLL``, which keeps the GIL: no thread of the
process runs, neither the time limit's interrupt nor the warden. The main process sees the warden's
beat stop while the actor is past its time limit and the grace period, kills the process and
replaces it. The replacement returns the dead process's messages; the frozen one's next run fails
at once (it counts as failed: its retry policy applies) instead of freezing another process.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from greenroom.testing import wait_for
from tests.cli._trees import Tree, app_env

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT_S = 60.0
KILLED = "was killed for freezing; starting a new one"

APP = """
import ctypes, os, pathlib, time
import greenroom
from greenroom.brokers.sqlite import SQLiteBroker
from greenroom.middleware import CurrentMessage

broker = SQLiteBroker(os.environ["GR_TEST_DB"])
broker.add_middleware(CurrentMessage())
greenroom.set_broker(broker)
ledger = pathlib.Path(os.environ["GR_TEST_RESULTS"])
flag = pathlib.Path(os.environ["GR_FLAG"])

def note(line):
    with ledger.open("a") as file:
        file.write(f"{line} {os.getpid()} {time.time():.3f}\\n")

def freeze_once():
    retries = CurrentMessage.get_current_message().options.get("retries", 0)
    if flag.exists():
        note(f"frozen-done {retries}")
        return
    flag.touch()
    note("frozen-start")
    ctypes.PyDLL(None).sleep(30)  # libc's sleep, called with the GIL held
    note("frozen-woke")  # never: the process is killed before

@greenroom.actor(time_limit=1000, max_retries=1, min_backoff=100, max_backoff=200)
def frozen():
    freeze_once()

@greenroom.actor(time_limit=1000, max_retries=0)
def frozen_once_only():
    freeze_once()

@greenroom.actor(time_limit=600_000, max_retries=0)
def frozen_long():
    note("frozen-start")
    ctypes.PyDLL(None).sleep(60)  # within its limit, but the tree is told to stop meanwhile

@greenroom.actor(max_retries=0)
def work(n):
    note(f"work-done {n}")
"""


def _start(tmp_path: Path, *, gevent: bool = False) -> tuple[Tree, dict[str, str]]:
    env = {**app_env(tmp_path), "PYTHONPATH": str(ROOT), "GR_FLAG": str(tmp_path / "flag")}
    (tmp_path / "app.py").write_text(APP)
    return Tree(tmp_path, ["-p", "1", "-t", "4", "--time-limit-grace", "1000"], gevent=gevent, env=env), env


def _run(tmp_path: Path, env: dict[str, str], code: str) -> str:
    program = f"import app\n{code}\napp.broker.close()\n"
    done = subprocess.run(
        [sys.executable, "-c", program], cwd=tmp_path, env=env, check=True, timeout=TIMEOUT_S, capture_output=True
    )
    return done.stdout.decode()


def _entries(ledger: Path, what: str) -> list[list[str]]:
    text = ledger.read_text() if ledger.exists() else ""
    return [line.split()[1:] for line in text.splitlines() if line.split()[0] == what]


@pytest.mark.parametrize("gevent", [False, True], ids=["threads", "gevent"])
def test_a_frozen_process_is_killed_and_its_message_counts_as_failed(tmp_path: Path, gevent: bool) -> None:
    """Under gevent the call in C blocks the hub, which every greenlet (the warden's too) needs."""
    tree, env = _start(tmp_path, gevent=gevent)
    ledger = tmp_path / "results.txt"
    try:
        tree.wait_ready()
        _run(tmp_path, env, "app.frozen.send()")
        wait_for(lambda: _entries(ledger, "frozen-start"), TIMEOUT_S)
        [[frozen_pid, started_at]] = _entries(ledger, "frozen-start")
        # Sent while the process is frozen: its consumer may have taken them, they must not be lost.
        _run(tmp_path, env, "for n in range(6): app.work.send(n)")
        tree.wait_log(KILLED, timeout_s=TIMEOUT_S)
        killed_after_s = time.time() - float(started_at)
        wait_for(lambda: _entries(ledger, "frozen-done") and len(_entries(ledger, "work-done")) >= 6, TIMEOUT_S)

        # Killed once the limit (1 s) and the grace (1 s) have passed, plus the beat's silence
        # (1 s) and one turn of the main process's loop (at most 1 s).
        assert 2.0 <= killed_after_s < 2.0 + 1.0 + 1.0 + 2.0
        [[retries, done_pid, _]] = _entries(ledger, "frozen-done")
        assert retries == "1"  # the run after the kill failed at once: the retry is the second attempt
        assert done_pid != frozen_pid
        assert {int(n) for n, _, _ in _entries(ledger, "work-done")} == set(range(6))
        log = tree.log_text()
        assert "froze: no thread of it ran" in log
        assert "TimeLimitExceeded" in log
        assert _entries(ledger, "frozen-start") == [[frozen_pid, started_at]]
        tree.signal(signal.SIGTERM)
        assert tree.wait_exit() == 0
        assert _entries(ledger, "frozen-woke") == []
    finally:
        tree.cleanup()


def test_without_retries_the_frozen_message_is_dead_lettered_with_the_reason(tmp_path: Path) -> None:
    tree, env = _start(tmp_path)
    ledger = tmp_path / "results.txt"
    try:
        tree.wait_ready()
        _run(tmp_path, env, "app.frozen_once_only.send()")
        wait_for(lambda: _entries(ledger, "frozen-start"), TIMEOUT_S)
        tree.wait_log(KILLED, timeout_s=TIMEOUT_S)
        count = "print(len(app.broker.get_dead_letters('default')))"
        wait_for(lambda: _run(tmp_path, env, count).strip() == "1", TIMEOUT_S)
        reason = _run(tmp_path, env, "print(app.broker.get_dead_letters('default')[0].reason)")
        assert "worker process that froze" in reason
        assert _entries(ledger, "frozen-done") == []
        tree.signal(signal.SIGTERM)
        assert tree.wait_exit() == 0
    finally:
        tree.cleanup()


def test_a_process_frozen_through_the_stop_is_killed_once_the_shutdown_timeout_and_grace_passed(
    tmp_path: Path,
) -> None:
    env = {**app_env(tmp_path), "PYTHONPATH": str(ROOT), "GR_FLAG": str(tmp_path / "flag")}
    (tmp_path / "app.py").write_text(APP)
    args = ["-p", "1", "-t", "2", "--worker-shutdown-timeout", "500", "--time-limit-grace", "500"]
    tree = Tree(tmp_path, args, env=env)
    ledger = tmp_path / "results.txt"
    try:
        tree.wait_ready()
        _run(tmp_path, env, "app.frozen_long.send()")
        wait_for(lambda: _entries(ledger, "frozen-start"), TIMEOUT_S)
        tree.signal(signal.SIGTERM)
        stopped_s = time.monotonic()
        # Without the main process's watch, the tree would wait out the 60 s call (or a second TERM).
        assert tree.wait_exit(TIMEOUT_S) != 0  # a worker process was killed
        assert time.monotonic() - stopped_s < 0.5 + 0.5 + 1.0 + 3.0
        assert "it stopped too late" in tree.log_text()
    finally:
        tree.cleanup()
