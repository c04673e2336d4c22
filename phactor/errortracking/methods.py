"""Error-tracking methods of `Instance` (mixed in), kept beside the error-tracking code.

STUB: filled in by the LoggerHandler work (issue 5).
"""

from __future__ import annotations

from phactor.supervisor import ChildSpec


class ErrorTrackingMethods:
    """Instance methods for error tracking."""

    def _error_tracking_children(self) -> list[ChildSpec]:
        """Child specs this layer adds to the instance's tree (the LoggerHandler)."""
        return []

    def _error_tracking_stopped(self) -> None:
        """Called once when the instance stops (remove handlers, restore hooks)."""
