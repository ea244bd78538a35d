"""A new main process removes what trees whose main process died (SIGKILL) left in the temp directory."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from greenroom.cli._leftovers import hold_run_lock, remove_leftovers
from greenroom.testing import wait_for

HOLD_LOCK = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
print("locked", flush=True)
time.sleep(60)
"""


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait(30)
    return proc.pid


def _make(tmp_path: Path, *names: str) -> None:
    for name in names:
        (tmp_path / name).mkdir()
        (tmp_path / name / "a-file").write_text("x")


def test_only_the_directories_of_gone_trees_are_removed(tmp_path: Path) -> None:
    dead, elsewhere = _dead_pid(), _dead_pid()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    _make(tmp_path, f"greenroom-run-{elsewhere}-abc")
    # A tree whose pid means nothing here (another pid namespace), or whose orphaned workers
    # still drain: its run directory's lock is held.
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(tmp_path / f"greenroom-run-{elsewhere}-abc" / "lock")],
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == b"locked\n"
        gone = [f"greenroom-run-{dead}-abc123", f"greenroom-slots-{dead}", f"greenroom-stuck-{dead}"]
        kept = [
            f"greenroom-run-{sleeper.pid}-xyz",  # a tree still running (or starting: no lock yet)
            f"greenroom-slots-{os.getpid()}",  # this process's own
            f"greenroom-health-{dead}",  # not one of ours to judge
            "greenroom-quickstart-abc",
            f"greenroom-slots-{elsewhere}",  # kept with its locked run directory
        ]
        _make(tmp_path, *gone, *kept)
        (tmp_path / f"greenroom-stuck-{dead}.txt").write_text("a file, not a directory")
        removed = remove_leftovers(str(tmp_path))
        assert sorted(Path(path).name for path in removed) == sorted(gone)
        survivors = sorted(path.name for path in tmp_path.iterdir())
        assert survivors == sorted([*kept, f"greenroom-run-{elsewhere}-abc", f"greenroom-stuck-{dead}.txt"])
        # Once nothing holds the lock, that tree's directories go too.
        holder.kill()
        holder.wait(10)
        wait_for(lambda: remove_leftovers(str(tmp_path)), timeout_s=10)
        assert not (tmp_path / f"greenroom-run-{elsewhere}-abc").exists()
        assert not (tmp_path / f"greenroom-slots-{elsewhere}").exists()
    finally:
        for proc in (sleeper, holder):
            proc.kill()
            proc.wait(10)
        if holder.stdout is not None:
            holder.stdout.close()


def test_a_held_run_lock_keeps_the_directory(tmp_path: Path) -> None:
    run = tmp_path / f"greenroom-run-{_dead_pid()}-mine"
    run.mkdir()
    fd = hold_run_lock(str(run))
    try:
        assert remove_leftovers(str(tmp_path)) == []
    finally:
        os.close(fd)
    assert remove_leftovers(str(tmp_path)) == [str(run)]
