"""The operations API every broker implements (see :class:`greenroom._operations.QueueOperations`), as a pytest suite.

Subclass :class:`OperationsContract` in a test module and provide:

* a ``broker`` fixture returning a fresh broker (``process_boot`` already emitted);
* :meth:`OperationsContract.put_raw`, which puts raw bytes on a queue the way a foreign producer would.

Set :attr:`OperationsContract.in_progress_known` to ``False`` for a broker that cannot count the
messages workers hold (it then reports ``in_progress=None``, and leaves the delayed messages a
worker holds out of ``delayed``). Every test uses a queue of its own and runs real workers.
"""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from collections.abc import Callable

import pytest

from .._operations import read_payload
from ..actor import actor
from ..broker import Broker, QueueCounts
from ..common import current_millis
from ..errors import QueueNotFound
from ..worker import Worker
from ._contract_base import ContractBase
from .waiting import wait_for

__all__ = ["OperationsContract"]

#: Generous bound for each wait: the suite runs against real servers on a small machine.
TIMEOUT_S = 30.0
#: How far apart in time the two batches of the purge test die, in ms.
_PURGE_GAP_MS = 400


class OperationsContract(ContractBase):
    """Conformance tests for a broker's operations API."""

    #: Whether the broker counts the messages workers hold (``in_progress``; delayed ones held too).
    in_progress_known = True

    @pytest.fixture
    def queue_name(self) -> str:
        """A queue of the test's own."""
        return f"ops_{uuid.uuid4().hex[:12]}"

    def _dead_count(self, broker: Broker, queue_name: str) -> int:
        return broker.get_queue_counts(queue_name).dead

    def _ready_and_dead(self, broker: Broker, queue_name: str) -> tuple[int, int]:
        counts = broker.get_queue_counts(queue_name)
        return counts.ready, counts.dead

    def test_counts_ready_delayed_in_progress_and_dead(
        self, broker: Broker, queue_name: str, worker_factory: Callable[..., Worker]
    ) -> None:
        release = threading.Event()
        started: list[int] = []

        @actor(broker=broker, queue_name=queue_name, max_retries=0)
        def hold(n: int) -> None:
            started.append(n)
            release.wait(TIMEOUT_S)

        @actor(broker=broker, queue_name=queue_name, max_retries=0)
        def fail() -> None:
            raise ValueError("expected failure")

        hold.send(1)
        hold.send(2)
        fail.send()
        hold.send_with_options(args=(3,), delay=3_600_000)
        unknown = None if not self.in_progress_known else 0
        # A broker that publishes asynchronously (RabbitMQ) may count a message a moment after send() returns.
        wait_for(lambda: broker.get_queue_counts(queue_name) == QueueCounts(3, 1, unknown, 0), TIMEOUT_S)
        assert broker.get_queue_counts(f"{queue_name}.DQ") == QueueCounts(3, 1, unknown, 0)  # the same queue

        worker_factory(worker_threads=3)
        try:
            wait_for(lambda: sorted(started) == [1, 2] and self._dead_count(broker, queue_name) == 1, TIMEOUT_S)
            counts = broker.get_queue_counts(queue_name)
            assert (counts.ready, counts.dead) == (0, 1)
            if self.in_progress_known:
                assert counts == QueueCounts(ready=0, delayed=1, in_progress=2, dead=1)
            else:
                assert counts.in_progress is None
        finally:
            release.set()
        if self.in_progress_known:
            wait_for(lambda: broker.get_queue_counts(queue_name) == QueueCounts(0, 1, 0, 1), TIMEOUT_S)

    def test_dead_letters_are_listed_oldest_first_with_their_reasons(
        self, broker: Broker, queue_name: str, worker_factory: Callable[..., Worker]
    ) -> None:
        @actor(broker=broker, queue_name=queue_name, max_retries=0)
        def fail(n: int) -> None:
            raise ValueError(f"failure number {n}")

        started_ms = current_millis()
        sent = [fail.send(n) for n in range(3)]
        poison = b"{not a message"
        self.put_raw(broker, queue_name, poison)
        worker_factory()
        wait_for(lambda: self._dead_count(broker, queue_name) == 4, TIMEOUT_S)

        letters = broker.get_dead_letters(queue_name)
        assert len(letters) == 4
        by_message = {letter.message_id: letter for letter in letters}
        assert set(by_message) == {message.message_id for message in sent} | {None}
        for message in sent:
            letter = by_message[message.message_id]
            assert letter.queue_name == queue_name
            assert letter.actor_name == "fail"
            assert f"failure number {message.args[0]}" in letter.reason
            decoded = read_payload(letter.payload)
            assert decoded is not None
            assert decoded.message_id == message.message_id
            assert started_ms - 1000 <= letter.dead_at_ms <= current_millis() + 1000
        bad = by_message[None]
        assert (bad.payload, bad.actor_name) == (poison, None)
        assert bad.reason

        # Listing takes nothing away and keeps the order.
        assert broker.get_dead_letters(queue_name, limit=2) == letters[:2]
        assert broker.get_dead_letters(queue_name, limit=0) == []
        assert broker.get_dead_letters(queue_name) == letters
        assert self._dead_count(broker, queue_name) == 4
        with pytest.raises(ValueError, match="limit"):
            broker.get_dead_letters(queue_name, limit=-1)

    def test_requeued_dead_letters_run_again_with_their_retries_reset(
        self, broker: Broker, queue_name: str, worker_factory: Callable[..., Worker]
    ) -> None:
        attempts: Counter[int] = Counter()
        done: list[int] = []

        # Dies after two attempts (max_retries=1); requeued, it fails once more, is retried and succeeds,
        # which it could not do if its retry count had been kept.
        @actor(broker=broker, queue_name=queue_name, max_retries=1, min_backoff=10, max_backoff=20)
        def flaky(n: int) -> None:
            attempts[n] += 1
            if attempts[n] <= 3:
                raise ValueError(f"attempt {attempts[n]}")
            done.append(n)

        sent = [flaky.send(n) for n in range(3)]
        worker_factory()
        wait_for(lambda: self._dead_count(broker, queue_name) == 3, TIMEOUT_S)
        assert attempts == {0: 2, 1: 2, 2: 2}
        for letter in broker.get_dead_letters(queue_name):
            decoded = read_payload(letter.payload)
            assert decoded is not None
            assert decoded.options["retries"] == 1

        assert broker.requeue_dead_letters(queue_name, [sent[0].message_id, "no-such-message"]) == 1
        wait_for(lambda: done == [0], TIMEOUT_S)
        assert self._dead_count(broker, queue_name) == 2
        assert {letter.message_id for letter in broker.get_dead_letters(queue_name)} == {
            sent[1].message_id,
            sent[2].message_id,
        }
        assert broker.requeue_dead_letters(queue_name, []) == 0
        assert broker.requeue_dead_letters(queue_name, ["no-such-message"]) == 0

        assert broker.requeue_dead_letters(queue_name) == 2
        wait_for(lambda: sorted(done) == [0, 1, 2], TIMEOUT_S)
        assert attempts == {0: 4, 1: 4, 2: 4}
        assert self._dead_count(broker, queue_name) == 0
        assert broker.requeue_dead_letters(queue_name) == 0
        with pytest.raises(TypeError):
            broker.requeue_dead_letters(queue_name, sent[1].message_id)

    def test_undecodable_dead_letters_are_requeued_as_they_are(
        self, broker: Broker, queue_name: str, worker_factory: Callable[..., Worker]
    ) -> None:
        broker.declare_queue(queue_name)
        poison = b"\xff\xfe not a message"
        self.put_raw(broker, queue_name, poison)
        worker_factory()
        wait_for(lambda: self._dead_count(broker, queue_name) == 1, TIMEOUT_S)

        assert broker.requeue_dead_letters(queue_name) == 1
        # Back on the queue, it is dead-lettered again by the worker (its dead letter was gone on return).
        wait_for(lambda: self._ready_and_dead(broker, queue_name) == (0, 1), TIMEOUT_S)
        [again] = broker.get_dead_letters(queue_name)
        assert (again.payload, again.message_id, again.actor_name) == (poison, None, None)

    def test_purge_older_than_then_all(
        self, broker: Broker, queue_name: str, worker_factory: Callable[..., Worker]
    ) -> None:
        @actor(broker=broker, queue_name=queue_name, max_retries=0)
        def fail(n: int) -> None:
            raise ValueError(f"failure number {n}")

        old = [fail.send(0), fail.send(1)]
        worker_factory()
        wait_for(lambda: self._dead_count(broker, queue_name) == 2, TIMEOUT_S)
        old_at_ms = max(letter.dead_at_ms for letter in broker.get_dead_letters(queue_name))
        # The clock must move on before the next failure: the purge tells the two batches apart by time.
        wait_for(lambda: current_millis() >= old_at_ms + _PURGE_GAP_MS, TIMEOUT_S)
        new = fail.send(2)
        wait_for(lambda: self._dead_count(broker, queue_name) == 3, TIMEOUT_S)
        new_at_ms = max(letter.dead_at_ms for letter in broker.get_dead_letters(queue_name))
        assert new_at_ms - old_at_ms >= _PURGE_GAP_MS

        between_ms = (old_at_ms + new_at_ms) // 2
        assert broker.purge_dead_letters(queue_name, older_than_ms=current_millis() - between_ms) == 2
        assert [letter.message_id for letter in broker.get_dead_letters(queue_name)] == [new.message_id]
        assert all(message.message_id != new.message_id for message in old)
        assert broker.purge_dead_letters(queue_name, older_than_ms=3_600_000) == 0
        with pytest.raises(ValueError, match="older_than_ms"):
            broker.purge_dead_letters(queue_name, older_than_ms=-1)
        assert broker.purge_dead_letters(queue_name) == 1
        assert self._dead_count(broker, queue_name) == 0
        assert broker.get_dead_letters(queue_name) == []
        assert broker.purge_dead_letters(queue_name) == 0

    def test_unknown_queues_are_refused(self, broker: Broker, queue_name: str) -> None:
        with pytest.raises(QueueNotFound):
            broker.get_queue_counts(queue_name)
        with pytest.raises(QueueNotFound):
            broker.get_dead_letters(queue_name)
        with pytest.raises(QueueNotFound):
            broker.requeue_dead_letters(queue_name)
        with pytest.raises(QueueNotFound):
            broker.purge_dead_letters(queue_name)
