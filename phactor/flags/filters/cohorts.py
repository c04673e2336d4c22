"""Cohort membership and flag dependency filters (``type: cohort`` and ``type: flag``).

Both reach outside the properties they are given: a cohort filter matches the cohort's property
group from the snapshot, a dependency filter evaluates the flags of its chain. They do it through
the ``MatchContext`` they are handed, never by importing the evaluation code.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from phactor.flags.filters.base import _MISSING, MatchContext, _Filter
from phactor.flags.results import _UNRESOLVED_DEPENDENCY, _UNSUPPORTED, _Malformed, _Undecided

_COHORT_OPERATORS = ("exact", "in", "not_in")


class _Cohort(_Filter):
    __slots__ = ("cohort_id", "operator")

    def __init__(self, prop: Mapping[str, Any]) -> None:
        self.cohort_id = str(prop.get("value"))
        self.operator = prop.get("operator") or "exact"
        super().__init__(prop.get("key"))

    def match(self, props: Mapping[str, Any], ctx: MatchContext) -> Any:
        group = ctx.defs._cohort_groups.get(self.cohort_id)
        if group is None:
            # Not in the definitions: a static cohort, only the server knows its members.
            return _Undecided(f"static_cohort:{self.cohort_id}", _UNSUPPORTED, server=True)
        if self.operator not in _COHORT_OPERATORS:
            return _Undecided(f"unsupported_cohort_operator:{self.operator}", _UNSUPPORTED)
        # Each cohort is decided once per flag evaluation: a graph that reaches one cohort by
        # many paths (A -> B twice -> C twice ...) would otherwise cost 2**depth.
        memo = ctx.cohorts
        memo_key = (self.cohort_id, id(props))
        result = memo.get(memo_key, _MISSING)
        if result is _IN_PROGRESS:
            raise _Malformed("cohorts refer to each other in a cycle")
        if result is _MISSING:
            ctx.depth += 1
            if ctx.depth > 64:
                raise _Malformed("cohorts nest too deeply")
            memo[memo_key] = _IN_PROGRESS
            try:
                result = group.match(props, ctx)
            except BaseException:
                del memo[memo_key]
                raise
            finally:
                ctx.depth -= 1
            memo[memo_key] = result
        if result is True or result is False:
            return result is not (self.operator == "not_in")
        return result


_IN_PROGRESS: Any = object()  # a cohort being decided: meeting it again is a cycle


class _Dependency(_Filter):
    __slots__ = ("chain", "expected", "shape_ok")

    def __init__(self, prop: Mapping[str, Any]) -> None:
        super().__init__(prop.get("key"))
        self.expected = prop.get("value")
        # A malformed dependency is a definite no-match, as on the server.
        self.shape_ok = (
            prop.get("operator", "exact") == "flag_evaluates_to"
            and bool(self.key)
            and self.expected is not None
        )
        self.chain = prop.get("dependency_chain", _MISSING)

    def match(self, props: Mapping[str, Any], ctx: MatchContext) -> Any:
        if not self.shape_ok:
            return False
        chain = self.chain
        key = self.key
        if chain is _MISSING or not isinstance(chain, list):
            return _Undecided(f"malformed_dependency:{key}", _UNSUPPORTED)
        if not chain:
            return _Undecided(f"circular_dependency:{key}", _UNSUPPORTED)
        cache = ctx.cache
        by_key = ctx.defs.flags_by_key
        for dep in chain:
            if dep not in cache and dep not in by_key:
                cache[dep] = None
                return _Undecided(f"missing_dependency:{dep}", _UNSUPPORTED)
        for dep in chain:
            if dep not in cache:
                outcome = ctx.evaluate_dependency(by_key[dep], props)
                if outcome is not None:
                    return outcome
        actual = cache.get(key)
        if actual is None:
            if key in by_key and key in cache:
                return _Undecided(f"unresolved_dependency:{key}", _UNRESOLVED_DEPENDENCY)
            return _Undecided(f"missing_dependency:{key}", _UNSUPPORTED)
        expected = self.expected
        if isinstance(actual, str) and actual:
            if isinstance(expected, bool):
                return expected
            return isinstance(expected, str) and actual == expected
        return isinstance(actual, bool) and isinstance(expected, bool) and actual == expected
