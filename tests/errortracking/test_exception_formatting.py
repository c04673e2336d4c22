"""Tests for phactor.errortracking.formatting: real exceptions in, `$exception_list` out.

The `posthog` package is the oracle for the wire shape: its own formatting functions, and a real
`posthog.Client` posting to a loopback server, describe the same exception objects as ours.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
from pathlib import Path
from typing import Any

import orjson
import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st
from posthog import exception_utils as ph

from phactor.errortracking import (
    SourceCache,
    call_site_fingerprint,
    exception_level,
    exception_list,
    exception_properties,
    is_in_app,
    message_exception_list,
    message_exception_properties,
    traceback_of_caller,
)

THIS_FILE = os.path.abspath(__file__)
PROJECT_ROOT = str(Path(__file__).resolve().parents[2])
SOURCE_LINES = Path(THIS_FILE).read_text(encoding="utf-8").splitlines()


def line_of(marker: str) -> int:
    """1-based line number of the single line in this file ending with `# <marker>`."""
    hits = [i + 1 for i, text in enumerate(SOURCE_LINES) if text.rstrip().endswith(f"# {marker}")]
    assert len(hits) == 1, (marker, hits)
    return hits[0]


def caught(fn, *args) -> BaseException:
    try:
        fn(*args)
    except BaseException as exc:
        return exc
    raise AssertionError("did not raise")


# -- functions that fail at known lines ------------------------------------------------------


def fail_value(message: str = "bad value") -> None:
    raise ValueError(message)  # crash:value


def wrap_with_cause() -> None:
    try:
        fail_value("inner")
    except ValueError as exc:
        raise RuntimeError("outer") from exc  # crash:cause


def wrap_with_context() -> None:
    try:
        fail_value("inner")
    except ValueError:
        raise KeyError("during handling")  # noqa: B904  # crash:context


def wrap_suppressed() -> None:
    try:
        fail_value("inner")
    except ValueError:
        raise LookupError("clean") from None  # crash:suppressed


def explicit_cause_over_context() -> None:
    other = OSError(2, "other")
    try:
        fail_value("context")
    except ValueError:
        raise TypeError("typed") from other


def nested_group() -> None:
    inner = ExceptionGroup("inner", [TypeError("t"), caught(fail_value, "in group")])
    raise ExceptionGroup("outer", [ValueError("v"), inner])  # crash:group


def recurse(n: int) -> None:
    if n == 0:
        raise ZeroDivisionError("bottom")  # crash:recursion
    recurse(n - 1)


def parse_json() -> None:
    json.loads("{not json")


def prepare_bad_request() -> None:
    requests.Request("GET", "not a url").prepare()


class BrokenStr(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no str for you")


class BrokenEverything(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no str")

    def __repr__(self) -> str:
        raise RuntimeError("no repr")


def frames_of(entry: dict[str, Any]) -> list[dict[str, Any]]:
    return entry["stacktrace"]["frames"]


FRAME_KEYS = {
    "platform",
    "filename",
    "abs_path",
    "function",
    "module",
    "lineno",
    "pre_context",
    "context_line",
    "post_context",
    "in_app",
}


# -- chains -----------------------------------------------------------------------------------


def test_single_exception_frames_run_outermost_to_crash_site_with_source_context():
    exc = caught(fail_value)

    [entry] = exception_list(exc, handled=True, project_root=PROJECT_ROOT)

    assert entry["type"] == "ValueError"
    assert entry["value"] == "bad value"
    assert entry["module"] is None
    assert entry["mechanism"] == {
        "type": "generic",
        "handled": True,
        "synthetic": False,
        "exception_id": 0,
    }
    assert entry["stacktrace"]["type"] == "raw"
    frames = frames_of(entry)
    assert [f["function"] for f in frames] == ["caught", "fail_value"]
    crash = frames[-1]
    assert set(crash) == FRAME_KEYS
    lineno = line_of("crash:value")
    assert crash["lineno"] == lineno
    assert crash["platform"] == "python"
    assert crash["abs_path"] == THIS_FILE
    assert crash["filename"] == os.path.basename(THIS_FILE)
    assert crash["module"] == __name__
    assert crash["context_line"] == SOURCE_LINES[lineno - 1]
    assert crash["pre_context"] == SOURCE_LINES[lineno - 6 : lineno - 1]
    assert crash["post_context"] == SOURCE_LINES[lineno : lineno + 5]
    assert crash["in_app"] is True


def test_raise_from_lists_the_cause_after_its_wrapper():
    exc = caught(wrap_with_cause)

    entries = exception_list(exc, handled=False, mechanism_type="onuncaughtexception")

    assert [(e["type"], e["value"]) for e in entries] == [
        ("RuntimeError", "outer"),
        ("ValueError", "inner"),
    ]
    assert entries[0]["mechanism"] == {
        "type": "onuncaughtexception",
        "handled": False,
        "synthetic": False,
        "exception_id": 0,
    }
    assert entries[1]["mechanism"] == {
        "type": "chained",
        "synthetic": False,
        "source": "cause",
        "parent_id": 0,
        "exception_id": 1,
    }
    assert frames_of(entries[0])[-1]["lineno"] == line_of("crash:cause")
    assert frames_of(entries[1])[-1]["lineno"] == line_of("crash:value")


def test_implicit_context_is_linked_as_context():
    entries = exception_list(caught(wrap_with_context), handled=True)

    assert [e["type"] for e in entries] == ["KeyError", "ValueError"]
    assert entries[1]["mechanism"]["source"] == "context"
    assert frames_of(entries[0])[-1]["lineno"] == line_of("crash:context")


def test_suppressed_context_is_left_out():
    entries = exception_list(caught(wrap_suppressed), handled=True)

    assert [e["type"] for e in entries] == ["LookupError"]
    assert frames_of(entries[0])[-1]["lineno"] == line_of("crash:suppressed")


def test_explicit_cause_wins_over_context_and_errno_is_kept():
    entries = exception_list(caught(explicit_cause_over_context), handled=True)

    assert [(e["type"], e["mechanism"].get("source")) for e in entries] == [
        ("TypeError", None),
        ("FileNotFoundError", "cause"),
    ]
    assert entries[1]["mechanism"]["meta"] == {"errno": {"number": 2}}
    assert "stacktrace" not in entries[1]  # never raised: no frames to show


def test_nested_exception_groups_list_members_depth_first_with_parent_links():
    exc = caught(nested_group)

    entries = exception_list(exc, handled=True)

    summary = [
        (e["type"], e["mechanism"]["exception_id"], e["mechanism"].get("parent_id"))
        for e in entries
    ]
    assert summary == [
        ("ExceptionGroup", 0, None),
        ("ValueError", 1, 0),
        ("ExceptionGroup", 2, 0),
        ("TypeError", 3, 2),
        ("ValueError", 4, 2),
    ]
    assert [e["mechanism"].get("source") for e in entries[1:]] == ["member"] * 4
    assert entries[0]["mechanism"]["is_exception_group"] is True
    assert entries[2]["mechanism"]["is_exception_group"] is True
    assert frames_of(entries[0])[-1]["lineno"] == line_of("crash:group")
    assert frames_of(entries[4])[-1]["lineno"] == line_of("crash:value")


def test_cycles_terminate_and_each_exception_is_listed_once():
    a, b = ValueError("a"), TypeError("b")
    a.__context__ = b
    b.__context__ = a
    group = ExceptionGroup("g", [a, a, b])
    a.__cause__ = group  # a cycle through a group

    entries = exception_list(group, handled=True)

    assert sorted(e["type"] for e in entries) == ["ExceptionGroup", "TypeError", "ValueError"]


def test_huge_chains_and_groups_are_bounded():
    exc: BaseException = ValueError("root")
    for i in range(500):
        nxt = ValueError(f"link {i}")
        nxt.__cause__ = exc
        exc = nxt
    assert len(exception_list(exc, handled=True)) == 50
    assert len(exception_list(exc, handled=True, max_exceptions=7)) == 7

    group = ExceptionGroup("many", [ValueError(str(i)) for i in range(20_000)])
    entries = exception_list(group, handled=True, max_exceptions=30)
    assert len(entries) == 30
    assert [e["value"] for e in entries[1:4]] == ["0", "1", "2"]


# -- frames -----------------------------------------------------------------------------------


def test_deep_recursion_keeps_outermost_and_innermost_frames():
    exc = caught(recurse, 300)

    [entry] = exception_list(exc, handled=True, max_frames=20)

    frames = frames_of(entry)
    assert len(frames) == 20
    assert frames[0]["function"] == "caught"
    assert [f["function"] for f in frames[1:]] == ["recurse"] * 19
    assert frames[-1]["lineno"] == line_of("crash:recursion")


def test_real_recursion_error_is_capped_by_default():
    def forever(n: int) -> int:
        return forever(n + 1) + 1

    exc = caught(forever, 0)
    assert isinstance(exc, RecursionError)

    [entry] = exception_list(exc, handled=True)

    frames = frames_of(entry)
    assert len(frames) == 100
    assert frames[0]["function"] == "caught"
    assert frames[-1]["function"] == "forever"


def test_total_frame_budget_across_a_group_keeps_each_crash_site():
    group = ExceptionGroup("deep", [caught(recurse, 150) for _ in range(10)])

    entries = exception_list(group, handled=True)

    counts = [len(frames_of(e)) for e in entries[1:]]
    assert "stacktrace" not in entries[0]  # the group itself was never raised
    # each exception keeps at least its crash site, so the budget is exceeded by at most one a piece
    assert counts == [100, 100, 100, 100] + [1] * 6
    assert all(c >= 1 for c in counts)
    assert all(frames_of(e)[-1]["lineno"] == line_of("crash:recursion") for e in entries[1:])


def test_in_app_marks_site_packages_and_stdlib_frames_false_and_project_frames_true():
    req_exc = caught(prepare_bad_request)
    json_exc = caught(parse_json)

    req_entry = exception_list(req_exc, handled=True, project_root=PROJECT_ROOT)[0]
    json_entry = exception_list(json_exc, handled=True, project_root=PROJECT_ROOT)[0]

    by_place = {
        (f["module"].split(".")[0], f["in_app"])
        for f in frames_of(req_entry) + frames_of(json_entry)
    }
    assert (__name__, True) in by_place
    assert ("requests", False) in by_place
    assert ("json", False) in by_place
    assert ("requests", True) not in by_place
    assert ("json", True) not in by_place
    requests_frame = next(f for f in frames_of(req_entry) if f["module"].startswith("requests"))
    assert "site-packages" in requests_frame["abs_path"]
    assert requests_frame["filename"].startswith("requests" + os.sep)
    assert requests_frame["context_line"]  # third-party source is shown too


def test_in_app_modules_claim_third_party_frames():
    exc = caught(prepare_bad_request)

    entry = exception_list(exc, handled=True, in_app_modules=("requests",))[0]

    third_party = [f for f in frames_of(entry) if f["module"].startswith("requests.")]
    assert third_party
    assert all(f["in_app"] for f in third_party)


def test_frames_outside_a_given_project_root_are_not_in_app():
    exc = caught(fail_value)

    [outside] = exception_list(exc, handled=True, project_root="/somewhere/else")
    [no_root] = exception_list(exc, handled=True, project_root=None)

    assert [f["in_app"] for f in frames_of(outside)] == [False, False]
    assert [f["in_app"] for f in frames_of(no_root)] == [True, True]


@pytest.mark.parametrize(
    ("module", "path", "kwargs", "expected"),
    [
        (
            "myapp.views",
            "/venv/lib/python3.11/site-packages/myapp/views.py",
            {"in_app_modules": ("myapp",)},
            True,
        ),
        (
            "myappx.views",
            "/venv/lib/python3.11/site-packages/myappx/views.py",
            {"in_app_modules": ("myapp",)},
            False,
        ),
        ("lib", "/usr/lib/python3/dist-packages/lib.py", {}, False),
        ("lib", r"C:\venv\Lib\site-packages\lib.py", {}, False),
        ("app", "/app/app.py", {"project_root": "/app"}, True),
        ("app", "/app/app.py", {"project_root": "/app/"}, True),
        ("other", "/application/other.py", {"project_root": "/app"}, False),
        ("x", "/srv/x.py", {}, True),
        ("importlib._bootstrap", "<frozen importlib._bootstrap>", {}, False),
        ("__main__", "<string>", {}, True),
        ("__main__", "<string>", {"project_root": "/app"}, False),
        (None, None, {}, False),
        ("json.decoder", json.decoder.__file__, {}, False),
        ("logging", logging.__file__, {"project_root": "/"}, False),
    ],
)
def test_is_in_app_rules(module, path, kwargs, expected):
    assert is_in_app(module, path, **kwargs) is expected


# -- odd inputs -------------------------------------------------------------------------------


def test_exception_whose_str_raises_falls_back_to_repr():
    entries = exception_list(caught(lambda: (_ for _ in ()).throw(BrokenStr())), handled=True)
    assert entries[0]["type"] == "BrokenStr"
    assert entries[0]["value"] == "BrokenStr()"

    [entry] = exception_list(BrokenEverything(), handled=True)
    assert entry["value"] == "<unprintable BrokenEverything object>"
    assert entry["type"] == "BrokenEverything"
    assert entry["module"] == __name__


def test_code_without_a_source_file_is_described_without_context():
    namespace: dict[str, Any] = {"__name__": "generated"}
    exec(compile("def boom():\n    raise ValueError('gen')\n", "<string>", "exec"), namespace)
    exec(
        compile("def gone():\n    raise ValueError('gone')\n", "/no/such/dir/gone.py", "exec"),
        namespace,
    )

    [gen] = exception_list(caught(namespace["boom"]), handled=True)
    [gone] = exception_list(caught(namespace["gone"]), handled=True)

    gen_frame, gone_frame = frames_of(gen)[-1], frames_of(gone)[-1]
    assert (gen_frame["abs_path"], gen_frame["filename"], gen_frame["lineno"]) == (
        "<string>",
        "<string>",
        2,
    )
    assert gen_frame["module"] == "generated"
    assert (gen_frame["context_line"], gen_frame["pre_context"]) == (None, [])
    assert (gone_frame["abs_path"], gone_frame["lineno"], gone_frame["context_line"]) == (
        "/no/such/dir/gone.py",
        2,
        None,
    )
    assert gone_frame["filename"] == "gone.py"


def test_never_raises_on_things_that_are_not_exceptions():
    [entry] = exception_list("not an exception", handled=True)  # type: ignore[arg-type]
    assert (entry["type"], entry["value"]) == ("str", "not an exception")


def test_huge_messages_and_lines_are_cut_to_their_byte_caps():
    exc = caught(fail_value, "é" * 100_000)

    def loader(path: str) -> list[str]:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
        if path == THIS_FILE:
            lines = [line + "  # " + "ж" * 3000 for line in lines]
        return lines

    [entry] = exception_list(exc, handled=True, sources=SourceCache(loader=loader))

    assert len(entry["value"].encode()) <= 8192
    assert entry["value"].endswith("...")
    crash = frames_of(entry)[-1]
    for line in [crash["context_line"], *crash["pre_context"], *crash["post_context"]]:
        assert len(line.encode()) <= 1024
        assert line.endswith("...")
    assert crash["context_line"].startswith(SOURCE_LINES[crash["lineno"] - 1])


def test_a_never_raised_exception_can_borrow_the_callers_stack_as_synthetic():
    exc = ValueError("never raised")

    [bare] = exception_list(exc, handled=True)
    [synthetic] = exception_list(exc, handled=True, synthetic_traceback=traceback_of_caller())

    assert "stacktrace" not in bare
    assert synthetic["mechanism"]["synthetic"] is True
    last = frames_of(synthetic)[-1]
    assert (
        last["function"]
        == "test_a_never_raised_exception_can_borrow_the_callers_stack_as_synthetic"
    )
    assert len(frames_of(synthetic)) > 3  # pytest's own frames lead here


# -- SourceCache --------------------------------------------------------------------------------


def test_source_cache_is_a_bounded_lru_that_caches_failures():
    calls: list[str] = []

    def loader(path: str) -> list[str]:
        calls.append(path)
        if path == "missing":
            raise FileNotFoundError(path)
        return [f"{path} line 1\n", f"{path} line 2\r\n"]

    cache = SourceCache(max_files=2, loader=loader)

    assert cache.lines("a") == ("a line 1", "a line 2")
    cache.lines("b")
    cache.lines("a")  # a is now the most recent
    cache.lines("c")  # evicts b
    assert "b" not in cache
    assert len(cache) == 2
    cache.lines("a")
    assert calls == ["a", "b", "c"]
    assert cache.lines("missing") == ()
    assert cache.lines("missing") == ()
    assert calls.count("missing") == 1


def test_source_cache_rejects_a_bad_size():
    with pytest.raises(TypeError):
        SourceCache(max_files=0)


def test_default_loader_decodes_per_encoding_cookie(tmp_path):
    src = tmp_path / "latin.py"
    src.write_bytes(b"# -*- coding: latin-1 -*-\ns = '\xe9'\n")
    assert SourceCache().lines(str(src)) == ("# -*- coding: latin-1 -*-", "s = 'é'")
    assert SourceCache().lines(str(tmp_path / "absent.py")) == ()


# -- properties ---------------------------------------------------------------------------------


def test_exception_properties_for_an_uncaught_exception():
    props = exception_properties(
        caught(wrap_with_cause),
        level="fatal",
        source="sys.excepthook",
        handled=False,
        mechanism_type="onuncaughtexception",
    )

    assert set(props) == {"$exception_list", "$exception_level", "$exception_source"}
    assert props["$exception_level"] == "fatal"
    assert props["$exception_source"] == "sys.excepthook"
    assert props["$exception_list"][0]["mechanism"]["handled"] is False
    assert orjson.loads(orjson.dumps(props)) == props  # plain JSON data only


def test_exception_properties_fingerprint_is_optional():
    props = exception_properties(caught(fail_value), fingerprint="checkout-timeout")
    assert props["$exception_fingerprint"] == "checkout-timeout"
    assert "$exception_source" not in props


@pytest.mark.parametrize(
    ("level", "expected"),
    [
        ("CRITICAL", "fatal"),
        ("error", "error"),
        ("WARN", "warning"),
        ("nonsense", "error"),
        (logging.CRITICAL, "fatal"),
        (logging.ERROR, "error"),
        (logging.WARNING, "warning"),
        (logging.INFO, "info"),
        (logging.DEBUG, "debug"),
        (None, "error"),
    ],
)
def test_exception_level_mapping(level, expected):
    assert exception_level(level) == expected


# -- error records without an exception ----------------------------------------------------------


class ListHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def records():
    handler = ListHandler()
    log = logging.getLogger("phactor_test.checkout")
    log.addHandler(handler)
    log.propagate = False
    yield handler.records, log
    log.removeHandler(handler)
    log.propagate = True


def charge(log: logging.Logger, user: str) -> None:
    log.error("payment failed for %s", user)  # log:charge


def refund(log: logging.Logger, user: str) -> None:
    log.error("payment failed for %s", user)


def props_for(record: logging.LogRecord) -> dict[str, Any]:
    return message_exception_properties(
        record.getMessage(),
        logger_name=record.name,
        function=record.funcName,
        pathname=record.pathname,
        lineno=record.lineno,
        level=record.levelname,
        module=record.module,
        project_root=PROJECT_ROOT,
    )


def test_message_records_group_by_call_site_not_by_message(records):
    recs, log = records
    charge(log, "alice")
    charge(log, "bob")
    refund(log, "alice")

    first, second, other = (props_for(r) for r in recs)

    assert first["$exception_fingerprint"] == second["$exception_fingerprint"]
    assert first["$exception_fingerprint"] != other["$exception_fingerprint"]
    assert first["$exception_level"] == "error"
    assert first["$exception_source"] == "logging"
    [entry] = first["$exception_list"]
    assert entry["type"] == "phactor_test.checkout"
    assert entry["value"] == "payment failed for alice"
    assert entry["mechanism"] == {
        "type": "generic",
        "handled": True,
        "synthetic": True,
        "exception_id": 0,
    }
    [frame] = frames_of(entry)
    assert set(frame) == FRAME_KEYS
    assert (frame["function"], frame["lineno"]) == ("charge", line_of("log:charge"))
    assert frame["context_line"] == SOURCE_LINES[line_of("log:charge") - 1]
    assert frame["in_app"] is True
    # the frames of both records are the same, so PostHog's own grouping agrees too
    assert frames_of(second["$exception_list"][0]) == [frame]


def test_call_site_fingerprint_ignores_directory_and_line_but_not_logger_or_level():
    base = call_site_fingerprint("app", "/srv/a/views.py", "index", "error")
    assert call_site_fingerprint("app", "/other/deploy/views.py", "index", "ERROR") == base
    assert call_site_fingerprint("app2", "/srv/a/views.py", "index", "error") != base
    assert call_site_fingerprint("app", "/srv/a/views.py", "index", "critical") != base
    assert call_site_fingerprint(None, None, None) == call_site_fingerprint("root", "", "")


def test_message_exception_list_tolerates_missing_fields():
    [entry] = message_exception_list(
        "x", logger_name=None, function=None, pathname=None, lineno=None
    )
    assert entry["type"] == "root"
    [frame] = frames_of(entry)
    assert (frame["abs_path"], frame["function"], frame["context_line"]) == (
        None,
        "<unknown>",
        None,
    )


# -- parity with the posthog package --------------------------------------------------------------


def posthog_list(exc: BaseException) -> list[dict[str, Any]]:
    """The posthog package's `$exception_list` for `exc`, built by its own functions."""
    raw = ph.exceptions_from_error_tuple((type(exc), exc, exc.__traceback__))
    event = ph.handle_in_app({"exception": {"values": raw}}, project_root=PROJECT_ROOT)
    # posthog marks over-long lines with an AnnotatedValue; the wire only carries the text
    return json.loads(json.dumps(event["exception"]["values"], default=lambda v: v.value))


def assert_same_shape(ours: list[dict[str, Any]], theirs: list[dict[str, Any]]) -> None:
    assert len(ours) == len(theirs)
    for mine, ref in zip(ours, theirs, strict=True):
        assert set(mine) == set(ref)
        assert (mine["type"], mine["value"], mine["module"]) == (
            ref["type"],
            ref["value"],
            ref["module"],
        )
        assert mine["mechanism"] == ref["mechanism"]
        if "stacktrace" not in ref:
            continue
        assert mine["stacktrace"]["type"] == ref["stacktrace"]["type"]
        my_frames, ref_frames = frames_of(mine), frames_of(ref)
        assert [(f["function"], f["lineno"]) for f in my_frames] == [
            (f["function"], f["lineno"]) for f in ref_frames
        ]
        for my_frame, ref_frame in zip(my_frames, ref_frames, strict=True):
            # posthog leaves in_app unset where no rule decides (stdlib); we always decide
            assert set(ref_frame) - set(my_frame) == set()
            assert set(my_frame) - set(ref_frame) <= {"in_app"}
            for key in (
                "platform",
                "abs_path",
                "module",
                "pre_context",
                "context_line",
                "post_context",
            ):
                assert my_frame[key] == ref_frame[key], key
            if "in_app" in ref_frame:
                assert my_frame["in_app"] == ref_frame["in_app"]
            if ref_frame["module"] == __name__:
                assert my_frame["filename"] == ref_frame["filename"]


@pytest.mark.parametrize(
    "fn",
    [
        fail_value,
        wrap_with_cause,
        wrap_with_context,
        wrap_suppressed,
        explicit_cause_over_context,
        nested_group,
        parse_json,
        prepare_bad_request,
        lambda: recurse(30),
    ],
    ids=[
        "single",
        "cause",
        "context",
        "suppressed",
        "cause-over-context",
        "group",
        "json",
        "requests",
        "recursion",
    ],
)
def test_same_shape_as_posthog_exception_utils(fn):
    exc = caught(fn)
    ours = exception_list(exc, handled=True, project_root=PROJECT_ROOT)
    assert_same_shape(ours, posthog_list(exc))


def build_exception_graph(spec: list[tuple[str, int, int]]) -> BaseException:
    """Exceptions linked by `spec` rows of (how, from_index, to_index); index 0 is the root."""
    excs: list[BaseException] = [ValueError("e0")]
    groups: dict[int, list[BaseException]] = {}
    for i, (how, src, _) in enumerate(spec, start=1):
        new = TypeError(f"e{i}")
        excs.append(new)
        parent = excs[src % i]
        if how == "member":
            groups.setdefault(src % i, []).append(new)
        elif how == "cause":
            parent.__cause__ = new
        else:
            parent.__context__ = new
    # rebuild group members as real ExceptionGroups, keeping the other links
    for index, members in groups.items():
        old = excs[index]
        group = ExceptionGroup(str(old), members)
        group.__cause__, group.__context__ = old.__cause__, old.__context__
        group.__suppress_context__ = old.__suppress_context__
        for other in excs:
            if other.__cause__ is old:
                other.__cause__ = group
            if other.__context__ is old:
                other.__context__ = group
        for member_list in groups.values():
            member_list[:] = [group if m is old else m for m in member_list]
        excs[index] = group
    return excs[0]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["cause", "context", "member"]),
            st.integers(0, 40),
            st.integers(0, 40),
        ),
        max_size=25,
    ),
    st.integers(1, 60),
)
def test_links_match_posthog_for_arbitrary_graphs(spec, max_exceptions):
    root = build_exception_graph(spec)

    ours = exception_list(root, handled=True, max_exceptions=max_exceptions)
    theirs = posthog_list(root)

    ids = [e["mechanism"]["exception_id"] for e in ours]
    assert ids == list(range(len(ours)))
    assert all(e["mechanism"].get("parent_id", -1) < e["mechanism"]["exception_id"] for e in ours)
    link = [
        (e["value"], e["mechanism"].get("parent_id"), e["mechanism"].get("source")) for e in ours
    ]
    ref = [
        (e["value"], e["mechanism"].get("parent_id"), e["mechanism"].get("source")) for e in theirs
    ]
    assert link == ref[:max_exceptions]


def test_same_event_properties_as_a_posthog_client(httpserver):
    exc = caught(wrap_with_cause)
    import posthog

    httpserver.expect_request("/batch/", method="POST").respond_with_json({"status": 1})
    client = posthog.Client(
        "phc_test",
        host=httpserver.url_for("").rstrip("/"),
        sync_mode=True,
        project_root=PROJECT_ROOT,
        max_retries=0,
    )
    try:
        client.capture_exception(exc, distinct_id="u1")
    finally:
        client.shutdown()

    [(request, _)] = httpserver.log
    body = request.get_data()
    if request.headers.get("Content-Encoding") == "gzip":
        body = gzip.decompress(body)
    [event] = json.loads(body)["batch"]
    theirs = event["properties"]
    assert event["event"] == "$exception"

    ours = exception_properties(exc, project_root=PROJECT_ROOT)

    their_exception_keys = {k for k in theirs if k.startswith("$exception")}
    assert set(ours) == their_exception_keys
    assert ours["$exception_level"] == theirs["$exception_level"]
    assert_same_shape(ours["$exception_list"], theirs["$exception_list"])


def test_source_cache_reads_each_file_once_across_calls():
    calls: list[str] = []

    def loader(path: str) -> list[str]:
        calls.append(path)
        return Path(path).read_text(encoding="utf-8").splitlines()

    cache = SourceCache(loader=loader)
    exc = caught(wrap_with_cause)
    for _ in range(5):
        exception_list(exc, handled=True, sources=cache)
    assert calls == [THIS_FILE]


def test_site_cache_gives_the_same_frames_and_independent_lists():
    sources = SourceCache()

    def fail() -> None:
        raise ValueError("same site")

    entries = []
    for _ in range(2):
        try:
            fail()
        except ValueError as exc:
            entries.append(exception_list(exc, handled=True, sources=sources))
    assert sources.sites  # the second exception was served from the site cache
    first, second = (e[0]["stacktrace"]["frames"] for e in entries)
    assert first == second
    first[-1]["pre_context"].append("mutated by a before_send hook")
    assert "mutated by a before_send hook" not in second[-1]["pre_context"]
    # in_app rules are part of the key: other rules, other answer for the same site.
    try:
        fail()
    except ValueError as exc:
        other = exception_list(exc, handled=True, sources=sources, project_root="/nowhere")
    assert other[0]["stacktrace"]["frames"][-1]["in_app"] is False
    assert first[-1]["in_app"] is True
