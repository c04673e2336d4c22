"""Shared pieces of the fuzz suite (tests/fuzz/test_fuzz_*.py): hostile values and bounded calls.

Every public call under fuzz runs through `bounded()`: in a worker thread joined with a timeout,
so a hang FAILS the example instead of freezing the suite. Inputs known to hang (cyclic graphs,
backtracking regexes hold the GIL) run in a child process instead (`run_script`), bounded in time
and memory, so a hung or exploding call cannot take the test session with it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import enum
import os
import pathlib
import subprocess
import sys
import textwrap
import threading
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import Phase, settings
from hypothesis import strategies as st

import phactor

# A public call must return within this bound (seconds); generous on a loaded 2-core machine.
CALL_BOUND = 10.0
# A child process running a whole hypothesis test (`run_script`) ends itself after this many
# seconds (faulthandler.dump_traceback_later): a few seconds in CI, long with PHACTOR_FUZZ=long.
LONG_RUN = os.environ.get("PHACTOR_FUZZ", "ci") != "ci"
CHILD_BOUND = 1800.0 if LONG_RUN else 8.0
# Put on every fuzz module (`pytestmark = fuzz_timeout`): the suite's 120 s per-test timeout
# is for CI; a PHACTOR_FUZZ=long run takes minutes per test.
fuzz_timeout = pytest.mark.timeout(4 * 3600 if LONG_RUN else 120)
# What a public call may raise for bad input (ConfigError is a ValueError).
ALLOWED_ERRORS: tuple[type[BaseException], ...] = (TypeError, ValueError)


def bounded(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Any, BaseException | None]:
    """Call `fn` in a worker thread; (value, None) or (None, error). Fails if it does not return.

    Also fails when the call raised anything but TypeError/ValueError (returned, not raised here,
    when it is one of those, so the caller can check what the error left behind).
    """
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = fn(*args, **kwargs)
        except BaseException as error:
            box["error"] = error

    worker = threading.Thread(target=run, name="fuzz-call", daemon=True)
    worker.start()
    worker.join(CALL_BOUND)
    name = getattr(fn, "__qualname__", repr(fn))
    assert not worker.is_alive(), f"{name} did not return within {CALL_BOUND} s"
    error = box.get("error")
    if error is not None and not isinstance(error, ALLOWED_ERRORS):
        raise AssertionError(f"{name} raised {type(error).__name__}: {error!r}") from error
    return box.get("value"), error


def ledger(inst: phactor.Instance) -> dict[str, Any]:
    """The instance's stats, after asserting the invariant holds."""
    stats = inst.stats()
    accounted = (
        stats["sent"] + sum(stats["dropped"].values()) + stats["queued"] + stats["in_flight"]
    )
    assert stats["captured"] == accounted, stats
    return stats


def run_script(code: str, *, timeout: float = CHILD_BOUND + 12.0, memory_mb: int = 1024) -> None:
    """Run `code` in a fresh interpreter (this worktree first on the path), bounded in time and
    address space; fail with its output unless it exits 0 in time.

    The child inherits PHACTOR_FUZZ, so a hypothesis test inside it uses the suite's profile.
    """
    prelude = textwrap.dedent(
        f"""
        import resource, sys
        resource.setrlimit(resource.RLIMIT_AS, ({memory_mb} << 20, {memory_mb} << 20))
        sys.path.insert(0, {str(TESTS_DIR)!r})
        """
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(TESTS_DIR)])}
    try:
        done = subprocess.run(
            [sys.executable, "-c", prelude + textwrap.dedent(code)],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as expired:
        raise AssertionError(f"child did not finish within {timeout} s: {expired.stdout!r}") from None
    assert done.returncode == 0, (
        f"child exited {done.returncode}\n--- stdout\n{done.stdout[-3000:]}\n"
        f"--- stderr\n{done.stderr[-3000:]}"
    )


TESTS_DIR = pathlib.Path(__file__).resolve().parent
ROOT = TESTS_DIR.parent


# For a test marked xfail while its defect is open: no shrinking (a known failure should cost
# little CI time). Remove it with the xfail mark once the fix is merged.
open_defect = settings(phases=[Phase.explicit, Phase.reuse, Phase.generate])


# --- hostile objects --------------------------------------------------------------------------


class RaisingStr:
    """str() and repr() raise: a property value or key no encoder may trust."""

    def __str__(self) -> str:
        raise RuntimeError("__str__ refuses")

    def __repr__(self) -> str:
        raise RuntimeError("__repr__ refuses")

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text("<RaisingStr>")  # how hypothesis shows a failing example


class RaisingEq:
    """== raises (hashable by identity, so it can be a key until compared)."""

    __hash__ = object.__hash__

    def __eq__(self, other: object) -> bool:
        raise RuntimeError("__eq__ refuses")

    def __repr__(self) -> str:
        return "<RaisingEq>"


class RaisingHash:
    """hash() raises: fine as a value, never usable as a key."""

    def __hash__(self) -> int:
        raise RuntimeError("__hash__ refuses")

    def __repr__(self) -> str:
        return "<RaisingHash>"


class RaisingBool:
    """bool() raises (a numpy array or a DataFrame in real code)."""

    def __bool__(self) -> bool:
        raise RuntimeError("__bool__ refuses")

    def __repr__(self) -> str:
        return "<RaisingBool>"


class Color(enum.Enum):
    RED = "red"
    NESTED = (1, 2)


@dataclasses.dataclass
class Point:
    x: Any
    y: Any


# Objects whose dunder methods raise, and enum members: makers (a class) or values.
HOSTILE_TYPES: list[Any] = [
    RaisingStr,
    RaisingEq,
    RaisingHash,
    RaisingBool,
    object,
    Color.RED,
    Color.NESTED,
]


def hostile_objects() -> st.SearchStrategy[Any]:
    return st.sampled_from(HOSTILE_TYPES).map(lambda make: make() if isinstance(make, type) else make)


# --- values ---------------------------------------------------------------------------------

# Hypothesis' default text excludes lone surrogates (category Cs): the safe class. Surrogates are
# fuzzed on their own (issue 10 #2).
safe_text = st.text(max_size=20)
surrogate_text = st.lists(
    st.characters(categories=["Cs"]) | st.characters(), min_size=1, max_size=12
).map("".join)

# Ints up to ~100 digits: beyond 64 bits (orjson refuses) but within Python's int->str limit.
big_ints = st.integers(min_value=-(10**100), max_value=10**100)
floats = st.floats(allow_nan=True, allow_infinity=True)
# Timestamps PostHog can store, converted from any offset without leaving datetime's range.
datetimes = st.datetimes(
    min_value=dt.datetime(1000, 1, 2), max_value=dt.datetime(9999, 12, 30)
) | st.datetimes(
    min_value=dt.datetime(1000, 1, 2),
    max_value=dt.datetime(9999, 12, 30),
    timezones=st.timezones() | st.just(dt.UTC),
)

scalars = st.one_of(
    st.none(),
    st.booleans(),
    big_ints,
    floats,
    safe_text,
    st.binary(max_size=20),
    st.dates(min_value=dt.date(1000, 1, 1)),
    st.times(),
    datetimes,
    st.decimals(allow_nan=True, allow_infinity=True),
    st.uuids(),
    st.builds(pathlib.PurePosixPath, safe_text),
    hostile_objects(),
)

hashable_keys = st.one_of(
    safe_text,
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(),
    st.none(),
    st.booleans(),
    st.tuples(st.integers(), safe_text),
    st.frozensets(st.integers(), max_size=3),
    st.builds(RaisingStr),
    st.builds(RaisingEq),
    st.uuids(),
)


def _containers(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.lists(children, max_size=4),
        st.tuples(children, children),
        st.dictionaries(hashable_keys, children, max_size=4),
        st.frozensets(st.integers() | safe_text, max_size=4),
        st.sets(st.integers(), max_size=4),
        st.builds(Point, children, children),
    )


def _deep(value: Any, depth: int, as_dict: bool) -> Any:
    for _ in range(depth):
        value = {"d": value} if as_dict else [value]
    return value


def _shared(value: Any) -> Any:
    # The same container reached twice (not a cycle): must be sent twice, not hang.
    inner = [value]
    return {"a": inner, "b": inner, "c": (inner, inner)}


values = st.recursive(scalars, _containers, max_leaves=12)
json_hostile_values = st.one_of(
    values,
    st.builds(_deep, values, st.integers(0, 400), st.booleans()),
    st.builds(_shared, values),
)

# Property mappings: str keys (the common case) mixed with every hashable odd key.
# No "distinct_id" key: it stands in for the distinct_id argument (fuzzed on its own).
property_maps = st.dictionaries(
    safe_text.filter(lambda k: k != "distinct_id") | hashable_keys.filter(lambda k: type(k) is not str),
    json_hostile_values,
    max_size=6,
)

# Things that are not what a parameter expects.
wrong_types = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.binary(max_size=5),
    st.lists(st.integers(), max_size=2),
    st.tuples(safe_text),
    st.sets(st.integers(), max_size=2),
    st.dictionaries(safe_text, st.integers(), max_size=2),
    # Not RaisingStr: an argument whose repr() raises is fuzzed on its own (error messages
    # repr() the wrong argument today).
    hostile_objects().filter(lambda v: not isinstance(v, RaisingStr)),
    st.just(decimal.Decimal("NaN")),
    st.just(uuid.uuid4),
)

valid_distinct_ids = st.one_of(
    safe_text.filter(bool), st.integers(min_value=-(10**30), max_value=10**30), st.uuids()
)
event_names = safe_text.filter(bool)


def cyclic_graph(spec: list[tuple[bool, list[int]]]) -> Any:
    """Build containers (dict if the flag, else list) linked by index: cycles and shared links."""
    nodes: list[Any] = [{} if is_dict else [] for is_dict, _ in spec]
    for node, (_, links) in zip(nodes, spec, strict=True):
        for n, target in enumerate(links):
            child = nodes[target % len(nodes)]
            if isinstance(node, dict):
                node[f"k{n}"] = child
            else:
                node.append(child)
    return nodes[0]
