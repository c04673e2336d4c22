"""Immutable, pre-parsed snapshot of the flag definitions response.

Built once per poll from ``{"flags": [...], "group_type_mapping": {...}, "cohorts": {...}}``; each
flag is compiled on its first evaluation (then kept for the snapshot's life), so that evaluation
never re-parses operators, regexes, dates, semvers or rollout tables and a load of 10,000 flags
costs little more than the JSON. A malformed flag only affects itself: it is compiled into parts
that make that flag unresolved when reached.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from types import MappingProxyType
from typing import Any

from phactor.flags.compiled import CompiledFlag, PropertyGroup, compile_filter
from phactor.flags.filters.cohorts import _COHORT_OPERATORS, _Cohort, _Dependency
from phactor.flags.results import _UNSUPPORTED, _Undecided

__all__ = ["Definitions"]


def _cohort_group(group: Any, matching_version: Any) -> PropertyGroup:
    try:
        return PropertyGroup(group, matching_version)
    except Exception:
        return PropertyGroup(None)  # malformed: flags using this cohort go to the server


class _LazyFlags(Mapping[str, CompiledFlag]):
    """The flags by key, each compiled on first access (then kept by the snapshot): loading
    10,000 definitions costs a dict of the raw ones, and a flag never evaluated is never
    compiled. A view made on each `Definitions.flags_by_key` access: the snapshot does not
    reference it, so no reference cycle keeps a replaced snapshot alive until a GC pass."""

    __slots__ = ("_compiled", "_defs", "_raw")

    def __init__(self, defs: Definitions) -> None:
        self._defs = defs
        self._raw = defs._raw_by_key
        self._compiled = defs._compiled

    def __getitem__(self, key: str) -> CompiledFlag:
        flag = self._compiled.get(key)
        if flag is None:
            flag = self._defs._compile(self._raw[key])  # KeyError for an unknown key
            # Two threads may compile the same flag: the first stored wins, so it is one object.
            flag = self._compiled.setdefault(key, flag)
        return flag

    def get(self, key: Any, default: Any = None) -> Any:
        flag = self._compiled.get(key)
        if flag is not None:
            return flag
        if key not in self._raw:
            return default
        return self[key]

    def __contains__(self, key: object) -> bool:
        return key in self._raw

    def __iter__(self) -> Iterator[str]:
        return iter(self._raw)

    def __len__(self) -> int:
        return len(self._raw)


class Definitions:
    """A frozen snapshot of flag definitions ready for local evaluation.

    Attributes: ``flags`` (tuple of compiled flags in response order), ``flags_by_key``,
    ``cohorts`` (raw cohort property groups by id), ``group_type_mapping`` (index str -> group
    type), ``property_matching_version``, ``skipped`` (entries that were not flag objects with a
    string key), ``uncompilable`` (keys of the flags compiled so far whose definition could not
    be compiled at all; they stay unresolved with reason ``"malformed_definition"``). A flag is
    compiled on its first evaluation (``on_uncompilable(key)`` is then called for a flag that
    cannot be); ``flags`` compiles them all. Use ``Definitions.from_response(json_body)``;
    ``Definitions.empty()`` has no flags.
    """

    __slots__ = (
        "__weakref__",
        "_all",
        "_cohort_groups",
        "_compiled",
        "_on_uncompilable",
        "_raw_by_key",
        "_uncompilable",
        "cohorts",
        "group_type_mapping",
        "property_matching_version",
        "skipped",
    )

    _all: tuple[CompiledFlag, ...] | None
    _cohort_groups: dict[Any, PropertyGroup]
    _compiled: dict[str, CompiledFlag]
    _on_uncompilable: Callable[[str], None] | None
    _raw_by_key: dict[str, dict[str, Any]]
    _uncompilable: list[str]
    cohorts: Mapping[Any, Any]
    group_type_mapping: Mapping[str, Any]
    property_matching_version: Any
    skipped: int

    def __init__(
        self,
        flags: Any = (),
        *,
        cohorts: Any = None,
        group_type_mapping: Any = None,
        property_matching_version: Any = 1,
        on_uncompilable: Callable[[str], None] | None = None,
    ) -> None:
        set_ = object.__setattr__
        mapping = dict(group_type_mapping) if isinstance(group_type_mapping, Mapping) else {}
        raw_cohorts = dict(cohorts) if isinstance(cohorts, Mapping) else {}
        set_(self, "group_type_mapping", MappingProxyType(mapping))
        set_(self, "cohorts", MappingProxyType(raw_cohorts))
        set_(self, "property_matching_version", property_matching_version)
        set_(
            self,
            "_cohort_groups",
            {
                cid: _cohort_group(group, property_matching_version)
                for cid, group in raw_cohorts.items()
            },
        )
        by_key: dict[str, dict[str, Any]] = {}
        skipped = 0
        for raw in flags if isinstance(flags, (list, tuple)) else ():
            if raw.__class__ is not dict and not isinstance(raw, dict):
                skipped += 1
                continue
            key = raw.get("key")
            if key.__class__ is not str and not isinstance(key, str):
                skipped += 1
                continue
            # posthog keeps the last definition of a duplicated key (at its position).
            by_key.pop(key, None)
            by_key[key] = raw
        set_(self, "_raw_by_key", by_key)
        set_(self, "_compiled", {})
        set_(self, "skipped", skipped)
        set_(self, "_all", None)
        set_(self, "_uncompilable", [])
        set_(self, "_on_uncompilable", on_uncompilable)

    def _compile(self, raw: dict[str, Any]) -> CompiledFlag:
        try:
            flag = CompiledFlag(raw, self.property_matching_version)
        except Exception:
            # Whatever a definition holds (a number past the int-string limit, a type no
            # one expected), it costs only its own flag its local evaluation.
            flag = CompiledFlag.uncompilable(raw)
            self._uncompilable.append(flag.key)
            if self._on_uncompilable is not None:
                try:
                    self._on_uncompilable(flag.key)
                except Exception:
                    pass  # reporting must not change the evaluation
            return flag
        try:
            flag.definition_problem = self._definition_problem(flag)
        except Exception:
            flag.definition_problem = None
        return flag

    @property
    def flags_by_key(self) -> Mapping[str, CompiledFlag]:
        """The flags by key, in response order, each compiled on first access."""
        return _LazyFlags(self)

    @property
    def flags(self) -> tuple[CompiledFlag, ...]:
        """Every flag, compiled, in response order."""
        every = self._all
        if every is None:
            by_key = self.flags_by_key
            every = tuple(by_key[key] for key in by_key)
            object.__setattr__(self, "_all", every)
        return every

    @property
    def uncompilable(self) -> tuple[str, ...]:
        """Keys of the flags compiled so far that could not be compiled at all."""
        return tuple(self._uncompilable)

    @classmethod
    def from_response(
        cls, data: Any, on_uncompilable: Callable[[str], None] | None = None
    ) -> Definitions:
        """Parse a definitions response body (already JSON-decoded); never raises."""
        if not isinstance(data, Mapping):
            return cls(on_uncompilable=on_uncompilable)
        return cls(
            data.get("flags") or (),
            cohorts=data.get("cohorts"),
            group_type_mapping=data.get("group_type_mapping"),
            property_matching_version=data.get("property_matching_version", 1),
            on_uncompilable=on_uncompilable,
        )

    @classmethod
    def empty(cls) -> Definitions:
        """A snapshot with no flags."""
        return cls()

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("Definitions is immutable")

    def __len__(self) -> int:
        return len(self._raw_by_key)

    def __contains__(self, key: object) -> bool:
        return key in self._raw_by_key

    def __repr__(self) -> str:
        return f"<Definitions flags={len(self.flags)} cohorts={len(self.cohorts)}>"

    # The reason a flag's definition alone gives, used to rank causes when a condition needs the
    # server (a static cohort) before the rest of the flag was looked at.
    def _definition_problem(self, flag: CompiledFlag) -> _Undecided | None:
        if not flag.active or flag.continuity:
            return None
        if flag.aggregation is not None and not self.group_type_mapping.get(str(flag.aggregation)):
            return _Undecided(f"unknown_group_type:{flag.aggregation}", _UNSUPPORTED)
        groups = (flag.raw.get("filters") or {}).get("groups") or []
        visited: set[str] = set()
        for condition in groups:
            for prop in condition.get("properties") or []:
                problem = self._property_problem(prop, visited)
                if problem is not None:
                    return problem
        return None

    def _property_problem(self, prop: Any, visited: set[str]) -> _Undecided | None:
        compiled = compile_filter(prop, self.property_matching_version)
        if isinstance(compiled, _Dependency):
            chain = compiled.chain
            if not compiled.shape_ok:
                return None
            if not isinstance(chain, list) or not chain:
                return _Undecided(f"malformed_dependency:{compiled.key}", _UNSUPPORTED)
            for dep in chain:
                if dep not in self._raw_by_key:
                    return _Undecided(f"missing_dependency:{dep}", _UNSUPPORTED)
            return None
        if isinstance(compiled, _Cohort):
            cohort_id = compiled.cohort_id
            if cohort_id not in self.cohorts:
                return _Undecided(f"static_cohort:{cohort_id}", _UNSUPPORTED)
            if compiled.operator not in _COHORT_OPERATORS:
                return _Undecided(f"unsupported_cohort_operator:{compiled.operator}", _UNSUPPORTED)
            if cohort_id in visited:
                return None
            visited.add(cohort_id)
            return self._group_problem(self.cohorts[cohort_id], visited)
        return compiled.problem

    def _group_problem(self, group: Any, visited: set[str]) -> _Undecided | None:
        if group == {}:
            return None
        malformed = _Undecided("malformed_cohort", _UNSUPPORTED)
        values = group.get("values") if isinstance(group, dict) else None
        if (
            not isinstance(group, dict)
            or group.get("type") not in ("AND", "OR")
            or not isinstance(values, list)
        ):
            return malformed
        for entry in values:
            if not isinstance(entry, dict):
                return malformed
            if entry == {} or "values" in entry or entry.get("type") in ("AND", "OR"):
                problem = self._group_problem(entry, visited)
            else:
                problem = self._property_problem(entry, visited)
            if problem is not None:
                return problem
        return None
