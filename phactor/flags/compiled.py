"""One flag definition compiled for evaluation: filters, cohort groups, conditions, variants.

``compile_filter`` picks the filter class of a property filter definition, ``PropertyGroup`` is a
compiled cohort group, ``CompiledFlag`` one flag with its conditions, holdout, variant table and
payloads. Compiling never raises for a malformed part: it becomes ``_CRASH`` or a crash filter,
which make that flag unresolved only when evaluation reaches them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from phactor.flags.filters.base import (
    _DATES,
    _KNOWN_OPERATORS,
    _NUMERIC,
    _REGEX,
    _TEXT,
    MatchContext,
    _CrashFilter,
    _Filter,
    _UnknownOperator,
)
from phactor.flags.filters.cohorts import _Cohort, _Dependency
from phactor.flags.filters.dates import _Date
from phactor.flags.filters.numeric import _Numeric, _Semver
from phactor.flags.filters.text import _Exact, _IsSet, _Regex, _Text
from phactor.flags.results import _CRASH, _UNSUPPORTED, _Malformed, _pick, _Undecided

__all__ = ["CompiledFlag", "PropertyGroup", "compile_filter"]


def compile_filter(prop: Any, matching_version: Any = 1) -> _Filter:
    """Compile one filter of a condition or cohort group (internal to phactor.flags)."""
    if not isinstance(prop, dict):
        return _CrashFilter(None)
    kind = prop.get("type")
    if kind == "cohort":
        return _Cohort(prop)
    if kind == "flag":
        return _Dependency(prop)
    operator = prop.get("operator") or "exact"
    key = prop.get("key")
    value = prop.get("value")
    if not isinstance(operator, str) or operator not in _KNOWN_OPERATORS:
        return _UnknownOperator(key, _Undecided(f"unknown_operator:{operator}", _UNSUPPORTED))
    try:
        hash(key)
    except TypeError:
        return _CrashFilter(None)
    if operator in ("is_set", "is_not_set"):
        return _IsSet(key, operator == "is_set")
    if operator in ("exact", "is_not"):
        return _Exact(key, value, operator == "is_not", matching_version)
    if operator in _TEXT:
        return _Text(key, operator, value)
    if operator in _REGEX:
        return _Regex(key, operator, value)
    if operator in _NUMERIC:
        return _Numeric(key, operator, value)
    if operator in _DATES:
        return _Date(key, operator, value)
    return _Semver(key, operator, value)


# --- cohort property groups ----------------------------------------------------------------------


class PropertyGroup:
    """A compiled cohort property group (AND/OR of filters and nested groups)."""

    __slots__ = ("entries", "is_and", "malformed")

    def __init__(self, group: Any, matching_version: Any = 1) -> None:
        self.malformed = False
        self.is_and = True
        self.entries: tuple[Any, ...] = ()
        if group == {}:
            return
        if (
            not isinstance(group, dict)
            or group.get("type") not in ("AND", "OR")
            or not isinstance(group.get("values"), list)
        ):
            self.malformed = True
            return
        self.is_and = group["type"] == "AND"
        entries: list[Any] = []
        for entry in group["values"]:
            if not isinstance(entry, dict):
                entries.append(None)
            elif entry == {} or "values" in entry or entry.get("type") in ("AND", "OR"):
                entries.append((PropertyGroup(entry, matching_version), False))
            else:
                entries.append(
                    (compile_filter(entry, matching_version), bool(entry.get("negation", False)))
                )
        self.entries = tuple(entries)

    def match(self, props: Mapping[str, Any], ctx: MatchContext) -> Any:
        """True, False or an ``_Undecided`` for these properties."""
        if self.malformed:
            return _Undecided("malformed_cohort", _UNSUPPORTED, server=True)
        if not self.entries:
            return True
        is_and = self.is_and
        decisive = None
        undecided = None
        # No short-circuit: a later entry that needs the server must still be seen.
        for entry in self.entries:
            if entry is None:
                return _Undecided("malformed_cohort", _UNSUPPORTED, server=True)
            item, negation = entry
            result = item.match(props, ctx)
            if result is True or result is False:
                effective = result is not negation
                if effective is not is_and:
                    decisive = effective
            elif result.server:
                return result
            else:
                undecided = _pick(undecided, result)
        if decisive is not None:
            return decisive
        if undecided is not None:
            return undecided
        return is_and


# --- compiled flags ------------------------------------------------------------------------------

_INHERIT: Any = object()


class _Condition:
    __slots__ = ("aggregation", "filters", "index", "rollout", "variant")

    def __init__(self, condition: Any, index: int, matching_version: Any) -> None:
        self.index = index
        if not isinstance(condition, dict):
            raise _Malformed("condition is not an object")
        self.aggregation = condition.get("aggregation_group_type_index", _INHERIT)
        props = condition.get("properties") or []
        if isinstance(props, list):
            self.filters: Any = tuple(compile_filter(p, matching_version) for p in props)
        else:
            self.filters = _CRASH
        rollout = condition.get("rollout_percentage")
        if rollout is None:
            self.rollout: Any = None
        else:
            try:
                self.rollout = rollout / 100
            except Exception:
                self.rollout = _CRASH
        self.variant = condition.get("variant")


class CompiledFlag:
    """One flag definition, parsed once; evaluation reads only these fields."""

    __slots__ = (
        "active",
        "aggregation",
        "by_device",
        "conditions",
        "continuity",
        "definition_problem",
        "early_exit",
        "enrollment",
        "filters_ok",
        "flag_id",
        "holdout",
        "key",
        "payloads",
        "raw",
        "variant_keys",
        "variant_table",
        "version",
    )

    def __init__(self, raw: dict[str, Any], matching_version: Any = 1) -> None:
        self.raw = raw
        self.key = raw["key"]
        self.flag_id = raw.get("id")
        self.version = raw.get("version")
        self.active = bool(raw.get("active"))
        self.continuity = bool(raw.get("ensure_experience_continuity", False))
        self.definition_problem: _Undecided | None = None
        filters = raw.get("filters") or {}
        self.filters_ok = isinstance(filters, dict)
        if not self.filters_ok:
            filters = {}
        self.aggregation = filters.get("aggregation_group_type_index")
        self.early_exit = bool(filters.get("early_exit"))
        self.enrollment = filters.get("feature_enrollment") is True
        self.by_device = (
            raw.get("bucketing_identifier") or filters.get("bucketing_identifier")
        ) == "device_id"
        payloads = filters.get("payloads") or {}
        self.payloads = payloads if isinstance(payloads, dict) else None
        self.holdout = self._compile_holdout(filters.get("holdout"))
        self.variant_keys, self.variant_table = self._compile_variants(filters.get("multivariate"))
        self.conditions = self._compile_conditions(filters.get("groups"), matching_version)

    @classmethod
    def uncompilable(cls, raw: dict[str, Any]) -> CompiledFlag:
        """A flag whose definition could not be compiled at all: it is always unresolved
        (``"malformed_definition"``), as a dependency too, and never affects other flags."""
        flag = cls.__new__(cls)
        flag.raw = raw
        flag.key = raw["key"]
        flag.flag_id = raw.get("id")
        flag.version = raw.get("version")
        flag.active = True
        flag.continuity = False
        flag.definition_problem = None
        flag.filters_ok = False  # evaluation stops here, as for filters that are not an object
        flag.aggregation = None
        flag.early_exit = flag.enrollment = flag.by_device = False
        flag.payloads = None
        flag.holdout = None
        flag.variant_keys = flag.variant_table = flag.conditions = ()
        return flag

    @staticmethod
    def _compile_holdout(holdout: Any) -> Any:
        if not holdout:
            return None
        if not isinstance(holdout, dict):
            return _CRASH
        percentage, holdout_id = holdout.get("exclusion_percentage"), holdout.get("id")
        if percentage is None or holdout_id is None:
            return None
        try:
            clamped = min(max(float(percentage), 0.0), 100.0)
        except Exception:
            return _CRASH
        return f"holdout-{holdout_id}", clamped

    @staticmethod
    def _compile_variants(multivariate: Any) -> tuple[Any, Any]:
        if not multivariate:
            return (), ()
        if not isinstance(multivariate, dict):
            return _CRASH, _CRASH
        variants = multivariate.get("variants") or []
        try:
            keys = [v["key"] for v in variants]
        except Exception:
            return _CRASH, _CRASH
        table = []
        low: Any = 0
        try:
            for v in variants:
                high = low + v["rollout_percentage"] / 100
                table.append((low, high, v["key"]))
                low = high
        except Exception:
            return keys, _CRASH
        return keys, tuple(table)

    @staticmethod
    def _compile_conditions(groups: Any, matching_version: Any) -> Any:
        if not groups:
            return ()
        if not isinstance(groups, list):
            return _CRASH
        conditions: list[Any] = []
        for index, condition in enumerate(groups):
            try:
                conditions.append(_Condition(condition, index, matching_version))
            except _Malformed:
                # Conditions before it still decide the flag, as in the reference evaluator.
                conditions.append(_CRASH)
                break
        return tuple(conditions)
