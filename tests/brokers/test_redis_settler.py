"""The Redis consumer's Settler: acks sent in the background, grouped while a round trip is in flight.

The settle function here stands for ``RedisStorage.settle``: it records each call and can be held
(a slow round trip) or made to fail (Redis unreachable). The settler's use by the real consumer is
covered by the broker tests (contract suite, Redis restart mid-run).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator, Sequence

import pytest

from greenroom.brokers.redis import _settler
from greenroom.brokers.redis._settler import Settler
from greenroom.brokers.redis._storage import SettleOp
from greenroom.errors import ConnectionClosed
from greenroom.testing import wait_for

TIMEOUT_S = 10.0


class Round:
    """A settle function whose round trips can be held open or made to fail."""

    def __init__(self) -> None:
        self.calls: list[list[bytes]] = []
        self.failures_left = 0
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()

    def __call__(self, ops: Sequence[SettleOp]) -> None:
        self.entered.set()
        assert self.gate.wait(TIMEOUT_S)
        if self.failures_left:
            self.failures_left -= 1
            raise ConnectionClosed("Redis is away")
        self.calls.append([op[1] for op in ops])


@pytest.fixture
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_settler, "RETRY_INTERVAL_S", 0.05)
    monkeypatch.setattr(_settler, "IDLE_EXIT_S", 0.2)


@pytest.fixture
def settler(fast_retries: None) -> Iterator[tuple[Settler, Round, list[bytes]]]:
    round_trip = Round()
    done: list[bytes] = []
    settler = Settler(round_trip, logging.getLogger("test.settler"), "test-settler")
    yield settler, round_trip, done
    round_trip.gate.set()
    settler.close(TIMEOUT_S)


def _submit(settler: Settler, done: list[bytes], redis_id: bytes) -> None:
    settler.submit(("a", redis_id, ""), lambda: done.append(redis_id))


def test_acks_handed_over_during_a_round_trip_go_out_together_in_the_next(
    settler: tuple[Settler, Round, list[bytes]],
) -> None:
    settler_, round_trip, done = settler
    round_trip.gate.clear()
    _submit(settler_, done, b"1")
    assert round_trip.entered.wait(TIMEOUT_S)  # the first round trip is in flight, held
    for n in range(2, 6):
        _submit(settler_, done, str(n).encode())
    assert settler_.backlog() == 5
    round_trip.gate.set()
    wait_for(lambda: len(done) == 5, TIMEOUT_S)
    assert round_trip.calls == [[b"1"], [b"2", b"3", b"4", b"5"]]
    assert settler_.backlog() == 0


def test_a_failed_round_trip_is_retried_until_redis_answers(settler: tuple[Settler, Round, list[bytes]]) -> None:
    settler_, round_trip, done = settler
    round_trip.failures_left = 3
    _submit(settler_, done, b"1")
    wait_for(lambda: done == [b"1"], TIMEOUT_S)
    assert round_trip.calls == [[b"1"]]
    assert round_trip.failures_left == 0


def test_close_waits_for_what_was_handed_over_then_settles_in_the_caller(
    settler: tuple[Settler, Round, list[bytes]],
) -> None:
    settler_, round_trip, done = settler
    round_trip.gate.clear()
    _submit(settler_, done, b"1")
    assert round_trip.entered.wait(TIMEOUT_S)
    _submit(settler_, done, b"2")
    threading.Timer(0.2, round_trip.gate.set).start()
    settler_.close(TIMEOUT_S)
    assert done == [b"1", b"2"]  # both through before close() returned
    caller = threading.get_ident()
    seen_in: list[int] = []
    settler_.submit(("a", b"3", ""), lambda: seen_in.append(threading.get_ident()))
    assert seen_in == [caller]
    assert round_trip.calls[-1] == [b"3"]


def test_once_closed_it_gives_up_after_a_few_attempts_and_runs_no_callback(
    settler: tuple[Settler, Round, list[bytes]], caplog: pytest.LogCaptureFixture
) -> None:
    settler_, round_trip, done = settler
    round_trip.failures_left = 1000
    _submit(settler_, done, b"1")
    settler_.close(0.1)  # Redis stays away: close returns at its timeout
    wait_for(lambda: "Redis will deliver them again" in caplog.text, TIMEOUT_S)
    assert done == []
    assert round_trip.calls == []


def test_the_thread_leaves_when_idle_and_comes_back_with_the_next_ack(
    settler: tuple[Settler, Round, list[bytes]],
) -> None:
    settler_, _, done = settler
    _submit(settler_, done, b"1")
    wait_for(lambda: not any(t.name == "test-settler" for t in threading.enumerate()), TIMEOUT_S)
    _submit(settler_, done, b"2")
    wait_for(lambda: done == [b"1", b"2"], TIMEOUT_S)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_a_forked_child_starts_a_settler_thread_of_its_own(settler: tuple[Settler, Round, list[bytes]]) -> None:
    settler_, round_trip, done = settler
    round_trip.gate.clear()
    _submit(settler_, done, b"1")
    assert round_trip.entered.wait(TIMEOUT_S)  # the parent's thread is busy: the child inherits it as "running"
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: only this thread exists here
        code = 1
        try:
            round_trip.gate.set()
            child_done: list[bytes] = []
            settler_.submit(("a", b"child", ""), lambda: child_done.append(b"child"))
            deadline = threading.Event()
            for _ in range(100):  # bounded: up to 5 s
                if child_done:
                    code = 0
                    break
                deadline.wait(0.05)
        finally:
            os.write(write_end, bytes([code]))
            os._exit(code)
    os.close(write_end)
    try:
        assert os.read(read_end, 1) == b"\x00"
    finally:
        os.close(read_end)
        os.waitpid(pid, 0)
    round_trip.gate.set()
    wait_for(lambda: done == [b"1"], TIMEOUT_S)
