from __future__ import annotations

from typing import Any

import greenroom
from greenroom import Message, MessageProxy
from greenroom.brokers.stub import StubBroker
from greenroom.middleware.group_callbacks import GroupCallbacks
from greenroom.rate_limits import Barrier
from greenroom.rate_limits.backends import StubBackend


def test_a_redelivered_member_neither_fires_early_nor_twice() -> None:
    backend = StubBackend()
    middleware = GroupCallbacks(backend)
    broker = StubBroker(middleware=[middleware])

    @greenroom.actor(broker=broker)
    def member(n: int) -> None:
        pass

    @greenroom.actor(broker=broker)
    def done() -> None:
        pass

    Barrier(backend, "group-1", ttl=60000).create(3)
    options: dict[str, Any] = {
        "group_completion_uuid": "group-1",
        "group_completion_callbacks": [done.message().asdict()],
    }
    members = [member.message_with_options(args=(n,), **options) for n in range(3)]

    def finish(message: Message[Any]) -> None:
        middleware.after_process_message(broker, MessageProxy(message), result=None)

    finish(members[0])
    finish(members[0])  # delivered again: must not count as the second member
    finish(members[1])
    assert broker.queues["default"].qsize() == 0
    finish(members[2])
    assert broker.queues["default"].qsize() == 1
    finish(members[2])  # the last member delivered again: the callbacks are not sent twice
    assert broker.queues["default"].qsize() == 1
