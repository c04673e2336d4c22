"""Equality, text and regex property filters (``exact``, ``is_not``, ``is_set``, ``icontains``,
``starts_with``, ``ends_with``, ``regex`` and their negations)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from phactor.flags.filters.base import _MISSING, MatchContext, _Filter
from phactor.flags.filters.regex import _DEFER, _prepare_regex, _regex_search
from phactor.flags.filters.values import _ASCII_LOWER, _as_text, _boolean_like, _truthy
from phactor.flags.results import _UNSUPPORTED, _Undecided


class _IsSet(_Filter):
    __slots__ = ("expect",)

    def __init__(self, key: Any, expect: bool) -> None:
        super().__init__(key)
        self.expect = expect

    def match(self, props: Mapping[str, Any], ctx: MatchContext) -> Any:
        if self.key not in props:
            return self.missing
        return self.expect


_EXACT_EMPTY, _EXACT_BOOL, _EXACT_LIST, _EXACT_SCALAR = range(4)


class _Exact(_Filter):
    __slots__ = ("mode", "negate", "target")

    def __init__(self, key: Any, value: Any, negate: bool, matching_version: Any) -> None:
        problem = None
        target: Any = None
        if value == []:
            mode = _EXACT_EMPTY
        elif matching_version != 2 and _boolean_like(value):
            mode, target = _EXACT_BOOL, _truthy(value)
        else:
            texts = [_as_text(v) for v in (value if isinstance(value, list) else [value])]
            if any(t is None for t in texts):
                problem = _Undecided(f"invalid_filter_value:{key}", _UNSUPPORTED)
            if isinstance(value, list):
                mode, target = _EXACT_LIST, frozenset(t.lower() for t in texts if t is not None)
            else:
                mode, target = _EXACT_SCALAR, (texts[0] or "").lower()
        super().__init__(key, problem)
        self.mode = mode
        self.target = target
        self.negate = negate

    def match(self, props: Mapping[str, Any], ctx: MatchContext) -> Any:
        value = props.get(self.key, _MISSING)
        if value is _MISSING:
            return self.missing
        text = value if value.__class__ is str else _as_text(value)
        if text is None:
            return self.bad_value
        mode = self.mode
        if mode == _EXACT_SCALAR:
            if self.problem is not None:
                return self.problem
            matched = text.lower() == self.target
        elif mode == _EXACT_LIST:
            if self.problem is not None:
                return self.problem
            matched = text.lower() in self.target
        elif mode == _EXACT_BOOL:
            matched = _truthy(value) == self.target
        else:
            matched = _truthy(value)
        return matched is not self.negate


class _Text(_Filter):
    __slots__ = ("kind", "needle", "negate")

    def __init__(self, key: Any, operator: str, value: Any) -> None:
        text = _as_text(value)
        super().__init__(
            key,
            None if text is not None else _Undecided(f"invalid_filter_value:{key}", _UNSUPPORTED),
        )
        self.needle = text.translate(_ASCII_LOWER) if text is not None else ""
        self.negate = operator.startswith("not_")
        self.kind = operator.removeprefix("not_")

    def match(self, props: Mapping[str, Any], ctx: MatchContext) -> Any:
        value = props.get(self.key, _MISSING)
        if value is _MISSING:
            return self.missing
        text = _as_text(value)
        if text is None:
            return self.bad_value
        if self.problem is not None:
            return self.problem
        text = text.translate(_ASCII_LOWER)
        if self.kind == "icontains":
            matched = self.needle in text
        elif self.kind == "starts_with":
            matched = text.startswith(self.needle)
        else:
            matched = text.endswith(self.needle)
        return matched is not self.negate


class _Regex(_Filter):
    __slots__ = ("info", "negate")

    def __init__(self, key: Any, operator: str, value: Any) -> None:
        pattern = str(value)
        info = _prepare_regex(pattern) if pattern else True
        super().__init__(
            key, _Undecided(f"unsupported_regex:{key}", _UNSUPPORTED) if info is _DEFER else None
        )
        self.info: Any = info
        self.negate = operator == "not_regex"

    def match(self, props: Mapping[str, Any], ctx: MatchContext) -> Any:
        value = props.get(self.key, _MISSING)
        if value is _MISSING:
            return self.missing
        text = _as_text(value)
        if text is None:
            return self.bad_value
        info = self.info
        if info is True:
            return not self.negate
        if info is None:
            return False  # invalid syntax never matches, under either operator
        if info is _DEFER:
            return self.problem
        found = _regex_search(info, text)
        if found is None:
            return _Undecided(f"unsupported_regex:{self.key}", _UNSUPPORTED)
        return found is not self.negate
