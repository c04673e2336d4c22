"""Pure building of ``/flags`` request bodies and parsing of their responses (no HTTP).

``parse_flags_response(body, requested=None) -> RemoteFlags`` accepts the v4/v2 shape
(``{"flags": {key: record}}``, records with a typed ``value`` or with ``enabled``/``variant``)
and the older v1 shape (``featureFlags`` + ``featureFlagPayloads``). It never raises: a malformed
body or record gives no value for the affected keys and a reason in ``RemoteFlags.unresolved``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from phactor.flags.results import FlagResult

__all__ = ["RemoteFlags", "build_flags_request", "parse_flags_response"]


@dataclass(frozen=True, slots=True)
class RemoteFlags:
    """Parsed ``/flags`` response: decided ``results``, ``unresolved`` key -> reason, and the
    response-level ``error`` (``"quota_limited"``, ``"errors_while_computing_flags"``,
    ``"malformed_response"``) or None."""

    results: Mapping[str, FlagResult] = field(default_factory=dict)
    unresolved: Mapping[str, str] = field(default_factory=dict)
    error: str | None = None
    request_id: str | None = None
    evaluated_at: Any = None


def build_flags_request(
    api_key: str,
    distinct_id: str,
    *,
    groups: Mapping[str, Any] | None = None,
    person_properties: Mapping[str, Any] | None = None,
    group_properties: Mapping[str, Mapping[str, Any]] | None = None,
    flag_keys: Iterable[str] | None = None,
    geoip_disable: bool = True,
    device_id: str | None = None,
    evaluation_environments: Sequence[str] = (),
) -> dict[str, Any]:
    """The JSON body for ``POST /flags/``; each passed group's properties get ``$group_key``.

    Always says ``"evaluation_runtime": "server"``: without it PostHog guesses the runtime from
    the User-Agent (``phactor/x.y`` is no server SDK it knows) and may leave server-only flags
    out. ``evaluation_environments`` tags go as ``evaluation_contexts`` and, for servers that
    only know the older name, ``evaluation_environments``.
    """
    groups = dict(groups or {})
    all_group_properties = {
        name: {"$group_key": key, **((group_properties or {}).get(name) or {})}
        for name, key in groups.items()
    }
    body: dict[str, Any] = {
        "api_key": api_key,
        "distinct_id": distinct_id,
        "groups": groups,
        "person_properties": dict(person_properties or {}),
        "group_properties": all_group_properties,
        "geoip_disable": geoip_disable,
        "evaluation_runtime": "server",
    }
    if evaluation_environments:
        body["evaluation_contexts"] = list(evaluation_environments)
        body["evaluation_environments"] = list(evaluation_environments)
    if device_id is not None:
        body["device_id"] = device_id
    if flag_keys:
        body["flag_keys_to_evaluate"] = list(flag_keys)
    return body


class _Bad(Exception):
    pass


def _int_or_none(value: Any, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    raise _Bad(name)


def _typed(value: Any, name: str, kind: type | tuple[type, ...]) -> Any:
    if value is None or isinstance(value, kind):
        return value
    raise _Bad(name)


def _reason_and_metadata(
    record: Mapping[str, Any],
) -> tuple[str | None, int | None, dict[str, Any]]:
    reason = _typed(record.get("reason"), "reason", dict) or {}
    code = _typed(reason.get("code"), "reason.code", str)
    index = _int_or_none(reason.get("condition_index"), "reason.condition_index")
    metadata = _typed(record.get("metadata"), "metadata", dict) or {}
    return code, index, metadata


def _parse_record(key: str, record: Any) -> FlagResult | str:
    """A FlagResult, or a reason string when the record has no usable value."""
    if not isinstance(record, dict):
        return "malformed_record:record"
    try:
        _typed(record.get("key"), "key", str)
        if _typed(record.get("failed"), "failed", bool):
            return "evaluation_failed"
        code, index, metadata = _reason_and_metadata(record)
        flag_id = _int_or_none(metadata.get("id"), "metadata.id")
        version = _int_or_none(metadata.get("version"), "metadata.version")
        payload = metadata.get("payload")
        if "value" in record:  # v4: a typed value
            value = record["value"]
            if value is None or isinstance(value, bool):
                result: bool | str = bool(value)
            elif isinstance(value, str):
                result = value
            elif isinstance(value, dict) or (
                isinstance(value, (int, float))
                and (not isinstance(value, float) or math.isfinite(value))
            ):
                # A number or object value is its own payload, JSON-encoded as older servers sent it.
                result, payload = True, json.dumps(value, separators=(",", ":"), ensure_ascii=False)
            else:
                raise _Bad("value")
        else:  # v2: enabled + variant
            enabled = _typed(record.get("enabled"), "enabled", bool)
            variant = _typed(record.get("variant"), "variant", str)
            if enabled is None:
                raise _Bad("enabled")
            result = variant if enabled and variant else enabled
    except _Bad as bad:
        return f"malformed_record:{bad}"
    except (RecursionError, ValueError):
        return "malformed_record:value"
    return FlagResult(
        key,
        result,
        payload if result is not False else None,
        code,
        index,
        flag_id,
        version,
        locally_evaluated=False,
    )


def parse_flags_response(body: Any, requested: Iterable[str] | None = None) -> RemoteFlags:
    """Parse a decoded ``/flags`` response body; keys in ``requested`` that got no value are
    listed in ``unresolved``."""
    wanted = list(dict.fromkeys(requested)) if requested is not None else []
    if not isinstance(body, Mapping):
        return RemoteFlags({}, dict.fromkeys(wanted, "malformed_response"), "malformed_response")
    request_id = body.get("requestId") if isinstance(body.get("requestId"), str) else None
    evaluated_at = body.get("evaluatedAt")
    quota = body.get("quotaLimited")
    if isinstance(quota, list) and "feature_flags" in quota:
        return RemoteFlags(
            {}, dict.fromkeys(wanted, "quota_limited"), "quota_limited", request_id, evaluated_at
        )
    results: dict[str, FlagResult] = {}
    unresolved: dict[str, str] = {}
    error = (
        "errors_while_computing_flags" if body.get("errorsWhileComputingFlags") is True else None
    )
    if "flags" in body:
        records = body["flags"]
        if not isinstance(records, Mapping):
            return RemoteFlags(
                {}, dict.fromkeys(wanted, "malformed_response"), "malformed_response", request_id
            )
        for key, record in records.items():
            if not isinstance(key, str):
                continue
            parsed = _parse_record(key, record)
            if isinstance(parsed, str):
                unresolved[key] = parsed
            else:
                results[key] = parsed
    else:
        values = body.get("featureFlags", {})
        payloads = body.get("featureFlagPayloads") or {}
        if not isinstance(values, Mapping) or not isinstance(payloads, Mapping):
            return RemoteFlags(
                {}, dict.fromkeys(wanted, "malformed_response"), "malformed_response", request_id
            )
        for key, value in values.items():
            if not isinstance(key, str):
                continue
            if isinstance(value, bool) or (isinstance(value, str) and value):
                payload = payloads.get(key) if value is not False else None
                results[key] = FlagResult(
                    key, value, payload, None, None, None, None, locally_evaluated=False
                )
            else:
                unresolved[key] = "malformed_record:value"
    missing_reason = error or "flag_missing"
    for key in wanted:
        if key not in results and key not in unresolved:
            unresolved[key] = missing_reason
    return RemoteFlags(results, unresolved, error, request_id, evaluated_at)
