"""The contract every results backend meets, run against each of them."""

from __future__ import annotations

import hashlib
import threading
import time
import uuid
from pathlib import Path

import pytest

from greenroom import Message
from greenroom.results import Missing, ResultBackend, ResultFailure, ResultMissing, ResultTimeout
from greenroom.results.backends import SQLiteBackend, StubBackend
from greenroom.testing import wait_for


def make_message(queue_name: str = "default") -> Message[object]:
    return Message(queue_name=queue_name, actor_name="do_work", args=(), kwargs={}, options={})


def test_a_stored_result_can_be_fetched(result_backend: ResultBackend) -> None:
    message = make_message()
    result_backend.store_result(message, {"total": 3, "items": (1, 2)}, 10000)
    # Results go through the encoder: tuples come back as lists.
    assert message.get_result(backend=result_backend) == {"total": 3, "items": [1, 2]}
    assert message.get_result(backend=result_backend, block=True, timeout=1000) == {"total": 3, "items": [1, 2]}


def test_storing_again_replaces_the_result(result_backend: ResultBackend) -> None:
    message = make_message()
    result_backend.store_result(message, 1, 10000)
    result_backend.store_result(message, 2, 10000)
    assert message.get_result(backend=result_backend) == 2


def test_none_is_a_result(result_backend: ResultBackend) -> None:
    message = make_message()
    result_backend.store_result(message, None, 10000)
    assert message.get_result(backend=result_backend) is None


def test_a_missing_result_raises_result_missing(result_backend: ResultBackend) -> None:
    message = make_message()
    with pytest.raises(ResultMissing):
        message.get_result(backend=result_backend)
    assert result_backend._get(result_backend.build_message_key(message)) is Missing


def test_a_blocking_get_times_out(result_backend: ResultBackend) -> None:
    message = make_message()
    start = time.monotonic()
    with pytest.raises(ResultTimeout):
        message.get_result(backend=result_backend, block=True, timeout=300)
    assert time.monotonic() - start >= 0.29
    with pytest.raises(ResultTimeout):
        message.get_result(backend=result_backend, block=True, timeout=0)


def test_a_blocking_get_returns_a_result_stored_while_waiting(result_backend: ResultBackend) -> None:
    message = make_message()
    started = threading.Event()

    def store_later() -> None:
        started.wait(5)
        result_backend.store_result(message, "late", 10000)

    thread = threading.Thread(target=store_later)
    thread.start()
    try:
        started.set()
        assert message.get_result(backend=result_backend, block=True, timeout=10000) == "late"
    finally:
        thread.join(10)


def test_a_stored_exception_raises_result_failure(result_backend: ResultBackend) -> None:
    message = make_message()
    result_backend.store_exception(message, ValueError("boom"), 10000)
    with pytest.raises(ResultFailure) as info:
        message.get_result(backend=result_backend)
    assert str(info.value) == "actor raised ValueError: boom"
    assert info.value.orig_exc_type == "ValueError"
    assert info.value.orig_exc_msg == "boom"
    with pytest.raises(ResultFailure):
        message.get_result(backend=result_backend, block=True, timeout=1000)


def test_results_expire_after_their_ttl(result_backend: ResultBackend) -> None:
    message = make_message()
    # 3 s: memcached counts expiry in whole seconds, so a 1 s result may expire before it is read.
    result_backend.store_result(message, "short-lived", 3000)
    assert message.get_result(backend=result_backend) == "short-lived"

    def expired() -> bool:
        try:
            message.get_result(backend=result_backend)
        except ResultMissing:
            return True
        return False

    wait_for(expired, timeout_s=10, interval_s=0.05)


def test_delay_queue_messages_share_the_canonical_key(result_backend: ResultBackend) -> None:
    message = make_message()
    delayed = message.copy(queue_name="default.DQ")
    result_backend.store_result(delayed, 42, 10000)
    assert message.get_result(backend=result_backend) == 42


def test_keys_are_md5_digests_unless_prefix_keys_are_asked_for() -> None:
    message = make_message()
    plain = f"greenroom-results:default:do_work:{message.message_id}"
    assert StubBackend().build_message_key(message) == hashlib.md5(plain.encode()).hexdigest()
    assert StubBackend(use_namespace_prefix_keys=True).build_message_key(message) == plain
    assert (
        StubBackend(namespace="other", use_namespace_prefix_keys=True).build_message_key(message).startswith("other:")
    )


def test_failures_are_stored_in_dramatiqs_format() -> None:
    backend = StubBackend()
    assert backend.wrap_exception(KeyError("k")) == {
        "__t": "dramatiq.results.Result",
        "exn": {"type": "KeyError", "msg": "'k'"},
    }


def test_dramatiq_reads_greenroom_results_from_redis() -> None:
    """The stored layout is Dramatiq's: its backend, on the same namespace, reads our results and failures."""
    dramatiq = pytest.importorskip("dramatiq")
    redis = pytest.importorskip("redis")
    from dramatiq.results import ResultFailure as DramatiqResultFailure
    from dramatiq.results.backends import RedisBackend as DramatiqRedisBackend

    from greenroom.results.backends import RedisBackend
    from tests.conftest import service_unavailable

    client = redis.Redis()
    try:
        client.ping()
    except redis.RedisError as exc:
        service_unavailable("Redis", exc)
    namespace = f"greenroom-test-compat-{uuid.uuid4().hex}"
    ours = RedisBackend(namespace=namespace, client=client)
    theirs = DramatiqRedisBackend(namespace=namespace, client=client)
    done = make_message()
    failed = make_message()
    try:
        ours.store_result(done, {"answer": 42}, 10000)
        ours.store_exception(failed, ValueError("bad"), 10000)
        as_dramatiq = [dramatiq.Message(**m.asdict()) for m in (done, failed)]
        assert theirs.get_result(as_dramatiq[0]) == {"answer": 42}
        with pytest.raises(DramatiqResultFailure, match="ValueError: bad"):
            theirs.get_result(as_dramatiq[1])
    finally:
        client.delete(ours.build_message_key(done), ours.build_message_key(failed))
        client.close()


def test_expired_results_are_purged_from_the_sqlite_table(tmp_path: Path) -> None:
    backend = SQLiteBackend(path=tmp_path / "results.db")
    try:
        old, new = make_message(), make_message()
        backend.store_result(old, 1, 1)
        wait_for(lambda: backend._get(backend.build_message_key(old)) is Missing, timeout_s=5)
        backend._table.purges.reset()  # make the next store purge
        backend.store_result(new, 2, 60000)
        rows = backend._table.db.read(lambda conn: conn.execute("SELECT key FROM greenroom_results").fetchall())
        assert rows == [(backend.build_message_key(new),)]
    finally:
        backend.close()


def test_a_forked_child_opens_its_own_sqlite_connections(tmp_path: Path) -> None:
    from tests.conftest import in_forked_child

    backend = SQLiteBackend(path=tmp_path / "results.db")
    parent_message, child_message = make_message(), make_message()
    try:
        backend.store_result(parent_message, "from the parent", 10000)
        inherited = backend._table.db._connection().conn

        def in_child() -> str:
            backend.store_result(child_message, "from the child", 10000)
            fresh = backend._table.db._connection().conn is not inherited
            return f"{fresh} {parent_message.get_result(backend=backend)}"

        assert in_forked_child(in_child) == "True from the parent"
        assert child_message.get_result(backend=backend) == "from the child"
    finally:
        backend.close()
