"""Error tracking under hostile input: cyclic values, lone surrogates, odd exception objects.

Every logged exception is either sent or counted in `stats()["dropped"]`, within a bound, and
the LoggerHandler stays alive for the next one (issue 10, defects 1 and 2).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
from typing import Any

import pytest
from conftest import assert_ledger, exception_events, wait_until
from hypothesis import given
from hypothesis import strategies as st

import phactor
from phactor.devserver import DevServer
from phactor.errortracking import wire

log = logging.getLogger("app.hostile")

CYCLE_MARKER = "<cycle>"  # wire.CYCLE_MARKER
SURROGATE = os.fsdecode(b"\xff")  # "\udcff": a non-UTF-8 file name, decoded as Python does


def cyclic_dict() -> dict[str, Any]:
    d: dict[str, Any] = {}
    d["a"] = d
    d["b"] = d  # two ways back per level: 2**64 paths for a depth-capped walk
    return d


def cyclic_list() -> list[Any]:
    lst: list[Any] = []
    lst.append(lst)
    lst.append(lst)
    return lst


# -- the pure part: linear-time copy --------------------------------------------------------------


def test_wire_safe_cuts_cycles_and_replaces_surrogates():
    wire_safe, clean_text = wire.wire_safe, wire.clean_text
    assert wire.CYCLE_MARKER == CYCLE_MARKER
    d = cyclic_dict()
    assert wire_safe(d) == {"a": CYCLE_MARKER, "b": CYCLE_MARKER}
    assert wire_safe(cyclic_list()) == [CYCLE_MARKER, CYCLE_MARKER]
    shared = [1, 2]
    assert wire_safe({"x": shared, "y": shared}) == {"x": [1, 2], "y": [1, 2]}  # not a cycle
    assert wire_safe({SURROGATE: [SURROGATE, b"\xff"]}) == {"\ufffd": ["\ufffd", "\ufffd"]}
    assert clean_text("ok") == "ok"
    assert clean_text("a\ud83d\ude00b") == "a\ufffd\ufffdb"


def test_wire_safe_is_linear_on_a_shared_diamond():
    # Not a cycle: the same list twice per level, 64 levels (2**64 paths when walked as a tree).
    node: list[Any] = []
    for _ in range(64):
        node = [node, node]
    result = wire.wire_safe({"x": node})
    assert json.dumps(result)  # bounded in size too


# -- end to end ------------------------------------------------------------------------------------


def test_cyclic_values_do_not_wedge_the_logger_handler(devserver: DevServer, tmp_path):
    # A subprocess: on the unfixed code the LoggerHandler spins for ever (and grows memory).
    script = tmp_path / "cyclic.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import json, logging, phactor
            from phactor.errortracking import capture_exception

            inst = phactor.start(host={devserver.url!r}, api_key="phc_cyclic", flush_interval=60)
            log = logging.getLogger("app")
            d = {{}}
            d["a"] = d
            d["b"] = d
            lst = []
            lst.append(lst)
            lst.append(lst)
            try:
                raise ValueError("cyclic extra")
            except ValueError:
                log.exception("failed", extra={{"x": d, "y": lst}})
            try:
                raise KeyError("cyclic properties")
            except KeyError as error:
                capture_exception(error, "u1", properties={{"x": d}})
            err = RuntimeError(d)  # cyclic args too
            err.payload = d
            try:
                raise err
            except RuntimeError:
                log.exception("cyclic args")
            try:
                raise TypeError("the next one")
            except TypeError:
                log.exception("after")
            print(json.dumps({{"flushed": inst.flush(10), "stats": inst.stats()}}))
            """
        )
    )
    proc = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": os.getcwd()},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["flushed"] is True
    assert result["stats"]["sent"] == 4, result
    events = {e["properties"]["$exception_list"][0]["type"]: e for e in devserver.events()}
    assert set(events) == {"ValueError", "KeyError", "RuntimeError", "TypeError"}
    assert events["ValueError"]["properties"]["x"] == {"a": CYCLE_MARKER, "b": CYCLE_MARKER}
    assert events["ValueError"]["properties"]["y"] == [CYCLE_MARKER, CYCLE_MARKER]
    assert events["KeyError"]["properties"]["x"] == {"a": CYCLE_MARKER, "b": CYCLE_MARKER}


def _frame_in_a_file_named(name: str) -> None:
    code = compile("def boom():\n    raise OSError('x')\n", name, "exec")
    namespace: dict[str, Any] = {}
    exec(code, namespace)
    namespace["boom"]()


def test_lone_surrogates_are_replaced_and_sent(devserver: DevServer, start_instance):
    inst = start_instance(host=devserver.url, api_key="phc_surrogates", flush_interval=60)
    try:
        raise ValueError(SURROGATE)
    except ValueError:
        log.exception("message " + SURROGATE, extra={SURROGATE: SURROGATE, "v": [SURROGATE]})
    try:
        _frame_in_a_file_named(f"/srv/app/{SURROGATE}.py")
    except OSError:
        log.exception("path")
    assert inst.flush(10)
    assert devserver.wait_for(2, timeout=10)
    by_type = {e["properties"]["$exception_list"][0]["type"]: e for e in devserver.events()}
    props = by_type["ValueError"]["properties"]
    assert props["$exception_list"][0]["value"] == "\ufffd"
    assert props["log_message"] == "message \ufffd"
    assert props["\ufffd"] == "\ufffd"
    assert props["v"] == ["\ufffd"]
    frames = by_type["OSError"]["properties"]["$exception_list"][0]["stacktrace"]["frames"]
    assert frames[-1]["abs_path"] == "/srv/app/\ufffd.py"
    assert frames[-1]["filename"] == "\ufffd.py"
    stats = assert_ledger(inst)
    assert stats["dropped"] == {}


# -- property: any exception object is sent or counted, and the handler lives on -------------------


class RaisingStr(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no str for you")

    def __repr__(self) -> str:
        raise RuntimeError("no repr either")


class Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no str")

    __repr__ = __str__


def _recurse(n: int) -> None:
    if n <= 0:
        raise RecursionError("deep")
    _recurse(n - 1)


def _deep_traceback() -> BaseException:
    try:
        _recurse(900)
    except RecursionError as error:
        return error
    raise AssertionError("unreachable")


messages = st.one_of(
    st.text(max_size=20),
    st.just(SURROGATE),
    st.builds(lambda a, b: a + "\udc80" + b, st.text(max_size=5), st.text(max_size=5)),
)


@st.composite
def exception_objects(draw: st.DrawFn) -> BaseException:
    kind = draw(st.sampled_from(["plain", "raising_str", "deep", "args"]))
    exc: BaseException
    if kind == "raising_str":
        exc = RaisingStr()
    elif kind == "deep":
        exc = _deep_traceback()
    elif kind == "args":
        exc = ValueError(draw(st.sampled_from([cyclic_dict(), cyclic_list(), Unprintable()])))
    else:
        exc = ValueError(draw(messages))
    chain = draw(st.sampled_from(["none", "cause_cycle", "context_cycle", "self", "group"]))
    if chain == "cause_cycle":
        other = KeyError(draw(messages))
        exc.__cause__, other.__cause__ = other, exc
    elif chain == "context_cycle":
        other = OSError(draw(messages))
        exc.__context__, other.__context__ = other, exc
    elif chain == "self":
        exc.__cause__ = exc
    elif chain == "group":
        inner = ExceptionGroup(draw(messages), [exc, exc, TypeError("t")])
        exc = BaseExceptionGroup("outer", [inner, ExceptionGroup("again", [inner])])
    if draw(st.booleans()):
        exc.attribute = cyclic_dict()  # type: ignore[attr-defined]
    return exc


extras = st.one_of(
    st.none(),
    st.just({"cyclic": cyclic_dict()}),
    st.just({"cyclic": cyclic_list()}),
    st.just({"unprintable": Unprintable(), "nested": {"x": [Unprintable(), 2**70]}}),
    st.dictionaries(messages.filter(lambda k: k and not k.startswith("_")), messages, max_size=3),
)


@pytest.fixture(scope="module")
def fuzz_instance() -> Any:
    inst = phactor.start(
        f"hostile-{os.getpid()}",
        test_mode=True,
        exception_rate_limit_burst=10_000,
        exception_rate_limit_per_second=1000.0,
    )
    yield inst
    inst.stop(timeout=5)


@given(
    exc=exception_objects(),
    extra=extras,
    message=messages,
    how=st.sampled_from(["log", "capture_exception"]),
)
def test_any_logged_exception_is_sent_or_counted(fuzz_instance, exc, extra, message, how):
    inst = fuzz_instance
    before = inst.stats()
    before_events = len(exception_events(inst))
    try:
        raise exc
    except BaseException as error:
        if how == "log":
            log.exception(message, extra=extra)
        else:  # asked: returns within its bound, with the uuid or None (then counted)
            inst.capture_exception(error, message or None, properties=extra)
    # Bounded: a wedged LoggerHandler makes this drain time out instead of hanging.
    assert wait_until(lambda: inst._error_tracking_drain(5.0), timeout=10)
    after = assert_ledger(inst)
    sent_now = len(exception_events(inst)) - before_events
    dropped_now = sum(after["dropped"].values()) - sum(before["dropped"].values())
    assert sent_now + dropped_now == 1, (after, before)
    assert inst.children().get("logger_handler") is True


def test_the_logger_handler_survives_the_fuzz_run_and_still_captures(start_test_mode):
    inst = start_test_mode()
    try:
        raise ValueError("first")
    except ValueError:
        log.exception("first", extra={"x": cyclic_dict()})
    try:
        raise KeyError("second")
    except KeyError:
        log.exception("second")
    events = exception_events(inst)
    assert [e["properties"]["$exception_list"][0]["type"] for e in events] == [
        "ValueError",
        "KeyError",
    ]
