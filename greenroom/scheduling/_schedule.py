"""A declared schedule, and the error bad declarations raise."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any
from zoneinfo import ZoneInfo

from ..actor import Actor
from ..errors import GreenroomError
from ._plan import MissedPolicy
from ._triggers import Trigger

__all__ = ["Schedule", "ScheduleError"]


class ScheduleError(GreenroomError, ValueError):
    """A schedule was declared with bad input; the message names the schedule and the problem.

    Raised by :func:`schedule` when the application module is imported, so ``greenroom`` and
    ``greenroomctl`` stop with exit code 2 and this message.
    """

    def __init__(self, name: str, problem: str) -> None:
        super().__init__(f"schedule {name!r}: {problem}")
        self.schedule_name = name
        self.problem = problem

    def __reduce__(self) -> tuple[type[ScheduleError], tuple[str, str]]:
        return type(self), (self.schedule_name, self.problem)


@dataclasses.dataclass(frozen=True)
class Schedule:
    """A declared schedule: which actor gets a message, with which arguments, at which ticks."""

    name: str
    actor: Actor[Any, Any]
    trigger: Trigger
    #: The IANA name of the time zone (``every=`` schedules show their ticks in it).
    tz_name: str
    tz: ZoneInfo
    args: tuple[Any, ...]
    kwargs: Mapping[str, Any]
    missed: MissedPolicy

    @property
    def expression(self) -> str:
        """The cron expression, or ``every <interval>``."""
        return self.trigger.describe()
