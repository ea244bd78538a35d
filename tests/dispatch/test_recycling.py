"""Recycling worker processes: ``--max-tasks-per-child`` and ``--max-memory-per-child`` (SQLite, real trees).

A retiring process finishes what it runs, hands back what it prefetched and exits with the code
that tells the main process to replace it at once: nothing is lost and nothing runs twice.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

from greenroom.testing import wait_for
from tests.cli._trees import Tree, app_env

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT_S = 60.0
RETIRED = "retired; starting a new one"

APP = """
import os, pathlib
import greenroom
from greenroom.brokers.sqlite import SQLiteBroker

broker = SQLiteBroker(os.environ["GR_TEST_DB"])
greenroom.set_broker(broker)
ledger = pathlib.Path(os.environ["GR_TEST_RESULTS"])

@greenroom.actor(max_retries=0)
def note(n):
    with ledger.open("a") as file:
        file.write(f"done {n} {os.getpid()}\\n")
"""


def _send(tmp_path: Path, env: dict[str, str], count: int) -> None:
    producer = f"import app\nfor n in range({count}): app.note.send(n)\napp.broker.close()\n"
    subprocess.run([sys.executable, "-c", producer], cwd=tmp_path, env=env, check=True, timeout=TIMEOUT_S)


def _done(ledger: Path) -> list[tuple[int, int]]:
    """(message number, pid) of every run noted in the ledger."""
    text = ledger.read_text() if ledger.exists() else ""
    return [(int(n), int(pid)) for n, pid in re.findall(r"^done (\d+) (\d+)$", text, re.MULTILINE)]


def test_max_tasks_per_child_replaces_processes_and_runs_every_message_once(tmp_path: Path) -> None:
    # With two processes, the last life of each may end with fewer than 50 messages: 500 messages
    # give 9 or 10 retirements depending on how they split, 550 give at least 10 whatever the split.
    count = 550
    env = {**app_env(tmp_path), "PYTHONPATH": str(ROOT)}
    (tmp_path / "app.py").write_text(APP)
    ledger = tmp_path / "results.txt"
    tree = Tree(tmp_path, ["-p", "2", "-t", "4", "--max-tasks-per-child", "50"], env=env)
    try:
        tree.wait_ready()
        _send(tmp_path, env, count)
        wait_for(lambda: len(_done(ledger)) >= count, TIMEOUT_S)
        tree.wait_log(RETIRED, 10)
        done = _done(ledger)
        assert sorted(n for n, _ in done) == list(range(count))  # each once: none lost, none twice
        per_process = Counter(pid for _, pid in done)
        assert max(per_process.values()) <= 50
        assert len(per_process) >= 11
        log = tree.log_text()
        assert log.count(RETIRED) >= 10  # the issue: at least 10 replacements seen in the log
        assert "died with" not in log  # replaced as retired, never as crashed
        tree.signal(15)
        assert tree.wait_exit() == 0
    finally:
        tree.cleanup()


def test_max_memory_per_child_replaces_a_process_once_it_ran_a_message(tmp_path: Path) -> None:
    env = {**app_env(tmp_path), "PYTHONPATH": str(ROOT)}
    (tmp_path / "app.py").write_text(APP)
    ledger = tmp_path / "results.txt"
    # Every process is above 1 MB: each retires once it has run a message, not before.
    tree = Tree(tmp_path, ["-p", "1", "-t", "1", "--max-memory-per-child", "1"], env=env)
    try:
        tree.wait_ready()
        _send(tmp_path, env, 2)
        wait_for(lambda: len(_done(ledger)) >= 2, TIMEOUT_S)
        tree.wait_log(RETIRED)
        assert sorted(n for n, _ in _done(ledger)) == [0, 1]
        assert "its resident memory reached" in tree.log_text()
        tree.signal(15)
        assert tree.wait_exit() == 0
    finally:
        tree.cleanup()
