"""``FlagEvaluations``: the immutable, thread-safe snapshot of flag values for one caller.

Reads of ``enabled``/``get_flag`` call an optional ``on_access(key, result, snapshot)`` hook (the
FlagEvaluator uses it to send ``$feature_flag_called``); a failing hook is logged, never raised.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType
from typing import Any

from phactor._log import get_logger
from phactor.flags.results import FlagResult

__all__ = ["FlagEvaluations", "OnAccess", "decode_payload"]

_log = get_logger("flags")

OnAccess = Callable[[str, "FlagResult | None", "FlagEvaluations"], None]


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def decode_payload(raw: Any) -> Any:
    """Decode a payload as PostHog does: JSON text is parsed (None if invalid), other values pass."""
    if isinstance(raw, str):
        try:
            return json.loads(raw, parse_constant=_reject_constant)
        except (ValueError, RecursionError):
            return None
    return raw


def _check_key(key: Any) -> None:
    if not isinstance(key, str):
        raise TypeError(f"flag key must be a str, not {type(key).__name__}")


class FlagEvaluations:
    """Flag values for one distinct_id, evaluated once; safe to share between threads.

    ``results`` maps key -> ``FlagResult`` (False values included); ``unresolved`` maps key ->
    reason for flags that have no value. ``distinct_id``, ``groups`` and ``request_id`` describe
    the evaluation for the access hook.
    """

    __slots__ = (
        "_accessed",
        "_distinct_id",
        "_evaluated_at",
        "_groups",
        "_lock",
        "_on_access",
        "_request_id",
        "_results",
        "_unresolved",
    )

    def __init__(
        self,
        results: Mapping[str, FlagResult] | None = None,
        unresolved: Mapping[str, str] | None = None,
        *,
        distinct_id: str = "",
        groups: Mapping[str, Any] | None = None,
        request_id: str | None = None,
        on_access: OnAccess | None = None,
        _accessed: Iterable[str] = (),
        evaluated_at: Any = None,
    ) -> None:
        self._results: Mapping[str, FlagResult] = MappingProxyType(dict(results or {}))
        self._unresolved: Mapping[str, str] = MappingProxyType(dict(unresolved or {}))
        self._distinct_id = distinct_id
        self._groups: Mapping[str, Any] = MappingProxyType(dict(groups or {}))
        self._request_id = request_id
        self._evaluated_at = evaluated_at
        self._on_access = on_access
        self._accessed: set[str] = set(_accessed)
        self._lock = threading.Lock()

    # Read-only: the access hook reports reads under these, so they must not change after
    # the evaluation (a snapshot is shared between threads).
    @property
    def distinct_id(self) -> str:
        """The distinct_id the flags were evaluated for."""
        return self._distinct_id

    @property
    def groups(self) -> Mapping[str, Any]:
        """The groups the flags were evaluated with (read-only)."""
        return self._groups

    @property
    def request_id(self) -> str | None:
        """The ``/flags`` request id when some values came from the server, else None."""
        return self._request_id

    @property
    def evaluated_at(self) -> Any:
        """The ``/flags`` answer's ``evaluatedAt`` (ms since the epoch) when values came from it."""
        return self._evaluated_at

    def _read(self, key: str) -> FlagResult | None:
        _check_key(key)
        result = self._results.get(key)
        with self._lock:
            self._accessed.add(key)
        hook = self._on_access
        if hook is not None:
            try:
                hook(key, result, self)
            except Exception:
                _log.exception("flag access hook failed", flag=key)
        return result

    def enabled(self, key: str, default: bool = False) -> bool:
        """Whether the flag is on; ``default`` when it has no value in this snapshot."""
        result = self._read(key)
        return default if result is None else result.value is not False

    def is_enabled(self, key: str, default: bool = False) -> bool:
        """The posthog package's name of ``enabled``."""
        return self.enabled(key, default)

    def get_flag(self, key: str) -> str | bool | None:
        """The variant key, True/False, or None when the flag has no value in this snapshot."""
        result = self._read(key)
        return None if result is None else result.value

    def get_flag_payload(self, key: str) -> Any:
        """The decoded JSON payload for the flag's value, or None; does not count as an access."""
        _check_key(key)
        result = self._results.get(key)
        return None if result is None else decode_payload(result.payload)

    def get_result(self, key: str) -> FlagResult | None:
        """The full ``FlagResult`` (id, version, reason...) without counting an access."""
        return self._results.get(key)

    def keys(self) -> list[str]:
        """The flags that have a value in this snapshot (False included)."""
        return list(self._results)

    @property
    def unresolved(self) -> Mapping[str, str]:
        """Flag key -> reason for flags that could not be evaluated."""
        return self._unresolved

    @property
    def results(self) -> Mapping[str, FlagResult]:
        """Read-only key -> ``FlagResult`` mapping."""
        return self._results

    def accessed(self) -> frozenset[str]:
        """Keys read through ``enabled``/``get_flag`` so far."""
        with self._lock:
            return frozenset(self._accessed)

    def _clone(self, keys: Iterable[str]) -> FlagEvaluations:
        wanted = [k for k in keys if k in self._results or k in self._unresolved]
        return FlagEvaluations(
            {k: self._results[k] for k in wanted if k in self._results},
            {k: self._unresolved[k] for k in wanted if k in self._unresolved},
            distinct_id=self.distinct_id,
            groups=self.groups,
            request_id=self.request_id,
            on_access=self._on_access,
            evaluated_at=self._evaluated_at,
            _accessed=self.accessed(),
        )

    def only_accessed(self) -> FlagEvaluations:
        """A copy holding only the flags read through ``enabled``/``get_flag`` before this call."""
        accessed = self.accessed()
        return self._clone(k for k in self._results if k in accessed)

    def only(self, keys: Iterable[str]) -> FlagEvaluations:
        """A copy holding only ``keys`` (keys without a value here are dropped)."""
        if isinstance(keys, str):
            raise TypeError("keys must be an iterable of str, not a str")
        wanted = dict.fromkeys(keys)
        for key in wanted:
            _check_key(key)
        return self._clone(wanted)

    def event_properties(self) -> dict[str, Any]:
        """``$feature/<key>`` for every flag and ``$active_feature_flags`` (sorted enabled keys)."""
        properties: dict[str, Any] = {}
        active = []
        for key, result in self._results.items():
            properties[f"$feature/{key}"] = result.value
            if result.value is not False:
                active.append(key)
        if active:
            properties["$active_feature_flags"] = sorted(active)
        return properties

    def __contains__(self, key: object) -> bool:
        return key in self._results

    def __len__(self) -> int:
        return len(self._results)

    def __repr__(self) -> str:
        return f"<FlagEvaluations {dict((k, r.value) for k, r in self._results.items())!r} unresolved={dict(self._unresolved)!r}>"
