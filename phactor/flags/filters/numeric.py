"""Numeric (``gt``, ``gte``, ``lt``, ``lte``) and semver (``semver_*``) property filters."""

from __future__ import annotations

import operator as _op
from collections.abc import Mapping
from typing import Any

from phactor.flags.filters.base import _MISSING, MatchContext, _Filter
from phactor.flags.filters.values import _to_number
from phactor.flags.results import _UNSUPPORTED, _Undecided

# --- semver --------------------------------------------------------------------------------------


def _semver_part(part: str) -> int | None:
    if not part or not part.isdecimal() or (len(part) > 1 and part[0] == "0"):
        return None
    try:
        return int(part)
    except ValueError:  # more digits than sys.get_int_max_str_digits() allows
        return None


def _parse_semver(value: Any) -> tuple[int, int, int] | None:
    text = str(value).strip().lstrip("vV").split("-")[0].split("+")[0]
    parts = text.split(".")
    if not parts[0]:
        return None
    major = _semver_part(parts[0])
    minor = _semver_part(parts[1]) if len(parts) > 1 and parts[1] else 0
    patch = _semver_part(parts[2]) if len(parts) > 2 and parts[2] else 0
    if major is None or minor is None or patch is None:
        return None
    return (major, minor, patch)


def _semver_bounds(operator: str, value: Any) -> Any:
    """The parsed filter: a version, or (lower, upper) for range operators; None if invalid."""
    if operator == "semver_wildcard":
        cleaned = str(value).strip().lstrip("vV").replace("*", "").rstrip(".")
        parts = [p for p in cleaned.split(".") if p]
        if not parts:
            return None
        maybe = [_semver_part(p) for p in parts[:3]]
        nums = [x for x in maybe if x is not None]
        if len(nums) != len(maybe):
            return None
        if len(nums) == 1:
            return (nums[0], 0, 0), (nums[0] + 1, 0, 0)
        if len(nums) == 2:
            return (nums[0], nums[1], 0), (nums[0], nums[1] + 1, 0)
        return (nums[0], nums[1], nums[2]), (nums[0], nums[1], nums[2] + 1)
    version = _parse_semver(value)
    if version is None or operator not in ("semver_tilde", "semver_caret"):
        return version
    major, minor, patch = version
    if operator == "semver_tilde":
        return version, (major, minor + 1, 0)
    if major > 0:
        return version, (major + 1, 0, 0)
    if minor > 0:
        return version, (0, minor + 1, 0)
    return version, (0, 0, patch + 1)


# Comparison operators by name, chosen once when a filter is compiled (numeric and semver
# filters share them; anything unlisted falls back to `<=`, as the last branch always did).
_ORDERINGS = {
    "gt": _op.gt,
    "gte": _op.ge,
    "lt": _op.lt,
    "lte": _op.le,
    "eq": _op.eq,
    "neq": _op.ne,
}


class _Numeric(_Filter):
    __slots__ = ("compare", "threshold")

    def __init__(self, key: Any, operator: str, value: Any) -> None:
        threshold = _to_number(value)
        super().__init__(
            key,
            None
            if threshold is not None
            else _Undecided(f"invalid_filter_value:{key}", _UNSUPPORTED),
        )
        self.threshold = threshold
        self.compare = _ORDERINGS.get(operator, _op.le)

    def match(self, props: Mapping[str, Any], ctx: MatchContext) -> Any:
        value = props.get(self.key, _MISSING)
        if value is _MISSING:
            return self.missing
        threshold = self.threshold
        if threshold is None:
            return self.problem
        number = _to_number(value)
        if number is None:
            return False
        return self.compare(number, threshold)


class _Semver(_Filter):
    __slots__ = ("bounds", "compare")

    def __init__(self, key: Any, operator: str, value: Any) -> None:
        bounds = _semver_bounds(operator, value)
        super().__init__(
            key,
            None if bounds is not None else _Undecided(f"invalid_filter_value:{key}", _UNSUPPORTED),
        )
        self.bounds = bounds
        # None: a range operator (tilde/caret/wildcard), matched as lower <= version < upper.
        self.compare = (
            None
            if operator in ("semver_tilde", "semver_caret", "semver_wildcard")
            else _ORDERINGS.get(operator.removeprefix("semver_"), _op.le)
        )

    def match(self, props: Mapping[str, Any], ctx: MatchContext) -> Any:
        value = props.get(self.key, _MISSING)
        if value is _MISSING:
            return self.missing
        if value is None:
            return False
        bounds = self.bounds
        if bounds is None:
            return self.problem
        version = _parse_semver(value)
        if version is None:
            return self.bad_value
        compare = self.compare
        if compare is None:
            return bounds[0] <= version < bounds[1]
        return compare(version, bounds)
