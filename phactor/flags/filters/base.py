"""The compiled property filter protocol, the operator names, and what a filter may read.

A filter is compiled once per definitions poll; ``match(props, ctx)`` returns True, False or an
``_Undecided``. ``MatchContext`` is the part of one evaluation a filter may use (implemented by
``phactor.flags.conditions._Context``): cohort and dependency filters reach the snapshot and the
dependency evaluation through it, which keeps the filters below the code that evaluates flags.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from phactor.flags.results import _MISSING_CONTEXT, _Malformed, _Undecided

_MISSING: Any = object()

_EQUALITY = ("exact", "is_not", "is_set", "is_not_set")
_TEXT = (
    "icontains",
    "not_icontains",
    "starts_with",
    "not_starts_with",
    "ends_with",
    "not_ends_with",
)
_REGEX = ("regex", "not_regex")
_NUMERIC = ("gt", "gte", "lt", "lte")
_DATES = ("is_date_before", "is_date_after")
_SEMVER = (
    "semver_eq",
    "semver_neq",
    "semver_gt",
    "semver_gte",
    "semver_lt",
    "semver_lte",
    "semver_tilde",
    "semver_caret",
    "semver_wildcard",
)
_KNOWN_OPERATORS = frozenset(_EQUALITY + _TEXT + _REGEX + _NUMERIC + _DATES + _SEMVER)


class Snapshot(Protocol):
    """What a filter reads of the definitions snapshot (``phactor.flags.definitions``)."""

    @property
    def flags_by_key(self) -> Mapping[str, Any]: ...

    @property
    def _cohort_groups(self) -> Mapping[Any, Any]: ...


class MatchContext(Protocol):
    """What a filter may use of the evaluation it runs in (``phactor.flags.conditions``)."""

    cache: dict[Any, Any]
    cohorts: dict[tuple[str, int], Any]
    depth: int

    @property
    def defs(self) -> Snapshot: ...

    def evaluate_dependency(self, flag: Any, props: Mapping[str, Any]) -> _Undecided | None: ...


class _Filter:
    """A compiled property filter; ``match`` returns True, False or an ``_Undecided``."""

    __slots__ = ("bad_value", "key", "missing", "problem")

    def __init__(self, key: Any, problem: _Undecided | None = None) -> None:
        self.key = key
        self.problem = problem
        # An unusable filter outranks missing context, so it replaces it.
        self.missing = problem or _Undecided(f"missing_property:{key}", _MISSING_CONTEXT)
        self.bad_value = problem or _Undecided(f"invalid_property_value:{key}", _MISSING_CONTEXT)

    def match(self, props: Mapping[str, Any], ctx: MatchContext) -> Any:
        raise NotImplementedError


class _UnknownOperator(_Filter):
    __slots__ = ()

    def match(self, props: Mapping[str, Any], ctx: MatchContext) -> Any:
        return self.problem


class _CrashFilter(_Filter):
    __slots__ = ()

    def match(self, props: Mapping[str, Any], ctx: MatchContext) -> Any:
        raise _Malformed("malformed property filter")
