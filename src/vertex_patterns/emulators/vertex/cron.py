"""Cron expressions as Vertex AI schedules take them: five fields, an optional ``TZ=`` or
``CRON_TZ=`` time zone prefix, and the next run time after a given moment.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
_DAYS = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")
# (name, low, high, names mapped to low + index)
_FIELDS = (("minute", 0, 59, ()), ("hour", 0, 23, ()), ("day of month", 1, 31, ()),
           ("month", 1, 12, _MONTHS), ("day of week", 0, 7, _DAYS))
_PREFIX = re.compile(r"^(?:CRON_TZ|TZ)=(\S+)\s+(.*)$")
_SEARCH_YEARS = 5


@dataclass(frozen=True)
class Cron:
    """A parsed cron expression."""

    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]
    """0 = Sunday (7 is folded into 0)."""
    days_restricted: bool
    weekdays_restricted: bool
    zone: dt.tzinfo

    def _day_matches(self, day: dt.datetime) -> bool:
        in_days = day.day in self.days
        in_weekdays = (day.isoweekday() % 7) in self.weekdays
        if self.days_restricted and self.weekdays_restricted:
            return in_days or in_weekdays  # classic cron: either restriction matches
        return in_days and in_weekdays

    def next_after(self, moment: dt.datetime) -> dt.datetime | None:
        """The first matching minute strictly after `moment` (UTC), None within 5 years."""
        local = moment.astimezone(self.zone).replace(second=0, microsecond=0, tzinfo=None)
        t = local + dt.timedelta(minutes=1)
        limit = local.replace(year=local.year + _SEARCH_YEARS)
        while t < limit:
            if t.month not in self.months:
                t = (t.replace(day=1, hour=0, minute=0) + dt.timedelta(days=32)).replace(day=1)
            elif not self._day_matches(t):
                t = t.replace(hour=0, minute=0) + dt.timedelta(days=1)
            elif t.hour not in self.hours:
                t = t.replace(minute=0) + dt.timedelta(hours=1)
            elif t.minute not in self.minutes:
                t += dt.timedelta(minutes=1)
            else:
                return t.replace(tzinfo=self.zone).astimezone(dt.timezone.utc)
        return None


def _value(token: str, low: int, names: tuple[str, ...], what: str) -> int:
    if token.upper() in names:
        return low + names.index(token.upper())
    if not token.isdigit():
        raise ValueError(f"{what}: {token!r} is not a number")
    return int(token)


def _field(text: str, what: str, low: int, high: int, names: tuple[str, ...]) -> set[int]:
    values: set[int] = set()
    for part in text.split(","):
        body, _, step_text = part.partition("/")
        step = 1
        if step_text:
            if not step_text.isdigit() or int(step_text) == 0:
                raise ValueError(f"{what}: bad step {step_text!r}")
            step = int(step_text)
        if body == "*":
            start, end = low, high
        elif "-" in body:
            a, _, b = body.partition("-")
            start, end = _value(a, low, names, what), _value(b, low, names, what)
        else:
            start = _value(body, low, names, what)
            end = high if step_text else start
        if not (low <= start <= high and low <= end <= high) or start > end:
            raise ValueError(f"{what}: {part!r} is outside {low}-{high}")
        values.update(range(start, end + 1, step))
    return values


def parse_cron(expression: str) -> Cron:
    """Parses ``[TZ=Zone ]m h dom mon dow``.

    Raises:
        ValueError: The expression is malformed; the message says which field.
    """
    text = expression.strip()
    zone: dt.tzinfo = dt.timezone.utc
    prefixed = _PREFIX.match(text)
    if prefixed:
        name, text = prefixed.groups()
        try:
            zone = ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {name!r}") from None
    parts = text.split()
    if len(parts) != 5:
        raise ValueError(f"expected 5 fields (minute hour day-of-month month day-of-week), "
                         f"got {len(parts)}")
    sets = [_field(p, what, low, high, names)
            for p, (what, low, high, names) in zip(parts, _FIELDS, strict=True)]
    weekdays = {d % 7 for d in sets[4]}
    return Cron(minutes=frozenset(sets[0]), hours=frozenset(sets[1]), days=frozenset(sets[2]),
                months=frozenset(sets[3]), weekdays=frozenset(weekdays),
                days_restricted=parts[2] != "*", weekdays_restricted=parts[4] != "*",
                zone=zone)
