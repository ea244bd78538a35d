"""Cron expressions, parsed and matched by croniter; greenroom only walks them in local wall time.

croniter is imported on first use, so declaring ``every=`` schedules (or importing greenroom at
all) never loads it.
"""

from __future__ import annotations

import datetime
from typing import Any, cast

__all__ = ["ALIASES", "CronExpression", "InvalidCron"]

#: The ``@`` shorthands accepted besides five or six fields (``@reboot`` has no meaning here).
ALIASES = frozenset({"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"})


class InvalidCron(ValueError):
    """The text is not a cron expression greenroom accepts; the message says why."""


class CronExpression:
    """A cron expression: five fields, six with a leading seconds field, or an ``@`` alias.

    Matching works on naive datetimes (wall time, no zone): the caller decides what a local time
    means in its time zone. Instances are immutable and may be shared between threads.

    Raises:
      InvalidCron: When the expression does not parse, has another number of fields, or never
        matches any date (``0 0 30 2 *``).
    """

    def __init__(self, text: str) -> None:
        normalized = " ".join(text.split())
        if normalized.startswith("@"):
            if normalized.lower() not in ALIASES:
                raise InvalidCron(f"unknown alias {normalized!r} (use one of {', '.join(sorted(ALIASES))})")
            normalized = normalized.lower()
            fields = 5
        else:
            fields = len(normalized.split(" ")) if normalized else 0
            if fields not in (5, 6):
                raise InvalidCron(f"expected 5 fields, or 6 with a leading seconds field, not {fields}")
        self.text = normalized
        #: Whether the first field is seconds (croniter reads a sixth field as seconds only when told).
        self.with_seconds = fields == 6
        self._check()

    def _iterator(self, start: datetime.datetime) -> Any:
        from croniter import croniter

        return croniter(self.text, start, second_at_beginning=self.with_seconds)

    def _check(self) -> None:
        try:
            self._iterator(datetime.datetime(2000, 1, 1)).get_next(datetime.datetime)
        # croniter's own errors are ValueErrors; some malformed fields surface as lookup errors.
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise InvalidCron(str(exc) or type(exc).__name__) from exc

    def next_after(self, start: datetime.datetime) -> datetime.datetime:
        """The first matching wall time strictly after ``start`` (naive)."""
        return cast(datetime.datetime, self._iterator(start).get_next(datetime.datetime))

    def previous_before(self, start: datetime.datetime) -> datetime.datetime:
        """The last matching wall time strictly before ``start`` (naive)."""
        return cast(datetime.datetime, self._iterator(start).get_prev(datetime.datetime))

    def __repr__(self) -> str:
        return f"CronExpression({self.text!r})"
