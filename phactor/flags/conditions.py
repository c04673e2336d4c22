"""Condition matching and rollout bucketing: the per-flag half of local evaluation.

Walks one compiled flag's feature enrollment, holdout, conditions (filters, then rollout) and
variants for one set of properties, with the rollout hash (``bucket_hash``) that decides who is
in a rollout and which variant they get. ``_Context`` is one evaluation's state; filters see it
through ``filters.base.MatchContext`` and reach back into condition matching only through its
``evaluate_dependency`` method, so the filters never import this module.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from phactor.flags.compiled import _INHERIT, CompiledFlag
from phactor.flags.definitions import Definitions
from phactor.flags.results import (
    _CRASH,
    _MISSING_CONTEXT,
    _UNRESOLVED_DEPENDENCY,
    _UNSUPPORTED,
    _Malformed,
    _pick,
    _Undecided,
)

__all__ = ["bucket_hash"]

_SCALE = float(0xFFFFFFFFFFFFFFF)

_HASH_CACHE: dict[str, float] = {}
_HASH_CACHE_SIZE = 50_000


def bucket_hash(key: Any, bucketing_value: Any, salt: str = "") -> float:
    """Return the deterministic rollout hash of ``key.bucketing_value+salt`` in [0, 1]."""
    text = f"{key}.{bucketing_value}{salt}"
    cached = _HASH_CACHE.get(text)
    if cached is not None:
        return cached
    digest = hashlib.sha1(text.encode()).digest()
    # The first 15 hex digits are the top 60 bits of the first 8 bytes.
    value = (int.from_bytes(digest[:8], "big") >> 4) / _SCALE
    # The same users come back request after request; a bounded memo saves the sha1. Clearing
    # when full keeps it O(1) and is safe under concurrent readers (dict ops are atomic).
    if len(_HASH_CACHE) >= _HASH_CACHE_SIZE:
        _HASH_CACHE.clear()
    _HASH_CACHE[text] = value
    return value


def _holdout_hash(bucketing_value: Any) -> float:
    digest = hashlib.sha1(f"holdout-{bucketing_value}".encode()).digest()
    return (int.from_bytes(digest[:8], "big") >> 4) / _SCALE


class _Context:
    """One evaluation's state: flag values decided so far (``cache``) and cohort outcomes
    (``cohorts``, by (cohort id, id of the properties)); both start empty for each flag."""

    __slots__ = ("cache", "cohorts", "defs", "depth", "device_id", "distinct_id")

    def __init__(self, defs: Definitions, distinct_id: Any, device_id: Any) -> None:
        self.defs = defs
        self.distinct_id = distinct_id
        self.device_id = device_id
        self.cache: dict[Any, Any] = {}
        self.cohorts: dict[tuple[str, int], Any] = {}
        self.depth = 0

    def evaluate_dependency(
        self, flag: CompiledFlag, props: Mapping[str, Any]
    ) -> _Undecided | None:
        """Evaluate and cache one flag of a dependency chain (for ``filters.cohorts``)."""
        return _evaluate_dependency(flag, props, self)


def _match_filters(filters: Any, props: Mapping[str, Any], ctx: _Context) -> Any:
    if filters is _CRASH:
        raise _Malformed("condition properties are not a list")
    undecided = None
    server = None
    for f in filters:
        try:
            result = f.match(props, ctx)
        except Exception:
            # After an inconclusive filter a broken one just ends the condition as inconclusive.
            if undecided is None:
                raise
            break
        if result is True:
            continue
        if result is False:
            return False
        if result.server and undecided is None:
            server = result
        undecided = _pick(undecided, result)
    if server is not None:
        return server
    if undecided is None:
        return True
    # A static cohort after another inconclusive filter no longer stops later conditions.
    return _Undecided(undecided.reason, undecided.rank) if undecided.server else undecided


def _match_conditions(
    flag: CompiledFlag,
    props: Mapping[str, Any],
    bucketing: Any,
    ctx: _Context,
    groups: Mapping[str, Any],
    group_props: Mapping[str, Any],
    mapping: Mapping[str, Any],
) -> Any:
    """Returns (value, condition_index, reason) or an ``_Undecided``."""
    if not flag.filters_ok:
        raise _Malformed("filters is not an object")
    if flag.enrollment:
        if flag.aggregation is not None:
            return _Undecided("group_feature_enrollment", _UNSUPPORTED)
        enrollment_key = f"$feature_enrollment/{flag.key}"
        if enrollment_key not in props:
            return _Undecided(f"missing_property:{enrollment_key}", _MISSING_CONTEXT)
        enrolled = props[enrollment_key]
        return (enrolled is True or enrolled == "true"), None, "feature_enrollment"
    holdout = flag.holdout
    if holdout is not None:
        if holdout is _CRASH:
            raise _Malformed("holdout")
        variant, percentage = holdout
        if percentage == 100.0 or not _holdout_hash(bucketing) > percentage / 100:
            return variant, None, "holdout"
    variant_keys = flag.variant_keys
    conditions = flag.conditions
    if variant_keys is _CRASH or conditions is _CRASH:
        raise _Malformed("variants or conditions")
    flag_aggregation = flag.aggregation
    undecided = None
    for condition in conditions:
        if condition is _CRASH:
            raise _Malformed("condition")
        aggregation = condition.aggregation
        cond_props, cond_bucketing = props, bucketing
        if (
            aggregation is not _INHERIT
            and aggregation != flag_aggregation
            and aggregation is not None
        ):
            # Mixed targeting: this condition reads a group although the flag does not.
            group_name = mapping.get(str(aggregation))
            if not group_name or group_name not in groups:
                continue
            if group_name not in group_props:
                undecided = _pick(
                    undecided,
                    _Undecided(f"missing_group_properties:{group_name}", _MISSING_CONTEXT),
                )
                continue
            cond_props, cond_bucketing = group_props[group_name], groups[group_name]
        filters = condition.filters
        rollout = condition.rollout
        outcome: Any = None
        if filters:
            outcome = _match_filters(filters, cond_props, ctx)
            if outcome is False:
                continue
            if outcome is not True:
                if outcome.server:
                    problem = flag.definition_problem
                    if problem is not None and problem.rank < outcome.rank:
                        return _Undecided(problem.reason, problem.rank, server=True)
                    return outcome
                undecided = _pick(undecided, outcome)
                continue
        if rollout is not None and (not filters or outcome is True):
            if rollout is _CRASH:
                raise _Malformed("rollout_percentage")
            if bucket_hash(flag.key, cond_bucketing) > rollout:
                if flag.early_exit:
                    break
                continue
        override = condition.variant
        if override and override in variant_keys:
            value: Any = override
        else:
            value = _pick_variant(flag, cond_bucketing)
        if not value or not isinstance(value, str):
            value = True
        return value, condition.index, "condition_match"
    if undecided is not None:
        return undecided
    return False, None, "no_condition_match"


def _pick_variant(flag: CompiledFlag, bucketing: Any) -> Any:
    table = flag.variant_table
    if table is _CRASH:
        raise _Malformed("variants")
    if not table:
        return None
    point = bucket_hash(flag.key, bucketing, "variant")
    for low, high, key in table:
        if low <= point < high:
            return key
    return None


def _evaluate_dependency(
    dep: CompiledFlag, props: Mapping[str, Any], ctx: _Context
) -> _Undecided | None:
    """Evaluate and cache one flag of a dependency chain; an ``_Undecided`` if it cannot be."""
    cache = ctx.cache
    key = dep.key
    if not dep.active:
        cache[key] = False
        return None
    unresolved = _Undecided(f"unresolved_dependency:{key}", _UNRESOLVED_DEPENDENCY)
    if dep.continuity:
        cache[key] = None
        return unresolved
    if not dep.filters_ok:
        raise _Malformed("filters is not an object")
    bucketing = ctx.distinct_id
    if dep.aggregation is None and dep.by_device:
        if not ctx.device_id:
            cache[key] = None
            return unresolved
        bucketing = ctx.device_id
    outcome = _match_conditions(dep, props, bucketing, ctx, {}, {}, {})
    if isinstance(outcome, _Undecided):
        if outcome.server:
            return _Undecided(unresolved.reason, unresolved.rank, server=True)
        cache[key] = None
        return unresolved
    cache[key] = outcome[0]
    return None
