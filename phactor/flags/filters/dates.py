"""Date property filters (``is_date_before``, ``is_date_after``): absolute and relative dates."""

from __future__ import annotations

import calendar
import datetime as _dt
import re
from collections.abc import Mapping
from typing import Any

from phactor.flags.filters.base import _MISSING, MatchContext, _Filter
from phactor.flags.results import _UNSUPPORTED, _Undecided

_UTC = _dt.UTC

_RELATIVE_DATE = re.compile(r"^-?(?P<n>[0-9]+)(?P<u>[a-z])$")
_YEAR_ONLY = re.compile(r"\d{4}")
_SPACED_OFFSET = re.compile(r" ([+-]\d{2}:\d{2})$")


def _parse_datetime(value: str) -> _dt.datetime | None:
    text = value.strip()
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    elif text.upper().endswith(" UTC"):
        text = text[:-4] + "+00:00"
    elif _YEAR_ONLY.fullmatch(text):
        now = _dt.datetime.now()
        try:
            return _dt.datetime(int(text), now.month, now.day, tzinfo=_UTC)
        except ValueError:
            return None
    text = _SPACED_OFFSET.sub(r"\1", text)
    try:
        parsed = _dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=_UTC)


def _months_ago(now: _dt.datetime, months: int) -> _dt.datetime | None:
    index = now.year * 12 + now.month - 1
    target = index - months
    year, month = divmod(target, 12)
    if not 1 <= year <= 9999:
        return None
    day = now.day
    # Clamp through every month passed on the way (Mar 31 - 2 months = Jan 28, via Feb 28).
    for step in range(index - 1, target - 1, -1):
        if day <= 28:
            break
        day = min(day, calendar.monthrange(step // 12, step % 12 + 1)[1])
    return now.replace(year=year, month=month + 1, day=day)


def _years_ago(now: _dt.datetime, years: int) -> _dt.datetime | None:
    year = now.year - years
    if not 1 <= year <= 9999:
        return None
    day = 28 if years > 0 and (now.month, now.day) == (2, 29) else now.day
    return now.replace(year=year, day=day)


def _relative_date(number: int, unit: str) -> _dt.datetime | None:
    now = _dt.datetime.now(_UTC)
    if unit == "h":
        return now - _dt.timedelta(hours=number)
    if unit == "d":
        return now - _dt.timedelta(days=number)
    if unit == "w":
        return now - _dt.timedelta(weeks=number)
    if unit == "m":
        return _months_ago(now, number)
    return _years_ago(now, number)


class _Date(_Filter):
    __slots__ = ("before", "fixed", "relative")

    def __init__(self, key: Any, operator: str, value: Any) -> None:
        text = str(value)
        relative = None
        m = _RELATIVE_DATE.search(text)
        # Over 10,000 units is never relative (as in posthog); reading the digits' length first
        # keeps int() away from values past sys.get_int_max_str_digits().
        if m is not None and len(m.group("n").lstrip("0")) <= 4:
            number, unit = int(m.group("n")), m.group("u")
            if unit in "hdwmy":
                relative = (number, unit)
        self.relative = relative
        self.fixed = _parse_datetime(text)
        self.before = operator == "is_date_before"
        usable = self.fixed is not None or (
            relative is not None and _relative_date(*relative) is not None
        )
        super().__init__(
            key, None if usable else _Undecided(f"invalid_filter_value:{key}", _UNSUPPORTED)
        )

    def match(self, props: Mapping[str, Any], ctx: MatchContext) -> Any:
        value = props.get(self.key, _MISSING)
        if value is _MISSING:
            return self.missing
        if value is None:
            return False
        boundary: Any = _relative_date(*self.relative) if self.relative is not None else None
        if boundary is None:
            boundary = self.fixed
        if boundary is None:
            return self.problem or _Undecided(f"invalid_filter_value:{self.key}", _UNSUPPORTED)
        if isinstance(value, _dt.datetime):
            moment: Any = value if value.tzinfo is not None else value.replace(tzinfo=_UTC)
        elif isinstance(value, _dt.date):
            moment, boundary = value, boundary.date()
        elif isinstance(value, str):
            moment = _parse_datetime(value)
            if moment is None:
                return self.bad_value
        else:
            return self.bad_value
        return moment < boundary if self.before else moment > boundary
