"""Declaring schedules: each kind of bad input fails at once, with one error naming the schedule."""

from __future__ import annotations

import datetime
import re
from typing import Any

import pytest

import greenroom
from greenroom.brokers.stub import StubBroker
from greenroom.scheduling import ScheduleError, schedules_of


@pytest.fixture
def broker() -> StubBroker:
    broker = StubBroker()
    greenroom.set_broker(broker)
    return broker


def make_actor(broker: StubBroker, name: str = "report") -> greenroom.Actor[Any, Any]:
    def report(day: str = "") -> None:
        pass

    return greenroom.actor(report, actor_name=name, broker=broker)


def test_a_schedule_is_kept_by_its_broker(broker: StubBroker) -> None:
    report = make_actor(broker)
    nightly = greenroom.schedule(report, cron="0 3 * * *", tz="Europe/Berlin", name="nightly", kwargs={"day": "x"})
    hourly = greenroom.schedule(report, every=datetime.timedelta(hours=1))
    assert [s.name for s in schedules_of(broker)] == ["nightly", "report"]
    assert nightly.expression == "0 3 * * *"
    assert nightly.tz_name == "Europe/Berlin"
    assert hourly.expression == "every 1h"
    assert hourly.missed == "latest"
    assert schedules_of(StubBroker()) == []


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ({"cron": "61 * * * *"}, "invalid cron expression '61 * * * *'"),
        ({"cron": "* * *"}, "invalid cron expression '* * *': expected 5 fields, or 6 with a leading seconds field"),
        ({"cron": "@reboot"}, "invalid cron expression '@reboot'"),
        ({"every": 5, "tz": "Europe/Atlantis"}, "unknown time zone 'Europe/Atlantis'"),
        ({"cron": "* * * * *", "tz": "../etc/passwd"}, "unknown time zone '../etc/passwd'"),
        ({"cron": "* * * * *", "every": 5}, "give exactly one of cron= and every= (got both)"),
        ({}, "give exactly one of cron= and every= (got neither)"),
        ({"every": 0.5}, "every must be at least 1 second"),
        ({"every": "5"}, "every must be a number of seconds or a timedelta"),
        ({"every": 5, "missed": "some"}, "missed must be one of 'latest', 'all', 'none'"),
        ({"every": 5, "args": (object(),)}, "its arguments cannot be encoded"),
    ],
)
def test_bad_input_fails_at_declaration_naming_the_schedule(
    broker: StubBroker, options: dict[str, Any], problem: str
) -> None:
    report = make_actor(broker)
    with pytest.raises(ScheduleError, match=re.escape(f"schedule 'nightly': {problem}")) as caught:
        greenroom.schedule(report, name="nightly", **options)
    assert caught.value.schedule_name == "nightly"
    assert isinstance(caught.value, ValueError)
    assert schedules_of(broker) == []


def test_a_duplicate_name_fails_and_keeps_the_first(broker: StubBroker) -> None:
    report = make_actor(broker)
    greenroom.schedule(report, every=60)
    with pytest.raises(ScheduleError, match=r"^schedule 'report': declared twice on the same broker"):
        greenroom.schedule(report, cron="* * * * *")
    greenroom.schedule(report, cron="* * * * *", name="report-by-cron")
    assert [s.expression for s in schedules_of(broker)] == ["every 1m", "* * * * *"]


def test_the_default_name_is_the_actor_name_and_names_are_checked(broker: StubBroker) -> None:
    with pytest.raises(ScheduleError, match="is not an actor"):
        greenroom.schedule(print, every=5)  # type: ignore[arg-type]
    report = make_actor(broker)
    with pytest.raises(ScheduleError, match="a name must be at most 200 bytes long"):
        greenroom.schedule(report, every=5, name="x" * 201)
    with pytest.raises(ScheduleError, match="non-empty printable string"):
        greenroom.schedule(report, every=5, name=" padded ")
