"""A ``greenroom`` process tree started by a test, and the environment its application reads."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from greenroom.testing import wait_for

READY = "Greenroom is ready"


class Tree:
    """One ``greenroom`` process tree started by a test."""

    def __init__(self, workdir: Path, args: list[str], *, gevent: bool = False, env: dict[str, str] | None = None):
        Tree.count += 1
        self.workdir = workdir
        self.log = workdir / f"tree-{Tree.count}.log"
        self.stderr_path = workdir / f"tree-{Tree.count}.stderr"
        if gevent:
            command = [sys.executable, "-c", "import sys; from greenroom_gevent import main; sys.exit(main())"]
        else:
            command = [sys.executable, "-m", "greenroom"]
        with open(self.stderr_path, "wb") as stderr:
            self.proc = subprocess.Popen(
                [*command, "app", "--log-file", str(self.log), *args],
                cwd=workdir,
                env={**app_env(workdir), **(env or {})},
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                start_new_session=True,  # the finaliser can then kill the whole tree by its group
            )

    count = 0

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def wait_log(self, text: str, count: int = 1, timeout_s: float = 30.0) -> None:
        try:
            wait_for(lambda: self.log_text().count(text) >= count or self.proc.poll() is not None, timeout_s=timeout_s)
        except TimeoutError:
            raise AssertionError(f"{text!r} not logged {count}x in {timeout_s} s:\n{self.log_text()}") from None
        assert self.log_text().count(text) >= count, f"tree exited ({self.proc.poll()}):\n{self.output()}"

    def wait_ready(self, count: int = 1, timeout_s: float = 60.0) -> None:
        self.wait_log(READY, count, timeout_s)

    def signal(self, signum: int) -> None:
        os.kill(self.pid, signum)

    def wait_exit(self, timeout_s: float = 60.0) -> int:
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"tree still running after {timeout_s} s:\n{self.output()}") from None

    def output(self) -> str:
        return self.log_text() + self.stderr_path.read_text(errors="replace")

    def worker_pids(self) -> list[int]:
        return children_of(self.pid)

    def cleanup(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        try:
            os.killpg(self.pid, signal.SIGKILL)  # stray children of this tree, if any
        except (ProcessLookupError, PermissionError):
            pass


def children_of(pid: int) -> list[int]:
    children = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            fields = stat.rpartition(")")[2].split()
            if int(fields[1]) == pid and fields[0] != "Z":
                children.append(int(entry))
    return children


def is_running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"


def app_env(workdir: Path) -> dict[str, str]:
    """The environment of a tree, and of producers, for the application module in ``workdir``."""
    # Nothing of the caller's configuration leaks in, a Prometheus multiprocess directory included.
    prefixes = ("greenroom_", "dramatiq_", "PROMETHEUS", "prometheus_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    env.update(
        GR_TEST_DB=str(workdir / "broker.db"),
        GR_TEST_RESULTS=str(workdir / "results.txt"),
        PYTHONDONTWRITEBYTECODE="1",  # a reloaded module must never come from a stale .pyc
        greenroom_worker_timeout="100",
        greenroom_prom_enabled="0",  # tests/cli/test_metrics.py covers the metrics fork
    )
    return env
