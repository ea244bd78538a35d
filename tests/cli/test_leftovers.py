"""A new main process removes what trees whose main process died (SIGKILL) left in the temp directory."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from greenroom.cli._leftovers import remove_leftovers


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait(30)
    return proc.pid


def test_only_the_directories_of_gone_main_processes_are_removed(tmp_path: Path) -> None:
    dead = _dead_pid()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        gone = [f"greenroom-run-{dead}-abc123", f"greenroom-slots-{dead}", f"greenroom-stuck-{dead}"]
        kept = [
            f"greenroom-run-{sleeper.pid}-xyz",  # a tree still running
            f"greenroom-slots-{os.getpid()}",  # this process's own
            f"greenroom-health-{dead}",  # not one of ours to judge
            "greenroom-quickstart-abc",
        ]
        for name in gone + kept:
            (tmp_path / name).mkdir()
            (tmp_path / name / "a-file").write_text("x")
        (tmp_path / f"greenroom-stuck-{dead}.txt").write_text("a file, not a directory")
        removed = remove_leftovers(str(tmp_path))
        assert sorted(Path(path).name for path in removed) == sorted(gone)
        assert sorted(path.name for path in tmp_path.iterdir()) == sorted([*kept, f"greenroom-stuck-{dead}.txt"])
    finally:
        sleeper.kill()
        sleeper.wait(10)
