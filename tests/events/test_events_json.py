"""JSON-hostile values on the capture path: shared and cyclic containers, deep nesting, lone
surrogates, values whose str() raises -- capture() returns promptly, raises nothing, counts
everything, and what it queues is valid UTF-8 JSON."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from conftest import StartInstance, assert_ledger
from fuzz_support import run_script
from hypothesis import given
from hypothesis import strategies as st

import phactor
import phactor.testing
from phactor import encoding as enc
from phactor.devserver import DevServer

KEY = "phc_json"
LONE = os.fsdecode(b"name-\xff.txt")  # 'name-\udcff.txt': what a non-UTF-8 file name decodes to
FIXED = "name-\ufffd.txt"
REPO = str(Path(phactor.__file__).resolve().parent.parent)


def bounded(call: Callable[[], Any], seconds: float = 10.0) -> Any:
    """Run `call` on a daemon thread; fail (instead of hanging the suite) if it does not return."""
    result: dict[str, Any] = {}

    def run() -> None:
        try:
            result["value"] = call()
        except BaseException as error:  # reported to the test below
            result["error"] = error

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"did not return within {seconds} s"
    if "error" in result:
        raise result["error"]
    return result.get("value")


# --- shared and cyclic containers -----------------------------------------------------------


@dataclasses.dataclass(eq=False)
class Node:
    name: str
    parent: Node | None = None
    children: list[Node] = dataclasses.field(default_factory=list)


def test_cyclic_and_shared_values_are_cut_in_a_subprocess_and_arrive() -> None:
    # Each of these made capture() walk 2**64 paths (for ever, ~20 MiB/s): run them in a child
    # process with a deadline, against a real server, and read what arrived.
    script = textwrap.dedent(
        """
        import dataclasses, json, sys
        import phactor
        from phactor.devserver import DevServer

        @dataclasses.dataclass(eq=False)
        class Node:
            name: str
            parent: "Node | None" = None
            children: list = dataclasses.field(default_factory=list)

        twice = {}
        twice["a"] = twice
        twice["b"] = twice
        both = []
        both.append(both)
        both.append(both)
        root = Node("root")
        for i in range(70):
            child = Node(f"c{i}", parent=root)
            child.children.append(root)
            root.children.append(child)
        shared = [2**70]  # orjson refuses the first leaf it meets: the fallback walks the rest
        for _ in range(70):
            shared = [shared, shared]  # no cycle: a DAG with 2**70 paths
        deep = []
        for _ in range(10_000):
            deep = [deep]
        values = {"dict": twice, "list": both, "tree": root, "dag": shared, "deep": deep}
        with DevServer() as server:
            inst = phactor.start("cyc", api_key="phc_json", host=server.url)
            out = {name: inst.capture(name, "u1", {"v": v}) for name, v in values.items()}
            assert inst.flush(timeout=10)
            stats = inst.stats()
            events = {e["event"]: e["properties"]["v"] for e in server.events()}
            phactor.stop("cyc", timeout=5)
        print(json.dumps({"uuids": out, "stats": stats, "events": events}))
        """
    )
    env = {**os.environ, "PYTHONPATH": REPO}
    try:
        done = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60
        )
    except subprocess.TimeoutExpired:
        pytest.fail("capture() of a shared/cyclic value did not return within 60 s")
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    events, stats = result["events"], result["stats"]
    assert events["dict"] == {"a": "<cycle>", "b": "<cycle>"}
    assert events["list"] == ["<cycle>", "<cycle>"]
    tree = events["tree"]
    assert tree["name"] == "root" and tree["parent"] is None
    assert len(tree["children"]) == 70
    assert tree["children"][0] == {"name": "c0", "parent": "<cycle>", "children": ["<cycle>"]}
    # 10,000 levels: cut at the depth cap, never a RecursionError.
    level = events["deep"]
    for _ in range(40):
        assert isinstance(level, list) and len(level) == 1
        level = level[0]
    assert "<max depth exceeded>" in json.dumps(events["deep"])
    # The DAG expands to more JSON than any event may hold: dropped as too large, counted.
    assert result["uuids"]["dag"] is None and "dag" not in events
    assert stats["dropped"] == {"event_too_large": 1}
    assert stats["sent"] == 4 and stats["captured"] == 5


def test_json_safe_cuts_cycles_and_keeps_shared_values() -> None:
    leaf = {"x": 1}
    shared = [leaf, leaf, (leaf, leaf)]
    assert enc.json_safe(shared) == [{"x": 1}, {"x": 1}, [{"x": 1}, {"x": 1}]]
    ring: list[Any] = [1]
    ring.append({"back": ring, "set": frozenset({2})})
    assert enc.json_safe(ring) == [1, {"back": "<cycle>", "set": [2]}]
    a = Node("a")
    b = Node("b", parent=a)
    a.children = [b, b]
    assert enc.json_safe(a) == {
        "name": "a",
        "parent": None,
        "children": [{"name": "b", "parent": "<cycle>", "children": []}] * 2,
    }


def test_json_safe_work_is_bounded_by_a_node_budget() -> None:
    shared: list[Any] = [0]
    for _ in range(64):
        shared = [shared, shared]
    out = bounded(lambda: enc.json_safe(shared, max_nodes=1000))
    text = orjson.dumps(out)
    assert b"<truncated>" in text
    assert text.count(b"0") + text.count(b"<truncated>") <= 1001
    wide = {str(i): list(range(10)) for i in range(10_000)}
    out = enc.json_safe(wide, max_nodes=500)
    assert len(out) <= 51 and out["<truncated>"] == "<truncated>"
    # Within the budget nothing is cut.
    assert enc.json_safe(wide) == wide


def test_encode_budget_cuts_only_what_is_too_large_anyway() -> None:
    # The fallback's node budget never cuts a value that would fit in max_bytes: 400 small
    # ints plus one that forces the fallback encode whole within 2,000 bytes...
    message = {"properties": {"n": [0] * 400 + [2**70]}}
    data = enc.encode(message, max_bytes=2000)
    assert json.loads(data)["properties"]["n"][-1] == str(2**70)
    # ...and a value too big for max_bytes comes out (truncated) still bigger than max_bytes.
    data = enc.encode({"properties": {"n": [0] * 5000 + [2**70]}}, max_bytes=2000)
    assert len(data) > 2000


# --- lone surrogates -------------------------------------------------------------------------


def test_json_safe_replaces_lone_surrogates_in_keys_and_values() -> None:
    class Named:
        def __str__(self) -> str:
            return LONE

    value = {LONE: [LONE, "ok", "\ud83d\ude00"], "obj": Named()}
    out = enc.json_safe(value)
    assert out == {FIXED: [FIXED, "ok", "\U0001f600"], "obj": FIXED}
    assert json.loads(enc.encode(value)) == out


def test_surrogates_in_every_field_arrive_replaced(
    devserver: DevServer, start_instance: StartInstance
) -> None:
    inst = start_instance(
        api_key=KEY, host=devserver.url, global_properties={"global": LONE, LONE: "gk"}
    )
    with inst.context({"ctx": LONE}):
        ids = [
            inst.capture(LONE, LONE, {"p": LONE, LONE: 1}, groups={"company": LONE}),
            inst.identify(LONE, {"name": LONE}),
            inst.set(LONE, {"name": LONE}),
            inst.set_once(LONE, {LONE: "x"}),
            inst.alias(LONE, LONE + "-alias"),
            inst.group_identify("company", LONE, {"name": LONE}),
        ]
    assert all(ids)
    assert inst.flush(timeout=5)
    events = {e["uuid"]: e for e in devserver.events()}
    assert set(events) == set(ids)
    first = events[ids[0]]
    assert first["event"] == FIXED and first["distinct_id"] == FIXED
    props = first["properties"]
    assert props["p"] == FIXED and props[FIXED] == 1 and props["global"] == FIXED
    assert props["ctx"] == FIXED and props["$groups"] == {"company": FIXED}
    assert events[ids[1]]["properties"]["$set"] == {"name": FIXED}
    assert events[ids[2]]["raw"]["$set"] == {"name": FIXED}
    assert events[ids[3]]["raw"]["$set_once"] == {FIXED: "x"}
    assert events[ids[4]]["properties"]["alias"] == FIXED + "-alias"
    assert events[ids[5]]["properties"]["$group_key"] == FIXED
    assert "\udcff" not in json.dumps([e["raw"] for e in events.values()])
    assert assert_ledger(inst)["sent"] == 6


# --- the class: arbitrary JSON-hostile values --------------------------------------------------


class Hostile:
    """str() and repr() both raise."""

    def __str__(self) -> str:
        raise RuntimeError("no str")

    def __repr__(self) -> str:
        raise RuntimeError("no repr")


class SurrogateStr:
    def __str__(self) -> str:
        return LONE


surrogate_text = st.text(
    st.one_of(st.characters(), st.characters(categories=["Cs"])), max_size=8
)
leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**200), max_value=2**200),
    st.floats(allow_nan=True, allow_infinity=True),
    surrogate_text,
    st.binary(max_size=8),
    st.decimals(allow_nan=True, allow_infinity=True),
    st.sets(st.integers(), max_size=3),
    st.builds(Hostile),
    st.builds(SurrogateStr),
    st.builds(object),
)
keys = st.one_of(surrogate_text, st.integers(), st.none(), st.builds(Hostile))


@st.composite
def graphs(draw: st.DrawFn) -> Any:
    """A value whose containers reference each other at random: cycles, shared children."""
    kinds = draw(st.lists(st.sampled_from(["dict", "list", "node"]), min_size=1, max_size=6))
    nodes: list[Any] = [
        {} if kind == "dict" else [] if kind == "list" else Node("n") for kind in kinds
    ]
    child = st.one_of(leaves, st.integers(0, len(nodes) - 1).map(lambda i: nodes[i]))
    for node in nodes:
        for item in draw(st.lists(child, max_size=4)):
            if isinstance(node, dict):
                node[draw(keys)] = item
            elif isinstance(node, list):
                node.append(item)
            else:
                node.children.append(item)
    return nodes[0]


def chains(depth: int, double: bool) -> Any:
    # A huge int first: orjson fails at once and the fallback walks the value. (orjson itself
    # expands a DAG of plain values fully; see the report of issue 10.)
    value: Any = [2**70]
    for _ in range(depth):
        value = [value, value] if double else {"k": value}
    return value


hostile = st.one_of(
    leaves,
    graphs(),
    st.builds(chains, st.integers(0, 10_000), st.just(False)),  # deep nesting
    st.builds(chains, st.integers(0, 80), st.just(True)),  # 2**80 paths, no cycle
)


def test_hostile_values_never_hang_raise_or_go_uncounted(start_instance: StartInstance) -> None:
    # A 64 KiB event limit keeps each walk of a 2**80-path DAG short (its node budget follows).
    inst = start_instance(test_mode=True, max_event_bytes=65_536)

    @given(value=hostile, key=keys, name=surrogate_text.filter(bool), who=surrogate_text)
    def check(value: Any, key: Any, name: str, who: str) -> None:
        phactor.testing.clear(inst.name)
        dropped = dict(inst.stats()["dropped"])
        uuid = bounded(lambda: inst.capture(name, who or "u", {"v": value, key: value}))
        stats = assert_ledger(inst)
        if uuid is None:  # only ever because it is too large
            assert stats["dropped"]["event_too_large"] == dropped.get("event_too_large", 0) + 1
            return
        assert stats["dropped"] == dropped
        # The test-mode transport decoded what was queued with orjson.loads: strict UTF-8 JSON.
        sent = phactor.testing.events(inst.name)
        assert [e["uuid"] for e in sent] == [uuid]
        text = orjson.dumps(sent[0]).decode("utf-8")  # no lone surrogate survived decoding
        assert json.loads(text)["properties"]["$lib"] == "phactor"

    check()
    assert_ledger(inst)


# --- shared, acyclic containers: measured once, never written out 2**n times ------------------
#
# A value may legally reference one container from many places (no cycle). orjson writes it out
# once per reference: 41 dicts each referencing the next twice are 2**40 values. These run in a
# child bounded in time and memory (the old encoder ran for minutes and GiBs).

DAG_PROPERTIES_IN_A_CHILD = """
import faulthandler, json, time
from hypothesis import given, strategies as st
import conftest  # the suite's hypothesis profiles
from fuzz_support import CHILD_BOUND
from phactor import encoding as enc
from phactor import events as ev

faulthandler.dump_traceback_later(CHILD_BOUND, exit=True)  # a hang ends the child (the parent fails)

leaves = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=6),
)

@st.composite
def dags(draw):
    # Node i holds leaves and nodes below i: acyclic, and a node is often met more than once.
    nodes = []
    for kind in draw(st.lists(st.sampled_from(["dict", "list", "tuple"]), min_size=1, max_size=12)):
        child = leaves | st.sampled_from(nodes) if nodes else leaves
        items = draw(st.lists(child, max_size=4))
        if kind == "dict":
            nodes.append({f"k{i}": v for i, v in enumerate(items)})
        else:
            nodes.append(items if kind == "list" else tuple(items))
    value = nodes[-1]
    for _ in range(draw(st.integers(0, 70))):  # doubling: 2**70 values written out, no cycle
        value = [value, value] if draw(st.booleans()) else {"l": value, "r": value}
    return value

def count(value, memo):
    # values of `value` written out as a tree, each distinct container measured once
    if not isinstance(value, (dict, list, tuple)):
        return 1
    if id(value) not in memo:
        inner = value.values() if isinstance(value, dict) else value
        memo[id(value)] = 1 + sum(count(v, memo) for v in inner)
    return memo[id(value)]

def expand(value):
    if isinstance(value, dict):
        return {k: expand(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [expand(v) for v in value]
    return value

@given(value=dags(), max_bytes=st.sampled_from([256, 4096, 65536]))
def run(value, max_bytes):
    message = {"event": "e", "properties": {"v": value}}
    start = time.monotonic()
    try:
        data = enc.encode(message, max_bytes)
    except enc.EventTooLarge as error:
        data, size = None, error.size
    took = time.monotonic() - start
    assert took < 2.0, took
    if count(value, {}) > max_bytes // 2 + 2:  # JSON spends at least 2 bytes a value
        assert data is None or len(data) > max_bytes
        return
    wanted = json.dumps(
        {"event": "e", "properties": {"v": expand(value)}}, separators=(",", ":"), ensure_ascii=False
    )
    if len(wanted.encode()) <= max_bytes:
        # Small enough: sent in full, each shared container written where it is referenced.
        assert data is not None, (size, len(wanted))
        assert json.loads(data) == json.loads(wanted)
    else:
        assert data is None or len(data) > max_bytes

run()
"""


def test_shared_acyclic_values_are_sent_in_full_or_measured_as_too_large() -> None:
    run_script(DAG_PROPERTIES_IN_A_CHILD)


DAG_41 = """
import time
from phactor import encoding as enc
from phactor import events as ev
node = {}
for _ in range(40):  # 41 containers, no cycle: 2**40 values written out
    node = {"a": node, "b": node}
listed = []
for _ in range(30):  # 3**30 values; 60 levels deep (json_safe's depth cap is 64)
    listed = [listed, (listed, listed)]
for value in (node, listed):
    start = time.monotonic()
    try:
        enc.encode({"event": "e", "properties": {"dag": value}}, 900 * 1024)
    except enc.EventTooLarge as error:
        assert error.size > 900 * 1024, error.size
    else:
        raise AssertionError("a value of 2**40 values was encoded")
    assert time.monotonic() - start < 5.0
"""


def test_a_shared_acyclic_graph_is_measured_not_written_out() -> None:
    run_script(DAG_41, timeout=60, memory_mb=1024)


END_TO_END_IN_A_CHILD = """
import json, resource, time
resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))  # the old encoder grew for ever
import phactor
from phactor.devserver import DevServer

node = {}
for _ in range(40):
    node = {"a": node, "b": node}
pair = [1, "two"]
small = {"first": pair, "second": pair, "both": [pair, pair]}  # legal data: sent in full

def hook(event):
    if event["event"] == "swap":
        event["properties"]["from_hook"] = node
    return event

MATCH = {  # a local flag comparing the person property "dag" as JSON text
    "id": 1, "key": "local", "active": True,
    "filters": {"groups": [{
        "properties": [{"key": "dag", "value": "x", "operator": "icontains", "type": "person"}],
        "rollout_percentage": 100,
    }]},
}

with DevServer(flags={"f": True}, flag_definitions=[MATCH], personal_api_key="phx_json") as server:
    inst = phactor.start(
        "dag", api_key="phc_json", host=server.url, before_send=hook,
        global_properties={"g": small}, personal_api_key="phx_json", poll_interval=60.0,
    )
    assert inst.reload_feature_flags() is True
    timings = {}
    def timed(name, call):
        start = time.monotonic()
        result = call()
        timings[name] = time.monotonic() - start
        return result
    out = {
        "small": timed("small", lambda: inst.capture("small", "u1", {"v": small})),
        "dag": timed("dag", lambda: inst.capture("dag", "u1", {"v": node})),
        "set": timed("set", lambda: inst.identify("u1", {"v": node})),
        "swap": timed("swap", lambda: inst.capture("swap", "u1", {"v": 1})),
    }
    with inst.context({"ctx": node}):
        out["ctx"] = timed("ctx", lambda: inst.capture("ctx", "u1"))
    out["exception"] = timed(
        "exception", lambda: inst.capture_exception(ValueError("x"), "u1", {"dag": node})
    )
    flag = timed(
        "flag", lambda: inst.get_feature_flag("f", "u1", person_properties={"dag": node})
    )
    local = timed(
        "local", lambda: inst.get_feature_flag(
            "local", "u1", person_properties={"dag": node}, only_evaluate_locally=True
        )
    )
    assert inst.flush(timeout=20)
    stats = inst.stats()
    events = {e["event"]: e["properties"] for e in server.events()}
    phactor.stop("dag", timeout=5)
print(json.dumps({
    "out": out, "stats": stats, "events": events, "timings": timings, "flag": flag, "local": local,
}))
"""


def test_shared_values_end_to_end_arrive_or_are_counted() -> None:
    script = textwrap.dedent(END_TO_END_IN_A_CHILD)
    env = {**os.environ, "PYTHONPATH": REPO}
    try:
        done = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=90
        )
    except subprocess.TimeoutExpired:
        pytest.fail("a capture of a shared (acyclic) value did not return within 90 s")
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.splitlines()[-1])
    out, stats, events = result["out"], result["stats"], result["events"]
    assert all(took < 5.0 for took in result["timings"].values()), result["timings"]
    small = {"first": [1, "two"], "second": [1, "two"], "both": [[1, "two"], [1, "two"]]}
    assert events["small"]["v"] == small and events["small"]["g"] == small
    # Too large written out: dropped at capture, counted, never queued.
    for name in ("dag", "set", "swap", "ctx"):
        assert out[name] is None, name
    assert not {"dag", "$identify", "swap", "ctx"} & set(events), sorted(events)
    assert stats["dropped"] == {"event_too_large": 4}, stats
    # Error tracking copies what the app supplied with its own bounded walk (cut, not dropped).
    assert out["exception"] is not None
    assert "<truncated>" in json.dumps(events["$exception"]["dag"])
    assert result["flag"] is True
    # Matching a shared value as JSON text: not comparable (2**40 values), never a hang.
    assert result["local"] in (False, None)
    assert stats["captured"] == stats["sent"] + sum(stats["dropped"].values()) + stats["queued"]


OLD_TUPLE_DAG = """
import gc
from phactor import encoding as enc
from phactor import events as ev
shared = ()
for _ in range(30):  # 2**30 values written out; tuples of untracked values get untracked
    shared = (shared, shared)
for _ in range(31):  # one level per collection: an old tuple DAG ends untracked whole
    gc.collect()
assert not gc.is_tracked(shared)
try:
    enc.encode({"event": "e", "properties": {"v": shared}}, 900 * 1024)
except enc.EventTooLarge:
    pass
"""


@pytest.mark.xfail(
    reason="known gap (events.py): CPython untracks a tuple of untracked values, one level per "
    "collection, so a shared tuple DAG that survived as many full collections as it is deep "
    "passes the gc.is_tracked gate and orjson writes it out; closing it costs the flat fast "
    "path a type check per value (~+5% capture)",
    strict=False,
)
def test_an_old_untracked_tuple_dag_is_measured() -> None:
    run_script(OLD_TUPLE_DAG, timeout=30, memory_mb=512)
