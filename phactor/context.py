"""Per-instance context in contextvars: right per thread and per asyncio task.

Why contextvars: a web request's context (its distinct_id, say) must not leak into another
request served by another thread or task. A new thread starts with empty context, as a new
Elixir process does; an asyncio task starts with a copy of its creator's context, and what it
sets stays inside it. Each instance has its own ContextVar, so two instances never share context.

The state is an immutable `ContextState`, replaced (never mutated) on every change, so a
`with context(...)` block can restore exactly what was there with a token.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from types import MappingProxyType
from typing import Any, NamedTuple

__all__ = ["EMPTY", "ContextState", "ContextStore"]

_EMPTY_MAP: Mapping[str, Any] = MappingProxyType({})


class ContextState(NamedTuple):
    """One thread's (or task's) context for one instance."""

    properties: Mapping[str, Any]
    event_properties: Mapping[str, Mapping[str, Any]]
    flags: Any  # a FlagEvaluations, or None


EMPTY = ContextState(_EMPTY_MAP, _EMPTY_MAP, None)


def _check_props(props: Any) -> dict[str, Any]:
    if not isinstance(props, Mapping):
        raise TypeError(f"context properties must be a Mapping, got {type(props).__name__}")
    return dict(props)


def _split_flags(props: Any) -> tuple[dict[str, Any], Any]:
    # A FlagEvaluations may stand in for properties (API: set_context(evaluations)).
    if hasattr(props, "event_properties") and hasattr(props, "get_flag"):
        return {}, props
    return _check_props(props), None


class ContextStore:
    """The context of one named instance. Cheap to create; state lives in a ContextVar."""

    __slots__ = ("_var",)

    def __init__(self, instance_name: str):
        # A ContextVar per store, not per name: an instance started again under a name that
        # was stopped must not inherit the old instance's context in threads that set it.
        self._var: ContextVar[ContextState] = ContextVar(
            f"phactor_context_{instance_name}", default=EMPTY
        )

    def current(self) -> ContextState:
        """The state for the calling thread/task."""
        return self._var.get()

    def set(self, props: Any) -> None:
        """Merge `props` (or a FlagEvaluations) into this thread's instance context."""
        new, flags = _split_flags(props)
        state = self._var.get()
        merged = {**state.properties, **new}
        self._var.set(
            ContextState(
                MappingProxyType(merged),
                state.event_properties,
                flags if flags is not None else state.flags,
            )
        )

    def get(self) -> dict[str, Any]:
        """A copy of this thread's instance context properties."""
        return dict(self._var.get().properties)

    def set_event(self, event: str, props: Any) -> None:
        """Merge `props` into the context used only for events named `event`."""
        if not isinstance(event, str) or not event:
            raise TypeError("event must be a non-empty str")
        new = _check_props(props)
        state = self._var.get()
        per_event = dict(state.event_properties)
        per_event[event] = MappingProxyType({**per_event.get(event, _EMPTY_MAP), **new})
        self._var.set(state._replace(event_properties=MappingProxyType(per_event)))

    def get_event(self, event: str) -> dict[str, Any]:
        """A copy of the context properties for events named `event`."""
        if type(event) is not str:
            # As set_event: an odd name is a TypeError here, never a lookup that hashes it.
            raise TypeError(f"event must be a str, got {type(event).__name__}")
        return dict(self._var.get().event_properties.get(event, _EMPTY_MAP))

    @contextlib.contextmanager
    def scoped(self, props: Any, event: str | None = None) -> Iterator[None]:
        """Apply `props` for the duration of a `with` block, then restore what was there."""
        token = self._var.set(self._var.get())
        try:
            if event is None:
                self.set(props)
            else:
                self.set_event(event, props)
            yield
        finally:
            self._var.reset(token)
