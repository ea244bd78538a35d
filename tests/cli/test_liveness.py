"""The liveness board and the frozen-process watch of the main process, piece by piece.

The whole story (a real tree, a process frozen with the GIL held) is in
``tests/dispatch/test_frozen_processes.py``.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from greenroom.cli._frozen import FROZEN_AFTER_S, FrozenWatch, StuckGuard, StuckRegistry
from greenroom.cli._launcher import Child
from greenroom.cli._liveness import MESSAGE_ID_BYTES, Board, board_key
from greenroom.middleware import TimeLimitExceeded


@pytest.fixture
def board(tmp_path: Path) -> Iterator[Board]:
    board = Board.create(str(tmp_path / "liveness"), slots=2, runs_per_slot=3)
    yield board
    board.close()


def test_a_slot_reads_back_what_another_process_wrote(board: Board) -> None:
    assert board.read(0) is None  # no beat yet
    pid = os.fork()
    if pid == 0:  # the child writes through a mapping of its own, as a worker process does
        child_board = Board(board.path, board.slots, board.runs_per_slot)
        child_board.beat(1, 12.5, os.getpid())
        child_board.set_run(1, 0, 20.0, "first")
        child_board.set_run(1, 2, 30.0, board_key("x" * 100))
        child_board.set_run(1, 1, 25.0, "gone")
        child_board.clear_run(1, 1)
        os._exit(0)
    os.waitpid(pid, 0)
    beat = board.read(1)
    assert beat is not None
    assert beat.beat_s == 12.5
    assert beat.pid == pid
    assert beat.runs == ((20.0, "first"), (30.0, board_key("x" * 100)))
    assert board.read(0) is None
    board.clear(1)
    assert board.read(1) is None


def test_cells_and_slots_out_of_range_are_refused(board: Board) -> None:
    with pytest.raises(IndexError):
        board.set_run(0, 3, 1.0, "m")
    with pytest.raises(IndexError):
        board.beat(2, 1.0, 1)


def test_a_mark_is_claimed_once(tmp_path: Path, board: Board) -> None:
    (tmp_path / "stuck").mkdir()
    registry = StuckRegistry(str(tmp_path / "stuck"), board)
    before = board.generation
    registry.mark("m-1", "it froze")
    assert board.generation == before + 1
    marks = registry.marked()
    assert set(marks) == {"m-1"}
    assert registry.claim(marks["m-1"]) == "it froze"
    assert registry.claim(marks["m-1"]) is None  # another process came first
    assert registry.marked() == {}


def test_board_keys_fit_the_board_and_tell_long_ids_apart() -> None:
    uuid_like = "0f8fad5b-d9cb-469f-a165-70867728950e"
    assert board_key(uuid_like) == uuid_like
    long_a, long_b = "a" * 64 + "-1", "a" * 64 + "-2"  # the same first 64 characters
    assert board_key(long_a) != board_key(long_b)
    assert board_key("é") != board_key("e")
    for key in (board_key(long_a), board_key("é" * 40)):
        assert key.isascii()
        assert len(key) <= MESSAGE_ID_BYTES


class _Message:
    def __init__(self, message_id: str) -> None:
        self.message_id = message_id


class _Deadline:
    """Stands for the time limit, which sets each run's deadline before the guard looks."""

    def current_deadline(self) -> float:
        return 50.0


@pytest.fixture
def guard(tmp_path: Path, board: Board) -> StuckGuard:
    return StuckGuard(StuckRegistry(str(tmp_path / "stuck"), board), 0, _Deadline())  # type: ignore[arg-type]


def test_two_deliveries_of_one_message_leave_the_board_each_on_its_own(guard: StuckGuard, board: Board) -> None:
    """A lease that lapsed and was taken again: the same message runs twice at once."""
    first, second = _Message("twice"), _Message("twice")
    threads = [threading.Thread(target=guard.before_process_message, args=(None, m)) for m in (first, second)]
    for thread in threads:
        thread.start()
        thread.join(10)
    board.beat(0, 1.0, os.getpid())
    guard.after_process_message(None, first)  # type: ignore[arg-type]
    beat = board.read(0)
    assert beat is not None
    assert beat.runs == ((50.0, "twice"),)  # the second still runs, and may still freeze the process
    guard.after_process_message(None, second)  # type: ignore[arg-type]
    beat = board.read(0)
    assert beat is not None
    assert beat.runs == ()


def test_a_marked_message_with_a_long_id_fails_once(guard: StuckGuard) -> None:
    long_id = "job-" + "x" * 96
    guard.registry.mark(board_key(long_id), "it froze its process")
    with pytest.raises(TimeLimitExceeded, match="it froze its process"):
        guard.before_process_message(None, _Message(long_id))  # type: ignore[arg-type]
    guard.after_process_message(None, _Message(long_id))  # type: ignore[arg-type]
    guard.before_process_message(None, _Message(long_id))  # type: ignore[arg-type]  # its retry runs


def test_a_run_settled_by_another_thread_leaves_the_board(guard: StuckGuard, board: Board) -> None:
    """A warden taking over a stuck actor settles its message from the warden's thread."""
    started = threading.Event()
    release = threading.Event()
    delivery = _Message("stuck")

    def worker_thread() -> None:
        guard.before_process_message(None, delivery)  # type: ignore[arg-type]
        started.set()
        release.wait(10)  # stands for the stuck actor

    thread = threading.Thread(target=worker_thread)
    thread.start()
    try:
        assert started.wait(10)
        board.beat(0, 1.0, os.getpid())
        beat = board.read(0)
        assert beat is not None
        assert beat.runs == ((50.0, "stuck"),)
        guard.after_process_message(None, delivery)  # type: ignore[arg-type]  # from this thread
        beat = board.read(0)
        assert beat is not None
        assert beat.runs == ()
        assert not hasattr(guard._cells, "cell")  # the settling thread took no cell
    finally:
        release.set()
        thread.join(10)


def test_marks_in_a_directory_others_can_write_are_ignored(tmp_path: Path, board: Board) -> None:
    planted = tmp_path / "stuck"
    planted.mkdir()
    (planted / "a-mark").write_text("victim\nplanted by someone else")
    planted.chmod(0o777)
    registry = StuckRegistry(str(planted), board)
    assert registry.marked() == {}
    with pytest.raises(OSError, match="not a directory of this user's"):
        registry.mark("m-1", "it froze")


class _Sleeper:
    """A real process standing in for a worker process (it never beats by itself)."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        self.pid = self.proc.pid

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.kill()
        return self.proc.wait(10)


@pytest.fixture
def watch(tmp_path: Path, board: Board) -> Iterator[tuple[FrozenWatch, Child, _Sleeper]]:
    (tmp_path / "stuck").mkdir()
    registry = StuckRegistry(str(tmp_path / "stuck"), board)
    watch = FrozenWatch(board, registry, grace_s=1.0, shutdown_timeout_s=5.0, logger=logging.getLogger("test"))
    sleeper = _Sleeper()
    child = Child(0)
    child.process = sleeper  # type: ignore[assignment]  # the watch reads only .pid
    try:
        yield watch, child, sleeper
    finally:
        sleeper.stop()


def _killed(sleeper: Any) -> bool:
    try:
        return sleeper.proc.wait(5) == -9
    except subprocess.TimeoutExpired:
        return False


def test_a_silent_process_with_an_overdue_run_is_killed_and_its_message_marked(
    watch: tuple[FrozenWatch, Child, _Sleeper], board: Board
) -> None:
    frozen, child, sleeper = watch
    board.beat(0, 100.0, sleeper.pid)
    board.set_run(0, 0, 98.0, "overdue")
    board.set_run(0, 1, 500.0, "not-yet")
    frozen.check([child], 100.0 + FROZEN_AFTER_S, stopping_since_s=None)  # the deadline + grace is 99
    assert child.killed_frozen
    assert _killed(sleeper)
    assert set(frozen.registry.marked()) == {"overdue"}


@pytest.mark.parametrize(
    ("beat_s", "deadline_s", "now_s"),
    [
        (100.0, 98.0, 100.5),  # beating: the warden in the process takes the run over itself
        (100.0, 100.8, 101.5),  # silent, but the run is not past its grace yet (101.8)
        (100.0, 0.0, 200.0),  # silent without runs (a long GIL-holding call within its limit)
    ],
)
def test_no_kill_while_the_process_beats_or_nothing_is_overdue(
    watch: tuple[FrozenWatch, Child, _Sleeper], board: Board, beat_s: float, deadline_s: float, now_s: float
) -> None:
    frozen, child, sleeper = watch
    board.beat(0, beat_s, sleeper.pid)
    if deadline_s:
        board.set_run(0, 0, deadline_s, "m")
    frozen.check([child], now_s, stopping_since_s=None)
    assert not child.killed_frozen
    assert sleeper.proc.poll() is None


def test_a_slot_of_another_pid_is_ignored(watch: tuple[FrozenWatch, Child, _Sleeper], board: Board) -> None:
    frozen, child, sleeper = watch
    board.beat(0, 100.0, sleeper.pid + 1)  # left by the process this one replaced
    board.set_run(0, 0, 1.0, "old")
    frozen.check([child], 1000.0, stopping_since_s=None)
    assert sleeper.proc.poll() is None


def test_a_process_frozen_past_the_shutdown_timeout_is_killed(
    watch: tuple[FrozenWatch, Child, _Sleeper], board: Board
) -> None:
    frozen, child, sleeper = watch
    board.beat(0, 100.0, sleeper.pid)  # no run with a deadline: only the stop's own bound applies
    frozen.check([child], 105.0, stopping_since_s=100.0)  # shutdown 5 s, grace 1 s: not yet
    assert sleeper.proc.poll() is None
    frozen.check([child], 106.0, stopping_since_s=100.0)
    assert _killed(sleeper)
    assert frozen.registry.marked() == {}
