"""Pure local evaluation of PostHog feature flags (no threads, no I/O): ``evaluate()``.

The semantics follow the ``posthog`` package's local evaluator, which the differential test
(tests/flags/test_flag_differential.py) checks case by case. Public names (import them from
``phactor.flags``):

- ``evaluate(defs, distinct_id, *, groups=None, person_properties=None, group_properties=None,
  flag_keys=None, device_id=None) -> (results, unresolved)``: ``results`` maps flag key to a
  ``FlagResult``; ``unresolved`` maps flag key to a reason string for flags local evaluation could
  not decide (the caller may ask the server). Keys in ``flag_keys`` that have no definition are
  unresolved with reason ``"unknown_flag"``.
- ``FlagResult`` and ``reason_category`` (``results.py``), ``bucket_hash`` (``conditions.py``).

Reason strings look like ``"missing_property:email"``, ``"unknown_operator:foo"``,
``"ensure_experience_continuity"``, ``"static_cohort:7"``, ``"missing_dependency:beta"``,
``"unresolved_dependency:beta"``, ``"unsupported_regex:name"``, ``"malformed_definition"``.

Inconclusive outcomes are returned as ``_Undecided`` values rather than raised, so a missing
property (common on the request path) costs no exception. Definitions that would make the
reference evaluator crash raise internally and end as ``"malformed_definition"``.

The pure core, bottom up (each module imports only modules listed before it):

- ``results.py``: ``FlagResult``, undecided outcomes and their precedence, ``reason_category``,
  ``FeatureFlagResult`` (what ``get_feature_flag_result`` returns);
- ``filters/``: compiled property filters by family: ``base.py`` (the filter protocol, operator
  names), ``values.py`` (property values as text/number/bool), ``regex_cost.py`` (the regex
  backtracking cost analysis), ``regex.py`` (regex translation, guarded search), ``text.py``
  (equality, text and regex filters), ``numeric.py`` (numeric and semver), ``dates.py``,
  ``cohorts.py`` (cohort membership and flag dependencies);
- ``compiled.py``: one flag's definition compiled (filters, cohort groups, conditions, variants);
- ``definitions.py``: the immutable snapshot of all flags and cohorts (``Definitions``);
- ``conditions.py``: condition matching and rollout bucketing for one flag;
- ``matching.py`` (this module): ``evaluate()`` over a snapshot.

Above it, outside the pure core: ``evaluations.py`` (``FlagEvaluations``, the caller's view of
results), ``remote.py`` (the ``/flags`` request body and answer parsing), ``http.py`` (the flag
HTTP client), ``evaluator.py`` (the ``FlagEvaluator`` actor) and ``methods.py`` (the instance
side).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from phactor.flags.compiled import CompiledFlag
from phactor.flags.conditions import _Context, _match_conditions
from phactor.flags.definitions import Definitions
from phactor.flags.results import (
    _EXPERIENCE_CONTINUITY,
    _MISSING_CONTEXT,
    _UNSUPPORTED,
    FlagResult,
    _Malformed,
    _Undecided,
)

# FlagResult is re-exported for phactor/flags/methods.py, which imports it from here.
__all__ = ["FlagResult", "evaluate"]


def _payload_for(flag: CompiledFlag, value: bool | str) -> Any:
    payloads = flag.payloads
    if not payloads:
        return None
    if value is True:
        return payloads.get("true")
    if value is False:
        return payloads.get("false")
    return payloads.get(value)


def _evaluate_one(
    flag: CompiledFlag,
    ctx: _Context,
    distinct_id: str,
    person: dict[str, Any],
    groups: Mapping[str, Any],
    group_props: Mapping[str, Any],
) -> Any:
    if not flag.active:
        return False, None, "disabled"
    if flag.continuity:
        return _Undecided("ensure_experience_continuity", _EXPERIENCE_CONTINUITY)
    if not flag.filters_ok:
        raise _Malformed("filters is not an object")
    mapping = ctx.defs.group_type_mapping
    aggregation = flag.aggregation
    if aggregation is not None:
        group_name = mapping.get(str(aggregation))
        if not group_name:
            return _Undecided(f"unknown_group_type:{aggregation}", _UNSUPPORTED)
        if group_name not in groups:
            # The server would answer the same, so this is a decided False, not a remote case.
            return False, None, "group_not_passed"
        if group_name not in group_props:
            return _Undecided(f"missing_group_properties:{group_name}", _MISSING_CONTEXT)
        group_key = groups[group_name]
        ctx.distinct_id = group_key
        return _match_conditions(
            flag, group_props[group_name], group_key, ctx, groups, group_props, mapping
        )
    ctx.distinct_id = distinct_id
    bucketing: Any = distinct_id
    if flag.by_device:
        if not ctx.device_id:
            return flag.definition_problem or _Undecided("missing_device_id", _MISSING_CONTEXT)
        bucketing = ctx.device_id
    return _match_conditions(flag, person, bucketing, ctx, groups, group_props, mapping)


def _is_mapping_or_none(value: Any) -> bool:
    return value is None or type(value) is dict or isinstance(value, Mapping)


def evaluate(
    defs: Definitions,
    distinct_id: str,
    *,
    groups: Mapping[str, Any] | None = None,
    person_properties: Mapping[str, Any] | None = None,
    group_properties: Mapping[str, Mapping[str, Any]] | None = None,
    flag_keys: Iterable[str] | None = None,
    device_id: str | None = None,
) -> tuple[dict[str, FlagResult], dict[str, str]]:
    """Evaluate flags locally; returns (decided results by key, unresolved key -> reason).

    ``distinct_id`` is added to the person properties (unless given there) and ``$group_key`` to
    each passed group's properties, as PostHog does. Never raises for malformed definitions.
    """
    # `type(...) is dict` first: an ABC isinstance check costs more than the rest of a simple
    # flag's evaluation, and plain dicts are what callers pass.
    if type(distinct_id) is not str and not isinstance(distinct_id, str):
        raise TypeError(f"distinct_id must be a str, not {type(distinct_id).__name__}")
    if not _is_mapping_or_none(person_properties):
        raise TypeError("person_properties must be a mapping")
    if not _is_mapping_or_none(groups):
        raise TypeError("groups must be a mapping")
    if not _is_mapping_or_none(group_properties):
        raise TypeError("group_properties must be a mapping")
    person = dict(person_properties) if person_properties else {}
    person.setdefault("distinct_id", distinct_id)
    groups = dict(groups) if groups else {}
    group_props: dict[str, dict[str, Any]] = {}
    for name, group_key in groups.items():
        extra = group_properties.get(name) if group_properties else None
        if extra is not None and not isinstance(extra, Mapping):
            raise TypeError(f"group_properties[{name!r}] must be a mapping")
        group_props[name] = {"$group_key": group_key, **(extra or {})}

    results: dict[str, FlagResult] = {}
    unresolved: dict[str, str] = {}
    if flag_keys is None:
        selected: Iterable[CompiledFlag] = defs.flags
    else:
        if isinstance(flag_keys, str):
            raise TypeError("flag_keys must be an iterable of str, not a str")
        by_key = defs.flags_by_key
        selected = []
        unique = (
            flag_keys
            if type(flag_keys) is tuple and len(flag_keys) == 1
            else dict.fromkeys(flag_keys)
        )
        for key in unique:
            flag = by_key.get(key)
            if flag is None:
                unresolved[key] = "unknown_flag"
            else:
                selected.append(flag)
    ctx = _Context(defs, distinct_id, device_id)
    for flag in selected:
        if ctx.cache:
            ctx.cache = {}
        if ctx.cohorts:
            ctx.cohorts = {}
        ctx.depth = 0
        try:
            outcome = _evaluate_one(flag, ctx, distinct_id, person, groups, group_props)
        except Exception:
            unresolved[flag.key] = "malformed_definition"
            continue
        if isinstance(outcome, _Undecided):
            unresolved[flag.key] = outcome.reason
            continue
        value, index, reason = outcome
        try:
            payload = _payload_for(flag, value)
        except TypeError:  # an unhashable variant key
            payload = None
        results[flag.key] = FlagResult(
            flag.key, value, payload, reason, index, flag.flag_id, flag.version
        )
    return results, unresolved
