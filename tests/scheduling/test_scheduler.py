"""The scheduler, stepped with a fake clock: one message per tick among several schedulers, takeover, fencing, DST."""

from __future__ import annotations

import datetime
from collections.abc import Iterator
from typing import Any
from zoneinfo import ZoneInfo

import pytest

import greenroom
from greenroom.brokers.stub import StubBroker
from greenroom.message import Message
from greenroom.middleware import Middleware
from greenroom.scheduling import Scheduler, SchedulerSettings, TickCounters, schedules_of, store_for
from greenroom.scheduling._store import Claim

BERLIN = ZoneInfo("Europe/Berlin")
START_MS = 1_800_000_000_000  # a whole second, far from any DST change in Berlin


class FakeClock:
    """Wall and monotonic milliseconds that move only when told."""

    def __init__(self, wall_ms: int) -> None:
        self.now_ms = wall_ms
        self.mono_ms = 0.0

    def wall_ms(self) -> int:
        return self.now_ms

    def monotonic_ms(self) -> float:
        return self.mono_ms

    def advance(self, ms: float) -> None:
        self.now_ms += int(ms)
        self.mono_ms += int(ms)


class Recorder(Middleware):
    """Every scheduled message enqueued: (tick, fake wall time of the enqueue)."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.sent: list[tuple[int, int]] = []

    def after_enqueue(self, broker: Any, message: Message[Any], delay: int | None) -> None:
        self.sent.append((message.options["scheduled_at"], self.clock.wall_ms()))

    def ticks(self) -> list[int]:
        return [tick for tick, _ in self.sent]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START_MS)


@pytest.fixture
def recorder(clock: FakeClock) -> Recorder:
    return Recorder(clock)


@pytest.fixture
def broker(recorder: Recorder) -> Iterator[StubBroker]:
    broker = StubBroker(middleware=[recorder])
    greenroom.set_broker(broker)
    yield broker
    broker.close()


def declare(broker: StubBroker, **options: Any) -> None:
    def job() -> None:
        pass

    greenroom.schedule(greenroom.actor(job, broker=broker), **options)


def schedulers(broker: StubBroker, clock: FakeClock, count: int, **settings: int) -> list[Scheduler]:
    return [
        Scheduler(schedules_of(broker), store_for(broker), clock=clock, settings=SchedulerSettings(**settings))
        for _ in range(count)
    ]


def step(clock: FakeClock, running: list[Scheduler], until_ms: int, step_ms: int = 50) -> None:
    while clock.now_ms < until_ms:
        for scheduler in running:
            scheduler.run_once()
        clock.advance(step_ms)


def test_three_schedulers_enqueue_every_tick_exactly_once_and_on_time(
    broker: StubBroker, clock: FakeClock, recorder: Recorder
) -> None:
    declare(broker, every=1)
    running = schedulers(broker, clock, 3)
    step(clock, running, START_MS + 20_000)
    assert sum(len(s.leading) for s in running) == 1
    ticks = recorder.ticks()
    assert ticks == list(range(START_MS + 1000, START_MS + 20_000, 1000))
    assert all(sent - tick <= 50 for tick, sent in recorder.sent)


def test_a_dead_leader_is_replaced_within_the_lease_and_missed_ticks_follow_latest(
    broker: StubBroker, clock: FakeClock, recorder: Recorder
) -> None:
    declare(broker, every=1)
    running = schedulers(broker, clock, 3)
    step(clock, running, START_MS + 5_500)
    (leader,) = [s for s in running if s.leading]
    running.remove(leader)  # killed: it neither renews nor releases
    killed_at = clock.now_ms
    step(clock, running, START_MS + 15_000)
    ticks = recorder.ticks()
    assert len(ticks) == len(set(ticks))
    after = [(tick, sent) for tick, sent in recorder.sent if sent >= killed_at]
    takeover_ms = after[0][1] - killed_at
    assert takeover_ms <= 3000 + 500 + 50  # lease + acquire interval + one step
    # The ticks before the takeover were missed: only the newest of them ran (late), then all on time.
    missed = list(range(START_MS + 6000, after[0][1] - 999, 1000))
    assert missed[-1] == after[0][0]
    assert not set(missed[:-1]) & set(ticks)
    assert [tick for tick, _ in after[1:]] == list(range(after[0][0] + 1000, START_MS + 15_000, 1000))


def test_a_stalled_leader_is_fenced_off_after_another_took_over(
    broker: StubBroker, clock: FakeClock, recorder: Recorder
) -> None:
    declare(broker, every=1)
    first, second = schedulers(broker, clock, 2)
    step(clock, [first, second], START_MS + 2_500)
    leader, other = (first, second) if first.leading else (second, first)
    stale_lease = next(iter(leader.leases.values()))
    step(clock, [other], START_MS + 8_000)  # the leader hangs (a long GC pause, SIGSTOP)
    assert other.leading
    # It wakes up and goes on as if it still led: its record is refused, nothing is sent twice.
    assert leader.store.record(stale_lease, START_MS + 9_000, run=True) is Claim.LOST
    step(clock, [leader, other], START_MS + 12_000)
    assert not leader.leading
    ticks = recorder.ticks()
    assert len(ticks) == len(set(ticks))
    assert ticks[-1] == START_MS + 11_000


def test_a_clean_stop_hands_the_lead_over_at_once(broker: StubBroker, clock: FakeClock, recorder: Recorder) -> None:
    declare(broker, every=1)
    first, second = schedulers(broker, clock, 2)
    step(clock, [first, second], START_MS + 2_500)
    leader, other = (first, second) if first.leading else (second, first)
    leader.close()
    step(clock, [other], START_MS + 6_000)
    assert recorder.ticks() == list(range(START_MS + 1000, START_MS + 6000, 1000))
    assert all(sent - tick <= 550 for tick, sent in recorder.sent)


@pytest.mark.parametrize(
    ("missed", "expected"),
    [
        ("latest", [9000, 10_000]),
        ("all", [4000, 5000, 6000, 7000, 8000, 9000, 10_000]),
        ("none", [10_000]),
    ],
)
def test_missed_policies_after_nobody_led(
    broker: StubBroker, clock: FakeClock, recorder: Recorder, missed: str, expected: list[int]
) -> None:
    declare(broker, every=1, missed=missed)
    (scheduler,) = schedulers(broker, clock, 1)
    step(clock, [scheduler], START_MS + 3_500)
    scheduler.leases.clear()  # forgets its lease, as a process that died would
    clock.advance(6_800)  # nobody leads while the lease runs out and a few ticks pass
    (successor,) = schedulers(broker, clock, 1)
    successor.run_once()
    assert [t - START_MS for t in recorder.ticks()] == [1000, 2000, 3000, *expected]


def test_counters_of_enqueued_and_skipped_ticks(broker: StubBroker, clock: FakeClock) -> None:
    prometheus_client = pytest.importorskip("prometheus_client")
    registry = prometheus_client.CollectorRegistry()
    declare(broker, every=1)
    scheduler = Scheduler(schedules_of(broker), store_for(broker), clock=clock, metrics=TickCounters(registry=registry))
    step(clock, [scheduler], START_MS + 3_500)
    clock.advance(5_000)
    # A stall of five seconds: 4 s to 7 s are missed (the newest runs), 8 s is on time.
    scheduler.run_once()

    def value(name: str) -> Any:
        return registry.get_sample_value(name, {"schedule": "job"})

    assert value("greenroom_schedule_ticks_enqueued_total") == 3 + 2
    assert value("greenroom_schedule_ticks_skipped_total") == 3


def run_through(broker: StubBroker, clock: FakeClock, until_ms: int) -> None:
    """Follow the scheduler's own wake-ups (long leases keep the steps few)."""
    (scheduler,) = schedulers(broker, clock, 1, lease_ms=7_200_000, renew_interval_ms=3_600_000)
    while clock.now_ms < until_ms:
        clock.advance(max(1.0, scheduler.run_once() * 1000))


def local_times(recorder: Recorder, tz: datetime.tzinfo = BERLIN) -> list[str]:
    return [datetime.datetime.fromtimestamp(tick / 1000, tz).isoformat() for tick in recorder.ticks()]


def test_dst_spring_forward_through_the_scheduler(broker: StubBroker, clock: FakeClock, recorder: Recorder) -> None:
    declare(broker, cron="30 2 * * *", tz="Europe/Berlin")
    clock.now_ms = int(datetime.datetime(2026, 3, 28, 12, tzinfo=BERLIN).timestamp() * 1000)
    run_through(broker, clock, clock.now_ms + 3 * 86_400_000)
    assert local_times(recorder) == [
        "2026-03-29T03:00:00+02:00",  # 02:30 does not exist that night: once, when the clocks jump
        "2026-03-30T02:30:00+02:00",
        "2026-03-31T02:30:00+02:00",
    ]
    assert all(sent == tick for tick, sent in recorder.sent)  # woken exactly at each tick


def test_dst_fall_back_through_the_scheduler(broker: StubBroker, clock: FakeClock, recorder: Recorder) -> None:
    declare(broker, cron="0,30 2 * * *", tz="Europe/Berlin")
    clock.now_ms = int(datetime.datetime(2026, 10, 24, 12, tzinfo=BERLIN).timestamp() * 1000)
    run_through(broker, clock, clock.now_ms + 2 * 86_400_000)
    assert local_times(recorder) == [
        "2026-10-25T02:00:00+02:00",  # the repeated hour runs once, in its first pass
        "2026-10-25T02:30:00+02:00",
        "2026-10-26T02:00:00+01:00",
        "2026-10-26T02:30:00+01:00",
    ]


def test_cron_with_seconds_through_the_scheduler(broker: StubBroker, clock: FakeClock, recorder: Recorder) -> None:
    declare(broker, cron="*/15 * * * * *")
    step(clock, schedulers(broker, clock, 2), START_MS + 61_000, step_ms=250)
    assert [t - START_MS for t in recorder.ticks()] == [15_000, 30_000, 45_000, 60_000]
    assert all(sent - tick < 250 for tick, sent in recorder.sent)
