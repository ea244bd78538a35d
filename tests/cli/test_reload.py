"""Signals that reach the main process while it re-executes itself for a ``HUP`` reload.

``os.execv`` replaces the interpreter; until the new one has installed its handlers, a ``HUP`` or
``TERM`` with its default disposition would end the process. These tests aim signals at that
window, repeatedly, and check that the tree handles them as it does at any other moment.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path

import pytest

from greenroom.cli._child import HANDLED_SIGNALS
from greenroom.cli._reexec import HELD_SIGNALS_ENV, release_signals, take_held_signals
from greenroom.testing import wait_for
from tests.cli._trees import Tree

APP_SOURCE = """
import os

import greenroom
from greenroom.brokers.sqlite import SQLiteBroker

greenroom.set_broker(SQLiteBroker(path=os.environ["GR_TEST_DB"]))


@greenroom.actor
def noop():
    pass
"""

#: Each test runs this many trees, one reload each: the window is narrow and timing varies.
ITERATIONS = 5
#: How long (s) after the re-exec begins the second signal is sent. The new interpreter takes
#: 100-200 ms to install its handlers, so this lands well inside that window.
SECOND_SIGNAL_DELAY_S = 0.02
#: Logged by the main process just before it calls ``execv``.
REEXEC_STARTS = "Reloading: starting greenroom again."


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_reloaded_tree(workdir: Path, trees: list[Tree], second: signal.Signals) -> Tree:
    """A tree with a PID file and metrics that got a ``HUP`` and then ``second`` during its re-exec."""
    (workdir / "app.py").write_text(APP_SOURCE)
    env = {
        "greenroom_prom_enabled": "1",
        "greenroom_prom_host": "127.0.0.1",
        "greenroom_prom_port": str(free_port()),
        "greenroom_prom_db": str(workdir / "prom"),
    }
    tree = Tree(workdir, ["-p", "2", "-t", "1", "--pid-file", str(workdir / "greenroom.pid")], env=env)
    trees.append(tree)
    tree.wait_ready()
    assert metrics_directory(tree).is_dir()
    wait_until_signals_reach(tree)
    tree.signal(signal.SIGHUP)
    tree.wait_log(REEXEC_STARTS)
    # A delay chosen by the test, not a wait for a condition: it aims the signal at the window.
    time.sleep(SECOND_SIGNAL_DELAY_S)
    tree.signal(second)
    return tree


def blocked_signals(pid: int, thread: int | None = None) -> set[int]:
    """The signals a thread of ``pid`` blocks (its main thread by default)."""
    for line in Path(f"/proc/{pid}/task/{thread or pid}/status").read_text().splitlines():
        if line.startswith("SigBlk:"):
            mask = int(line.split()[1], 16)
            return {n for n in range(1, 65) if mask >> (n - 1) & 1}
    raise AssertionError(f"no SigBlk line for PID {pid}")


def wait_until_signals_reach(tree: Tree) -> None:
    """Wait until the main thread of the tree blocks none of the handled signals."""
    # It blocks them for a moment whenever it starts a process or a thread.
    wait_for(lambda: not blocked_signals(tree.pid) & set(HANDLED_SIGNALS), timeout_s=5)


def metrics_directory(tree: Tree) -> Path:
    return tree.workdir / "prom" / f"greenroom-prometheus-{tree.pid}"


def main_process_lines(tree: Tree, text: str) -> int:
    return tree.log_text().count(f"[PID {tree.pid}] [MainThread] [greenroom.MainProcess] [INFO] {text}")


@pytest.mark.slow
@pytest.mark.parametrize("iteration", range(ITERATIONS))
def test_a_second_hup_during_the_reexec_reloads_again(tmp_path: Path, trees: list[Tree], iteration: int) -> None:
    tree = start_reloaded_tree(tmp_path, trees, signal.SIGHUP)
    # The new image gets the second HUP while its workers boot: it reloads once more, then serves.
    tree.wait_log(REEXEC_STARTS, 2)
    tree.wait_ready(2)
    assert tree.proc.poll() is None, tree.output()
    # The new image unblocked what the re-exec held: it is not deaf to the next signal.
    wait_until_signals_reach(tree)
    assert main_process_lines(tree, "Greenroom '") == 3
    assert (tree.workdir / "greenroom.pid").read_text() == str(tree.pid)
    assert metrics_directory(tree).is_dir()

    tree.signal(signal.SIGTERM)
    assert tree.wait_exit(30) == 0, tree.output()
    assert not (tree.workdir / "greenroom.pid").exists()
    assert not metrics_directory(tree).exists()


@pytest.mark.slow
@pytest.mark.parametrize("iteration", range(ITERATIONS))
def test_a_term_during_the_reexec_stops_gracefully(tmp_path: Path, trees: list[Tree], iteration: int) -> None:
    tree = start_reloaded_tree(tmp_path, trees, signal.SIGTERM)
    assert tree.wait_exit(30) == 0, tree.output()
    assert main_process_lines(tree, "Greenroom '") == 2
    assert "Traceback" not in tree.output()
    assert not (tree.workdir / "greenroom.pid").exists()
    assert not metrics_directory(tree).exists()


@pytest.mark.slow
@pytest.mark.parametrize("polling", [True, False], ids=["polling", "native"])
def test_only_the_main_thread_of_the_main_process_takes_signals(
    tmp_path: Path, trees: list[Tree], polling: bool
) -> None:
    # A thread that does not block them would get a TERM once the main thread blocks it for a
    # re-exec, with the default disposition back in place: the end of the process.
    (tmp_path / "app.py").write_text(APP_SOURCE)
    args = ["-p", "1", "-t", "1", "--watch", str(tmp_path)] + (["--watch-use-polling"] if polling else [])
    tree = Tree(tmp_path, args)
    trees.append(tree)
    tree.wait_ready()
    wait_until_signals_reach(tree)
    threads = [int(name) for name in os.listdir(f"/proc/{tree.pid}/task") if int(name) != tree.pid]
    assert len(threads) >= 2  # the log forwarder and the file watcher
    for thread in threads:
        assert set(HANDLED_SIGNALS) <= blocked_signals(tree.pid, thread), thread
    tree.signal(signal.SIGTERM)
    assert tree.wait_exit(30) == 0, tree.output()


def test_a_first_start_finds_no_held_signals(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(HELD_SIGNALS_ENV, raising=False)
    assert take_held_signals() == frozenset()


def test_the_new_image_takes_the_held_signals_and_hides_them_from_its_children(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(HELD_SIGNALS_ENV, "1,15,9,garbage")
    assert take_held_signals() == {signal.SIGHUP, signal.SIGTERM}  # never one it does not handle
    assert HELD_SIGNALS_ENV not in os.environ


def test_a_term_caught_after_the_loop_ended_cancels_the_reexec() -> None:
    from greenroom.cli._args import make_argument_parser, options_from_namespace
    from greenroom.cli._log_pipes import LogForwarder, LogOutput
    from greenroom.cli._supervisor import Supervisor

    forwarder = LogForwarder(LogOutput())
    supervisor = Supervisor(options_from_namespace(make_argument_parser().parse_args(["app"])), forwarder)
    supervisor.reload = True
    # Caught by the handler after the loop's last look: only queued.
    supervisor.signals.put(signal.SIGHUP)
    supervisor.signals.put(signal.SIGTERM)
    try:
        supervisor._hold_signals_for_reexec()
        assert supervisor.reload is False
        assert set(supervisor.held_signals) <= set(HANDLED_SIGNALS)
    finally:
        release_signals(supervisor.held_signals)
        supervisor.close()
        forwarder.stop()
