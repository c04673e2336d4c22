"""Error tracking end to end: logging records, except hooks and `capture_exception` become
`$exception` events through a real instance (test mode or a loopback DevServer).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
import threading
import uuid
from typing import Any

import pytest
import requests
from conftest import StartInstance, assert_ledger, exception_events

import phactor
from phactor.devserver import DevServer
from phactor.errortracking import TokenBuckets, capture_exception
from phactor.errortracking.handler import CaptureHandler
from phactor.errortracking.hooks import ChainedHook
from phactor.errortracking.routing import RoutingHandler

log = logging.getLogger("app.checkout")


@pytest.fixture
def inst(start_test_mode: StartInstance) -> phactor.Instance:
    return start_test_mode()


def our_handlers() -> list[logging.Handler]:
    """phactor's handlers on the root logger (one routing handler for every instance)."""
    return [
        h for h in logging.getLogger().handlers if isinstance(h, RoutingHandler | CaptureHandler)
    ]


def charge(amount: int) -> None:
    raise ValueError(f"card declined for {amount}")


def frames(entry: dict[str, Any]) -> list[dict[str, Any]]:
    return entry["stacktrace"]["frames"]


# -- logging ------------------------------------------------------------------------------------


def test_log_exception_becomes_an_exception_event(inst):
    try:
        charge(42)
    except ValueError:
        log.exception("charge failed for %s", "order-7", extra={"order_id": 7})

    [event] = exception_events(inst)
    props = event["properties"]
    [entry] = props["$exception_list"]
    assert (entry["type"], entry["value"]) == ("ValueError", "card declined for 42")
    assert entry["mechanism"] == {
        "type": "generic",
        "handled": True,
        "synthetic": False,
        "exception_id": 0,
    }
    assert [f["function"] for f in frames(entry)][-2:] == [
        "test_log_exception_becomes_an_exception_event",
        "charge",
    ]
    assert (
        frames(entry)[-1]["context_line"].strip()
        == 'raise ValueError(f"card declined for {amount}")'
    )
    assert props["$exception_level"] == "error"
    assert props["$exception_source"] == "logging"
    assert props["logger_name"] == "app.checkout"
    assert props["log_level"] == "ERROR"
    assert props["log_message"] == "charge failed for order-7"
    assert props["order_id"] == 7
    assert props["thread_name"] == threading.current_thread().name


def test_error_with_exc_info_is_captured_and_critical_is_fatal(inst):
    for method in (log.error, log.critical):
        try:
            charge(1)
        except ValueError:
            method("failed", exc_info=True)
    levels = [e["properties"]["$exception_level"] for e in exception_events(inst)]
    assert levels == ["error", "fatal"]


def test_records_below_capture_level_or_without_exception_are_ignored(inst):
    try:
        charge(1)
    except ValueError:
        log.warning("only a warning", exc_info=True)
    log.error("an error without an exception")
    log.exception("log.exception outside an except block")
    assert exception_events(inst) == []


def test_capture_level_is_configurable(start_test_mode):
    inst = start_test_mode(capture_level="WARNING")
    try:
        charge(1)
    except ValueError:
        log.warning("now captured", exc_info=True)
    [event] = exception_events(inst)
    assert event["properties"]["$exception_level"] == "warning"


def test_chained_and_grouped_exceptions_end_to_end(inst):
    try:
        try:
            charge(3)
        except ValueError as error:
            raise RuntimeError("checkout failed") from error
    except RuntimeError:
        log.exception("chained")
    try:
        raise ExceptionGroup("batch failed", [KeyError("a"), TypeError("b")])
    except ExceptionGroup:
        log.exception("grouped")

    chained, grouped = exception_events(inst)
    outer, cause = chained["properties"]["$exception_list"]
    assert (outer["type"], cause["type"]) == ("RuntimeError", "ValueError")
    assert cause["mechanism"]["source"] == "cause"
    assert cause["mechanism"]["parent_id"] == outer["mechanism"]["exception_id"]
    group, *members = grouped["properties"]["$exception_list"]
    assert group["type"] == "ExceptionGroup" and group["mechanism"]["is_exception_group"]
    assert [m["type"] for m in members] == ["KeyError", "TypeError"]
    assert {m["mechanism"]["source"] for m in members} == {"member"}


def test_in_app_marks_project_frames_true_and_site_packages_frames_false(inst):
    try:
        requests.models.PreparedRequest().prepare_url("no-scheme.example", None)
    except requests.exceptions.MissingSchema:
        log.exception("bad url")
    [event] = exception_events(inst)
    entry = event["properties"]["$exception_list"][0]
    by_module = {f["module"]: f["in_app"] for f in frames(entry)}
    assert by_module[__name__] is True  # this file is under the project root (the cwd)
    assert by_module["requests.models"] is False


def test_in_app_modules_claim_third_party_frames(start_test_mode):
    inst = start_test_mode(in_app_modules=["requests"])
    try:
        requests.models.PreparedRequest().prepare_url("no-scheme.example", None)
    except requests.exceptions.MissingSchema:
        log.exception("bad url")
    [event] = exception_events(inst)
    entry = event["properties"]["$exception_list"][0]
    assert {f["module"]: f["in_app"] for f in frames(entry)}["requests.models"] is True


# -- context and distinct_id --------------------------------------------------------------------


def test_context_of_the_logging_thread_is_attached(inst):
    def request_handler() -> None:
        inst.set_context({"distinct_id": "user-9", "plan": "pro", "route": "/pay"})
        inst.set_event_context("$exception", {"route": "/pay (exception)"})
        inst.set_event_context("other_event", {"not": "here"})
        try:
            charge(9)
        except ValueError:
            log.exception("payment failed", extra={"plan": "enterprise"})

    worker = threading.Thread(target=request_handler)
    worker.start()
    worker.join()
    try:
        charge(10)  # the main thread has no context
    except ValueError:
        log.exception("no context here")

    with_context, without = exception_events(inst)
    assert with_context["distinct_id"] == "user-9"
    props = with_context["properties"]
    assert props["route"] == "/pay (exception)"  # event-scoped context beats instance context
    assert props["plan"] == "enterprise"  # record extras beat context
    assert "not" not in props and "distinct_id" not in props
    assert "$process_person_profile" not in props
    assert without["properties"]["$process_person_profile"] is False
    assert "route" not in without["properties"]


def test_without_a_distinct_id_each_event_gets_a_fresh_uuid(inst):
    for _ in range(2):
        try:
            charge(1)
        except ValueError:
            log.exception("anonymous")
    ids = [e["distinct_id"] for e in exception_events(inst)]
    assert len(set(ids)) == 2
    for value in ids:
        assert uuid.UUID(value).version == 4


def test_global_properties_apply_and_extras_can_carry_the_distinct_id(start_test_mode):
    inst = start_test_mode(global_properties={"service": "api"})
    try:
        charge(1)
    except ValueError:
        log.exception("failed", extra={"distinct_id": "from-extra"})
    [event] = exception_events(inst)
    assert event["distinct_id"] == "from-extra"
    assert event["properties"]["service"] == "api"


# -- uncaught exceptions ------------------------------------------------------------------------


def test_uncaught_exception_in_a_thread_is_captured_and_the_previous_hook_still_runs(
    instance_name,
):
    seen: list[BaseException] = []
    before = threading.excepthook
    threading.excepthook = lambda args: seen.append(args.exc_value)
    inst = phactor.start(instance_name, test_mode=True)
    try:

        def work() -> None:
            inst.set_context({"distinct_id": "worker-user"})
            charge(5)

        worker = threading.Thread(target=work, name="payments-worker")
        worker.start()
        worker.join()
        [event] = exception_events(inst)
        props = event["properties"]
        assert event["distinct_id"] == "worker-user"
        assert props["$exception_source"] == "threading.excepthook"
        assert props["$exception_level"] == "error"
        assert props["thread_name"] == "payments-worker"
        mechanism = props["$exception_list"][0]["mechanism"]
        assert mechanism["type"] == "onuncaughtexception" and mechanism["handled"] is False
        assert [type(e) for e in seen] == [ValueError]
    finally:
        inst.stop(timeout=5)
        threading.excepthook = before


def test_an_exception_logged_and_then_uncaught_in_a_thread_is_sent_once(instance_name):
    before = threading.excepthook
    threading.excepthook = lambda args: None
    inst = phactor.start(instance_name, test_mode=True)
    try:

        def work() -> None:
            try:
                charge(5)
            except ValueError:
                log.exception("failing, re-raising")
                raise

        worker = threading.Thread(target=work)
        worker.start()
        worker.join()
        [event] = exception_events(inst)
        assert event["properties"]["$exception_source"] == "logging"  # the first source wins
        assert_ledger(inst)
    finally:
        inst.stop(timeout=5)
        threading.excepthook = before


def test_uncaught_exception_in_a_subprocess_reaches_the_server_before_exit(devserver, tmp_path):
    script = tmp_path / "crash.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import phactor
            phactor.start(host={devserver.url!r}, api_key="phc_subprocess", flush_interval=60)
            phactor.set_context({{"distinct_id": "crash-user"}})

            def crash():
                raise RuntimeError("fatal crash")

            crash()
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
    assert proc.returncode == 1
    assert "RuntimeError: fatal crash" in proc.stderr  # the default hook still printed it
    assert devserver.wait_for(1, timeout=10)
    [event] = devserver.events(event="$exception")
    props = event["properties"]
    assert event["distinct_id"] == "crash-user"
    assert props["$exception_level"] == "fatal"
    assert props["$exception_source"] == "sys.excepthook"
    [entry] = props["$exception_list"]
    assert (entry["type"], entry["value"]) == ("RuntimeError", "fatal crash")
    assert entry["mechanism"]["handled"] is False
    crash_site = frames(entry)[-1]
    assert crash_site["function"] == "crash"
    assert crash_site["in_app"] is True  # the script is under the subprocess's cwd
    assert crash_site["context_line"].strip() == 'raise RuntimeError("fatal crash")'


def test_same_process_excepthook_call_is_captured_as_fatal(inst):
    # sys.excepthook is what the interpreter calls for an uncaught exception in the main thread.
    try:
        charge(1)
    except ValueError as error:
        caught = error
    before_default = sys.__excepthook__
    sys.__excepthook__ = lambda *args: None  # the hook chain ends here: keep test output clean
    hook = sys.excepthook
    try:
        assert isinstance(hook, ChainedHook)
        hook.capture(type(caught), caught, caught.__traceback__)
    finally:
        sys.__excepthook__ = before_default
    [event] = exception_events(inst)
    assert event["properties"]["$exception_level"] == "fatal"


# -- capture_exception --------------------------------------------------------------------------


def test_capture_exception_of_the_handled_exception(inst):
    try:
        charge(2)
    except ValueError:
        event_id = inst.capture_exception(distinct_id="u-2", properties={"step": "pay"})
    assert event_id is not None
    [event] = exception_events(inst)
    assert event["uuid"] == event_id
    assert event["distinct_id"] == "u-2"
    assert event["properties"]["step"] == "pay"
    assert event["properties"]["$exception_source"] == "capture_exception"
    assert event["properties"]["$exception_list"][0]["mechanism"]["handled"] is True


def test_capture_exception_of_a_never_raised_exception_uses_the_callers_stack(inst):
    def report() -> str | None:
        return inst.capture_exception(ValueError("never raised"), distinct_id="u")

    assert report() is not None
    [event] = exception_events(inst)
    [entry] = event["properties"]["$exception_list"]
    assert entry["mechanism"]["synthetic"] is True
    assert [f["function"] for f in frames(entry)][-2:] == [
        "test_capture_exception_of_a_never_raised_exception_uses_the_callers_stack",
        "report",
    ]


def test_module_level_capture_exception(inst):
    assert capture_exception(KeyError("k"), distinct_id="u", instance=inst.name) is not None
    [event] = exception_events(inst)
    entry = event["properties"]["$exception_list"][0]
    assert entry["type"] == "KeyError"
    assert frames(entry)[-1]["function"] == "test_module_level_capture_exception"


def test_capture_exception_without_an_exception_or_with_bad_arguments(inst):
    assert inst.capture_exception() is None
    with pytest.raises(TypeError):
        inst.capture_exception("not an exception")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        inst.capture_exception(ValueError("x"), properties=["not", "a", "mapping"])  # type: ignore[arg-type]
    assert exception_events(inst) == []


def test_an_exception_object_is_captured_once_per_instance(inst):
    try:
        charge(1)
    except ValueError as error:
        log.exception("first")
        assert inst.capture_exception(error) is None
        log.error("again", exc_info=True)
    assert len(exception_events(inst)) == 1


def test_capture_exception_works_with_error_tracking_off(start_test_mode):
    inst = start_test_mode(enable_error_tracking=False)
    assert "logger_handler" not in inst.children()
    assert our_handlers() == []
    assert inst.capture_exception(ValueError("x"), distinct_id="u") is not None
    [event] = exception_events(inst)
    assert event["properties"]["$exception_list"][0]["value"] == "x"


def test_capture_exception_after_stop_is_counted(instance_name):
    inst = phactor.start(instance_name, test_mode=True)
    inst.stop(timeout=5)
    assert inst.capture_exception(ValueError("late"), distinct_id="u") is None
    try:
        charge(1)
    except ValueError:
        log.exception("after stop: nobody listens")  # must not raise


# -- no loops, no floods ------------------------------------------------------------------------


def test_records_of_phactors_loggers_are_never_captured(inst):
    for name in ("phactor", "phactor.sender", "phactor.errortracking"):
        try:
            charge(1)
        except ValueError:
            logging.getLogger(name).exception("internal")
    assert exception_events(inst) == []


def test_a_failing_sender_logging_errors_produces_no_exception_events(
    devserver: DevServer, instance_name
):
    """The Sender's failures log errors; user callbacks on its thread log exceptions too."""
    observer = phactor.start(f"{instance_name}-observer", test_mode=True)
    callbacks: list[str] = []

    def on_error(error: Exception, events: list[dict[str, Any]]) -> None:
        callbacks.append(str(error))
        for name in ("urllib3.connectionpool", "requests", "pykka", "app.callbacks"):
            try:
                raise ConnectionError("from inside the Sender")
            except ConnectionError:
                logging.getLogger(name).exception("delivery failed")

    devserver.set_mode("error", status=400)
    failing = phactor.start(
        instance_name, api_key="phc_x", host=devserver.url, on_error=on_error, max_retries=0
    )
    try:
        failing.capture("signed_up", distinct_id="u")
        failing.flush(timeout=10)
        devserver.set_mode("down")
        failing.capture("signed_up", distinct_id="u")
        failing.flush(timeout=10)
        assert failing._error_tracking_drain(5)
        assert callbacks  # the failure path really ran
        assert failing.stats()["captured"] == 2  # no `$exception` was ever queued
        assert exception_events(observer) == []
    finally:
        failing.stop(timeout=2)
        observer.stop(timeout=5)


def test_rate_limit_per_exception_type(inst):
    intake = inst.__dict__["_error_intake"]
    intake.limiter = TokenBuckets(3, 0.0)  # no refill: deterministic
    for _ in range(5):
        try:
            charge(1)
        except ValueError:
            log.exception("flood")
    try:
        raise KeyError("other type")
    except KeyError:
        log.exception("other")
    types = [e["properties"]["$exception_list"][0]["type"] for e in exception_events(inst)]
    assert types == ["ValueError"] * 3 + ["KeyError"]
    assert inst.stats()["dropped"]["rate_limited"] == 2


def test_token_buckets_refill_over_time():
    now = [0.0]
    buckets = TokenBuckets(2, 0.5, clock=lambda: now[0], max_keys=2)
    assert [buckets.allow("a") for _ in range(3)] == [True, True, False]
    now[0] = 1.0  # half a token
    assert buckets.allow("a") is False
    now[0] = 3.0  # refilled past one token
    assert buckets.allow("a") is True
    assert buckets.allow("b") is True
    assert buckets.allow("c") is True  # over max_keys: full buckets were forgotten


def test_error_records_without_exception_when_capture_messages_is_on(inst):
    assert inst.config.capture_messages is False
    log.error("charge failed before the option is on")
    assert exception_events(inst) == []
    phactor.stop(inst.name)
    inst = phactor.start(inst.name, test_mode=True, capture_messages=True)
    for user in ("alice", "bob"):
        log.error("charge failed for %s", user)
    events = exception_events(inst)
    assert [e["properties"]["log_message"] for e in events] == [
        "charge failed for alice",
        "charge failed for bob",
    ]
    fingerprints = {e["properties"]["$exception_fingerprint"] for e in events}
    assert len(fingerprints) == 1  # grouped by call site, not by message
    assert events[0]["properties"]["$exception_list"][0]["type"] == "app.checkout"


def test_a_failure_while_building_is_logged_once_and_never_raised(inst, caplog):
    from phactor.errortracking.builder import ExceptionEventBuilder

    def broken_capture(*args: Any, **kwargs: Any) -> str:
        raise RuntimeError("pipeline broke")

    builder = ExceptionEventBuilder(inst.name, inst.config, broken_capture, inst._drop)
    intake = inst.__dict__["_error_intake"]
    with caplog.at_level(logging.ERROR, logger="phactor.errortracking"):
        for _ in range(3):
            try:
                charge(1)
            except ValueError as error:
                from phactor.errortracking.snapshot import Snapshot

                snapshot = Snapshot(
                    "logging", error, logging.ERROR, True, "generic", inst._context.current(), 0.0
                )
                assert builder.queue(snapshot) is None
    failures = [r for r in caplog.records if "exception_event_failed" in r.getMessage()]
    assert len(failures) == 1
    assert intake.installed
    assert inst.stats()["dropped"] == {"exception_build_failed": 3}  # logged once, each counted
    assert_ledger(inst)


# -- several instances, install and uninstall ---------------------------------------------------


def test_a_logged_exception_goes_to_the_first_started_instance_only(start_test_mode):
    # Routing (issue 16): one instance receives the process's exceptions, not every one.
    first = start_test_mode()
    second = start_test_mode()
    off = start_test_mode(enable_error_tracking=False)
    try:
        charge(1)
    except ValueError:
        log.exception("seen by one instance")
    assert len(exception_events(first)) == 1
    assert exception_events(second) == []
    assert exception_events(off) == []


@pytest.mark.parametrize("order", ["first-in-first-out", "last-in-first-out"])
def test_handlers_removed_and_hooks_restored_after_stop_in_any_order(instance_name, order):
    sys_before, thread_before = sys.excepthook, threading.excepthook
    root_before = list(logging.getLogger().handlers)
    first = phactor.start(f"{instance_name}-a", test_mode=True)
    second = phactor.start(f"{instance_name}-b", test_mode=True)
    assert first._error_intake.installed and second._error_intake.installed
    assert len(our_handlers()) == 1  # one routing handler for both
    assert sys.excepthook is not sys_before and threading.excepthook is not thread_before
    stops = [first, second] if order == "first-in-first-out" else [second, first]
    stops[0].stop(timeout=5)
    assert not stops[0]._error_intake.installed and stops[1]._error_intake.installed
    assert len(our_handlers()) == 1
    stops[1].stop(timeout=5)
    assert our_handlers() == []
    assert sys.excepthook is sys_before
    assert threading.excepthook is thread_before
    assert logging.getLogger().handlers == root_before


def test_a_hook_installed_on_top_of_ours_keeps_working_after_we_stop(instance_name):
    sys_before = sys.excepthook
    inst = phactor.start(instance_name, test_mode=True)
    ours = sys.excepthook
    calls: list[str] = []

    def app_hook(*args: Any) -> None:
        calls.append("app")
        ours(*args)

    sys.excepthook = app_hook
    try:
        inst.stop(timeout=5)
        assert sys.excepthook is app_hook  # not ours to remove
        default_calls: list[Any] = []
        sys_default = sys_before
        try:
            # Ours is closed: it forwards straight to what it replaced.
            assert isinstance(ours, ChainedHook)
            assert ours.resolve_previous() is sys_default
            ours.previous = lambda *args: default_calls.append(args)
            app_hook(ValueError, ValueError("x"), None)
        finally:
            ours.previous = sys_default
        assert calls == ["app"] and len(default_calls) == 1
    finally:
        sys.excepthook = sys_before


def test_restart_of_the_logger_handler_keeps_one_handler(inst):
    generation_before = inst._registry.entry("logger_handler")[1]
    inst._crash_child("logger_handler")
    from conftest import wait_until

    assert wait_until(
        lambda: (
            (entry := inst._registry.entry("logger_handler")) is not None
            and entry[1] > generation_before
        )
    )
    assert len(our_handlers()) == 1
    try:
        charge(1)
    except ValueError:
        log.exception("after restart")
    assert len(exception_events(inst)) == 1


# -- parity with the posthog package ------------------------------------------------------------


def test_event_shape_matches_the_posthog_package(devserver, inst):
    import posthog

    try:
        try:
            charge(4)
        except ValueError as inner:
            raise RuntimeError("wrapped") from inner
    except RuntimeError as error:
        exc = error

    client = posthog.Client(
        "phc_test", host=devserver.url, sync_mode=True, project_root=os.getcwd(), max_retries=0
    )
    try:
        client.capture_exception(exc, distinct_id="u1")
    finally:
        client.shutdown()
    assert devserver.wait_for(1)
    [theirs] = [e["raw"] for e in devserver.events(event="$exception")]

    inst.capture_exception(exc, distinct_id="u1")
    [ours] = exception_events(inst)

    assert set(theirs) <= set(ours) | {"type", "library", "library_version", "api_key"}
    their_keys = {k for k in theirs["properties"] if k.startswith("$exception")}
    our_keys = {k for k in ours["properties"] if k.startswith("$exception")}
    assert their_keys <= our_keys and our_keys - their_keys <= {"$exception_source"}
    assert ours["properties"]["$exception_level"] == theirs["properties"]["$exception_level"]
    mine_list = ours["properties"]["$exception_list"]
    their_list = theirs["properties"]["$exception_list"]
    assert [e["type"] for e in mine_list] == [e["type"] for e in their_list]
    for mine, ref in zip(mine_list, their_list, strict=True):
        assert set(mine) == set(ref)
        assert mine["mechanism"] == ref["mechanism"]
        for my_frame, ref_frame in zip(frames(mine), frames(ref), strict=True):
            assert set(ref_frame) <= set(my_frame) <= set(ref_frame) | {"in_app"}
            assert (my_frame["function"], my_frame["lineno"]) == (
                ref_frame["function"],
                ref_frame["lineno"],
            )
    json.dumps(ours)  # wire-safe
