"""When schedules tick: intervals, cron with seconds and aliases, and daylight-saving changes in Europe/Berlin."""

from __future__ import annotations

import datetime
from zoneinfo import ZoneInfo

import pytest

from greenroom.scheduling._cron import CronExpression, InvalidCron
from greenroom.scheduling._plan import MAX_CATCH_UP, plan_ticks
from greenroom.scheduling._triggers import CronTrigger, IntervalTrigger

BERLIN = ZoneInfo("Europe/Berlin")
UTC = datetime.timezone.utc


def at(text: str, tz: datetime.tzinfo = UTC) -> int:
    """Epoch ms of an ISO local time (``fold`` picks the second pass of a repeated hour)."""
    return int(datetime.datetime.fromisoformat(text).replace(tzinfo=tz).timestamp() * 1000)


def local(instant_ms: int, tz: datetime.tzinfo = BERLIN) -> str:
    return datetime.datetime.fromtimestamp(instant_ms / 1000, tz).isoformat()


def ticks_between(trigger: CronTrigger | IntervalTrigger, start_ms: int, end_ms: int) -> list[int]:
    ticks = []
    tick = trigger.next_after(start_ms)
    while tick <= end_ms:
        ticks.append(tick)
        tick = trigger.next_after(tick)
    return ticks


def test_interval_ticks_are_multiples_of_the_interval_since_the_epoch() -> None:
    trigger = IntervalTrigger(30_000)
    assert trigger.next_after(at("2026-01-01T00:00:10")) == at("2026-01-01T00:00:30")
    assert trigger.next_after(at("2026-01-01T00:00:30")) == at("2026-01-01T00:01:00")
    assert trigger.latest_at_or_before(at("2026-01-01T00:00:59")) == at("2026-01-01T00:00:30")
    assert trigger.count_between(at("2026-01-01T00:00:00"), at("2026-01-01T01:00:00"), 10) == 120
    assert trigger.describe() == "every 30s"
    assert IntervalTrigger(3_600_000).describe() == "every 1h"


def test_cron_with_a_leading_seconds_field() -> None:
    trigger = CronTrigger(CronExpression("*/20 * * * * *"), UTC)
    ticks = ticks_between(trigger, at("2026-05-01T12:00:05"), at("2026-05-01T12:01:00"))
    assert [local(t, UTC) for t in ticks] == [
        "2026-05-01T12:00:20+00:00",
        "2026-05-01T12:00:40+00:00",
        "2026-05-01T12:01:00+00:00",
    ]
    # Five fields: minutes first, matched at second 0.
    five = CronTrigger(CronExpression("15 * * * *"), UTC)
    assert five.next_after(at("2026-05-01T12:15:00.001")) == at("2026-05-01T13:15:00")
    assert five.latest_at_or_before(at("2026-05-01T12:15:00")) == at("2026-05-01T12:15:00")


@pytest.mark.parametrize(
    ("alias", "expected"),
    [
        ("@hourly", "2026-05-01T13:00:00+02:00"),
        ("@daily", "2026-05-02T00:00:00+02:00"),
        ("@midnight", "2026-05-02T00:00:00+02:00"),
        ("@weekly", "2026-05-03T00:00:00+02:00"),  # Sunday
        ("@monthly", "2026-06-01T00:00:00+02:00"),
        ("@yearly", "2027-01-01T00:00:00+01:00"),
        ("@ANNUALLY", "2027-01-01T00:00:00+01:00"),
    ],
)
def test_aliases_in_a_time_zone(alias: str, expected: str) -> None:
    trigger = CronTrigger(CronExpression(alias), BERLIN)
    assert local(trigger.next_after(at("2026-05-01T12:30:00", BERLIN))) == expected


@pytest.mark.parametrize(
    "text", ["61 * * * *", "* * * *", "0 0 * * * * 2026", "@reboot", "", "0 0 30 2 *", "H * * * *", "* * * * * 99"]
)
def test_invalid_expressions_are_refused(text: str) -> None:
    with pytest.raises(InvalidCron):
        CronExpression(text)


def test_spring_forward_a_skipped_wall_time_runs_once_when_the_clocks_jump() -> None:
    # 2026-03-29 in Berlin: 02:00 CET becomes 03:00 CEST; 02:xx does not exist.
    daily = CronTrigger(CronExpression("30 2 * * *"), BERLIN)
    ticks = ticks_between(daily, at("2026-03-27T12:00:00", BERLIN), at("2026-03-31T12:00:00", BERLIN))
    assert [local(t) for t in ticks] == [
        "2026-03-28T02:30:00+01:00",
        "2026-03-29T03:00:00+02:00",  # the first valid instant after 02:30
        "2026-03-30T02:30:00+02:00",
        "2026-03-31T02:30:00+02:00",
    ]
    # Several matches inside the skipped hour collapse into that one instant.
    quarterly = CronTrigger(CronExpression("*/15 * * * *"), BERLIN)
    ticks = ticks_between(quarterly, at("2026-03-29T01:30:00", BERLIN), at("2026-03-29T03:30:00", BERLIN))
    assert [local(t) for t in ticks] == [
        "2026-03-29T01:45:00+01:00",
        "2026-03-29T03:00:00+02:00",
        "2026-03-29T03:15:00+02:00",
        "2026-03-29T03:30:00+02:00",
    ]
    assert local(quarterly.latest_at_or_before(at("2026-03-29T03:10:00", BERLIN))) == "2026-03-29T03:00:00+02:00"


def test_fall_back_a_repeated_wall_time_runs_once_at_its_first_occurrence() -> None:
    # 2026-10-25 in Berlin: 03:00 CEST becomes 02:00 CET; 02:xx happens twice.
    daily = CronTrigger(CronExpression("30 2 * * *"), BERLIN)
    ticks = ticks_between(daily, at("2026-10-24T12:00:00", BERLIN), at("2026-10-26T12:00:00", BERLIN))
    assert [local(t) for t in ticks] == ["2026-10-25T02:30:00+02:00", "2026-10-26T02:30:00+01:00"]
    quarterly = CronTrigger(CronExpression("*/30 * * * *"), BERLIN)
    ticks = ticks_between(quarterly, at("2026-10-25T01:45:00", BERLIN), at("2026-10-25T03:45:00", BERLIN))
    assert [local(t) for t in ticks] == [
        "2026-10-25T02:00:00+02:00",
        "2026-10-25T02:30:00+02:00",
        "2026-10-25T03:00:00+01:00",  # the repeated hour (02:00-03:00 CET) brings no tick
        "2026-10-25T03:30:00+01:00",
    ]
    # Asked from inside the repeated hour (02:10 CET), the trigger still agrees with itself.
    second_pass = at("2026-10-25T01:10:00")
    assert local(quarterly.latest_at_or_before(second_pass)) == "2026-10-25T02:30:00+02:00"
    assert local(quarterly.next_after(second_pass)) == "2026-10-25T03:00:00+01:00"


def test_cron_with_seconds_across_both_transitions() -> None:
    trigger = CronTrigger(CronExpression("*/20 59 1,2 * * *"), BERLIN)
    spring = ticks_between(trigger, at("2026-03-29T01:59:30", BERLIN), at("2026-03-29T03:30:00", BERLIN))
    assert [local(t) for t in spring] == ["2026-03-29T01:59:40+01:00", "2026-03-29T03:00:00+02:00"]
    autumn = ticks_between(trigger, at("2026-10-25T01:59:30", BERLIN), at("2026-10-25T03:30:00", BERLIN))
    assert [local(t) for t in autumn] == [
        "2026-10-25T01:59:40+02:00",
        "2026-10-25T02:59:00+02:00",
        "2026-10-25T02:59:20+02:00",
        "2026-10-25T02:59:40+02:00",
    ]


def test_missed_policies() -> None:
    trigger = IntervalTrigger(1000)
    now = 100_500
    # Ticks 95..100 s are due after 94 s; 100 s is on time (0.5 s late), the rest missed.
    latest = plan_ticks(trigger, "latest", 94_000, now)
    assert latest.send == (99_000, 100_000)
    assert latest.skipped == 4
    assert latest.newest == 100_000
    everything = plan_ticks(trigger, "all", 94_000, now)
    assert everything.send == (95_000, 96_000, 97_000, 98_000, 99_000, 100_000)
    assert everything.skipped == 0
    nothing = plan_ticks(trigger, "none", 94_000, now)
    assert nothing.send == (100_000,)
    assert nothing.skipped == 5
    assert plan_ticks(trigger, "latest", 100_000, now).newest is None


def test_missed_all_is_capped_and_counts_what_it_drops() -> None:
    trigger = IntervalTrigger(1000)
    plan = plan_ticks(trigger, "all", 0, 1_000_000_200)  # a clock jump of eleven days
    assert len(plan.send) == MAX_CATCH_UP + 1  # the most recent missed ones, plus the on-time tick
    assert plan.send[-1] == 1_000_000_000
    assert plan.send == tuple(sorted(plan.send))
    assert plan.skipped == 1_000_000 - len(plan.send)
