"""Checked by mypy (see .ci/run), never run by pytest.

Each ``# type: ignore[code]`` marks a line mypy must reject: with ``warn_unused_ignores`` (on under
``--strict``), a line mypy stopped rejecting fails the check.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from typing_extensions import assert_type

import greenroom
from greenroom import Actor, Message
from greenroom.brokers.stub import StubBroker

broker = StubBroker()


@greenroom.actor(broker=broker)
def add(x: int, y: int) -> int:
    return x + y


@greenroom.actor
def greet(name: str, *, punctuation: str = "!") -> str:
    return "hello " + name + punctuation


@greenroom.actor(queue_name="async_q", broker=broker)
async def fetch(url: str) -> bytes:
    return url.encode()


if TYPE_CHECKING:
    _typed: Actor[[int, int], int] = add
    assert_type(add.send(1, 2), Message[int])
    assert_type(add.message(1, 2), Message[int])
    assert_type(add(1, 2), int)
    assert_type(greet.send("bob", punctuation="?"), Message[str])
    assert_type(fetch.send("https://example.com"), Message[bytes])
    assert_type(add.send_with_options(args=(1, 2), delay=100), Message[int])

    add.send("1", 2)  # type: ignore[arg-type]
    add.send(1)  # type: ignore[call-arg]
    greet.send("bob", punct="?")  # type: ignore[call-arg]
    fetch.send(42)  # type: ignore[arg-type]
    greenroom.actor(queue_name=3)  # type: ignore[call-overload]

    # The core names what the layers above it provide through protocols; the real classes satisfy them.
    from greenroom._hooks import MiddlewareLike
    from greenroom._types import GlobalBroker, ResultBackendLike
    from greenroom.broker import ActorLike
    from greenroom.middleware import Retries
    from greenroom.results.backends import StubBackend

    _actor_like: ActorLike = add
    _async_actor_like: ActorLike = fetch
    _middleware_like: MiddlewareLike = Retries()
    _backend_like: ResultBackendLike = StubBackend()
    _global_broker: GlobalBroker = broker
    assert_type(greenroom.get_broker(), greenroom.Broker)

if TYPE_CHECKING:
    from greenroom.scheduling import Clock, Schedule, SystemClock

    assert_type(greenroom.schedule(add, every=60, args=(1, 2)), Schedule)
    greenroom.schedule(add, cron="* * * * *", missed="sometimes")  # type: ignore[arg-type]
    _clock: Clock = SystemClock()
