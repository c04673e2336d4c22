"""Feature-flag methods of `Instance` (mixed in), kept beside the flags code they drive.

STUB: filled in by the FlagEvaluator work (issue 4).
"""

from __future__ import annotations

from typing import Any

from phactor.supervisor import ChildSpec


class FlagMethods:
    """Instance methods for feature flags."""

    def _flag_children(self) -> list[ChildSpec]:
        """Child specs this layer adds to the instance's tree (the FlagEvaluator)."""
        return []

    def _flags_stopped(self) -> None:
        """Called once when the instance stops."""

    def _feature_flag_properties(self, distinct_id: str, groups: Any) -> dict[str, Any]:
        """`$feature/<key>` properties for `capture(..., send_feature_flags=True)`."""
        return {}
