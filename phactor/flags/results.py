"""What evaluating one flag can end in: a decided ``FlagResult``, or an undecided reason.

- ``FlagResult``: frozen value with ``key``, ``value`` (bool or variant str), ``payload`` (the raw
  payload from the definition, usually a JSON string; decoded by ``FlagEvaluations``), ``reason``,
  ``condition_index``, ``flag_id``, ``version``, ``locally_evaluated``.
- ``FeatureFlagResult``: the public reading of one decided flag (what
  ``get_feature_flag_result`` returns, as the posthog package's): ``key``, ``enabled``,
  ``variant``, ``payload`` (decoded), ``reason``, ``get_value()``.
- ``payload_for_value(payloads, value)``: the raw payload a definition holds for a value
  (``get_feature_flag_payload(match_value=...)``).
- ``reason_category(reason) -> str``: maps a reason string onto PostHog's coarse unresolved reasons
  (``experience_continuity``, ``unsupported_definition``, ``unresolved_dependency``,
  ``missing_context``) or ``unknown_flag``.
- Internal to the flag core: ``_Undecided`` (an inconclusive outcome with its rank), ``_pick``
  (the higher-precedence of two), ``_Malformed`` (a definition the reference evaluator would
  crash on) and ``_CRASH`` (a compiled part that is only broken when evaluation reaches it).

Pure values only; the bottom of the flag core (it imports nothing from phactor).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

__all__ = ["FeatureFlagResult", "FlagResult", "payload_for_value", "reason_category"]

# Unresolved categories, lower rank wins when several causes apply (PostHog's precedence).
_EXPERIENCE_CONTINUITY = 0
_UNSUPPORTED = 1
_UNRESOLVED_DEPENDENCY = 2
_MISSING_CONTEXT = 3
_CATEGORY_NAMES = (
    "experience_continuity",
    "unsupported_definition",
    "unresolved_dependency",
    "missing_context",
)
_REASON_RANKS = {
    "ensure_experience_continuity": _EXPERIENCE_CONTINUITY,
    "unresolved_dependency": _UNRESOLVED_DEPENDENCY,
    "missing_property": _MISSING_CONTEXT,
    "invalid_property_value": _MISSING_CONTEXT,
    "missing_group_properties": _MISSING_CONTEXT,
    "missing_device_id": _MISSING_CONTEXT,
}


def reason_category(reason: str) -> str:
    """Return PostHog's coarse unresolved category for one of our reason strings."""
    head = reason.split(":", 1)[0]
    if head == "unknown_flag":
        return "unknown_flag"
    return _CATEGORY_NAMES[_REASON_RANKS.get(head, _UNSUPPORTED)]


class _Undecided:
    """An inconclusive outcome; ``server`` marks causes that stop all later conditions."""

    __slots__ = ("rank", "reason", "server")

    def __init__(self, reason: str, rank: int, server: bool = False) -> None:
        self.reason = reason
        self.rank = rank
        self.server = server

    def __repr__(self) -> str:
        return f"_Undecided({self.reason!r}, {self.rank}, server={self.server})"


def _pick(current: _Undecided | None, new: _Undecided) -> _Undecided:
    if current is None or new.rank < current.rank:
        return new
    return current


class _Malformed(Exception):
    """A definition shape the reference evaluator would crash on."""


class _CrashMarker:
    """Stands in for a definition part that is only broken when evaluation reaches it."""

    __slots__ = ()


_CRASH = _CrashMarker()


class FlagResult(NamedTuple):
    """One decided flag: ``value`` is True/False or the variant key.

    A named tuple because results are created on the request path and tuples are the cheapest
    immutable value Python has.
    """

    key: str
    value: bool | str
    payload: Any = None
    reason: str | None = None
    condition_index: int | None = None
    flag_id: Any = None
    version: Any = None
    locally_evaluated: bool = True

    @property
    def enabled(self) -> bool:
        """Whether the flag is on (a variant counts as on)."""
        return self.value is not False

    @property
    def variant(self) -> str | None:
        """The variant key for multivariate flags, else None."""
        return self.value if isinstance(self.value, str) else None


@dataclass(frozen=True, slots=True)
class FeatureFlagResult:
    """A flag's value for one user, as the posthog package's ``FeatureFlagResult``.

    ``enabled`` (a variant counts as on), ``variant`` (the variant key or None), ``payload``
    (decoded JSON, or None) and ``reason`` (phactor's reason code, e.g. ``condition_match``).
    """

    key: str
    enabled: bool
    variant: str | None
    payload: Any
    reason: str | None

    def get_value(self) -> bool | str:
        """The variant key, else True/False (the ``$feature_flag_response`` value)."""
        return self.variant or self.enabled

    @property
    def value(self) -> bool | str:
        """Same as ``get_value()``."""
        return self.get_value()

    @classmethod
    def of(cls, result: FlagResult, payload: Any) -> FeatureFlagResult:
        """From a decided ``FlagResult`` and its payload, already decoded."""
        value = result.value
        return cls(
            result.key,
            value is not False,
            value if isinstance(value, str) else None,
            payload,
            result.reason,
        )


def payload_for_value(payloads: Any, value: bool | str) -> Any:
    """The raw payload a flag definition's ``filters.payloads`` holds for ``value`` (as PostHog
    keys them: ``"true"``/``"false"`` for booleans, the variant key for a variant)."""
    if not isinstance(payloads, dict):
        return None
    if isinstance(value, bool):
        return payloads.get("true" if value else "false")
    return payloads.get(value)
