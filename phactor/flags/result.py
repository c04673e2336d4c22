"""``FeatureFlagResult``: one flag's value, decoded payload and reason in one object (what
``get_feature_flag_result`` returns), and the pure helpers the flag helpers share."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from phactor.flags.evaluations import decode_payload
from phactor.flags.matching import FlagResult

__all__ = ["FeatureFlagResult", "check_match_value", "payload_for_value"]


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
    def of(cls, result: FlagResult, payload: Any = None) -> FeatureFlagResult:
        """From a decided ``FlagResult``; ``payload`` (raw) overrides the result's own."""
        value = result.value
        raw = result.payload if payload is None else payload
        return cls(
            result.key,
            value is not False,
            value if isinstance(value, str) else None,
            decode_payload(raw),
            result.reason,
        )


def check_match_value(value: Any) -> None:
    """``match_value`` is None, a bool or a variant key str; TypeError otherwise."""
    if value is not None and type(value) is not bool and not isinstance(value, str):
        raise TypeError(f"match_value must be a bool, a str or None, got {type(value).__name__}")


def payload_for_value(payloads: Any, value: bool | str) -> Any:
    """The raw payload a flag definition's ``filters.payloads`` holds for ``value`` (as PostHog
    keys them: ``"true"``/``"false"`` for booleans, the variant key for a variant)."""
    if not isinstance(payloads, dict):
        return None
    if isinstance(value, bool):
        return payloads.get("true" if value else "false")
    return payloads.get(value)
