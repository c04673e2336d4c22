"""asyncio: exceptions reaching an instrumented loop's exception handler become `$exception`."""

from __future__ import annotations

import asyncio
import contextvars
from typing import Any

from conftest import StartInstance
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import phactor
import phactor.testing
from phactor.errortracking import instrument_asyncio, routing


def _exceptions(name: str) -> list[dict[str, Any]]:
    return [e for e in phactor.testing.events(name) if e["event"] == "$exception"]


def test_callback_exception_is_captured_and_previous_handler_still_runs(instance_name: str):
    phactor.start(instance_name, test_mode=True)
    seen: list[dict[str, Any]] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda _loop, ctx: seen.append(ctx))
        restore = instrument_asyncio(instance=instance_name)
        phactor.set_context({"distinct_id": "loop-user"}, instance=instance_name)

        def broken_callback() -> None:
            raise ValueError("callback broke")

        done = asyncio.Event()
        loop.call_soon(broken_callback)
        loop.call_soon(done.set)  # runs after the failing callback
        await done.wait()
        restore()
        assert loop.get_exception_handler() is not None  # the app's own handler is back
        loop.call_soon(broken_callback)  # not instrumented any more
        await asyncio.sleep(0)
        await asyncio.sleep(0)

    asyncio.run(main())
    assert len(seen) == 2  # the app's handler saw both
    events = _exceptions(instance_name)
    assert len(events) == 1
    props = events[0]["properties"]
    assert props["$exception_source"] == "asyncio"
    assert props["$exception_list"][0]["type"] == "ValueError"
    assert props["$exception_list"][0]["mechanism"]["handled"] is False
    assert events[0]["distinct_id"] == "loop-user"


def test_cancelled_and_message_only_contexts_are_ignored(instance_name: str):
    phactor.start(instance_name, test_mode=True)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda _loop, _ctx: None)
        instrument_asyncio(instance=instance_name)
        loop.call_exception_handler({"message": "just a message"})
        loop.call_exception_handler({"message": "cancelled", "exception": asyncio.CancelledError()})
        loop.call_exception_handler({"message": "real", "exception": KeyError("k")})

    asyncio.run(main())
    events = _exceptions(instance_name)
    assert [e["properties"]["$exception_list"][0]["type"] for e in events] == ["KeyError"]


# -- which instance receives a loop's exception: the routing, as logging and the except hooks ---


def _fail_on_a_loop(*, silence_default: bool, **instrument: Any) -> None:
    """Run a loop instrumented with `instrument_asyncio(**instrument)` whose callback fails.

    `silence_default`: the previous handler drops the context, so the default handler does not
    log it to the "asyncio" logger (whose record the root handler would route as well).
    """

    async def main() -> None:
        loop = asyncio.get_running_loop()
        if silence_default:
            loop.set_exception_handler(lambda _loop, _ctx: None)
        restore = instrument_asyncio(**instrument)

        def broken_callback() -> None:
            raise ValueError("callback broke")

        done = asyncio.Event()
        loop.call_soon(broken_callback)
        loop.call_soon(done.set)
        await done.wait()
        restore()

    asyncio.run(main())


def test_by_default_a_loops_exception_goes_to_the_receiver_like_an_uncaught_one(
    start_test_mode: StartInstance,
):
    # Before: instrument_asyncio() meant instance="default", which was not running: NotStarted.
    first = start_test_mode()
    second = start_test_mode()
    _fail_on_a_loop(silence_default=True)
    assert [len(_exceptions(first.name)), len(_exceptions(second.name))] == [1, 0]
    assert routing.receiver() is first._error_intake


def test_an_instance_claiming_the_asyncio_logger_receives_the_loops_exceptions(
    start_test_mode: StartInstance,
):
    first = start_test_mode()
    claimer = start_test_mode(error_tracking_loggers=["asyncio"])
    # The default handler logs the context to the "asyncio" logger too: one event all the same.
    _fail_on_a_loop(silence_default=False)
    assert [len(_exceptions(first.name)), len(_exceptions(claimer.name))] == [0, 1]
    assert _exceptions(claimer.name)[0]["properties"]["$exception_source"] == "asyncio"


def test_a_named_instance_is_found_at_capture_time_so_a_restart_is_followed(instance_name: str):
    # Before: the instance was looked up once, when instrumenting; after a stop and a new
    # start of the same name, the loop's exceptions went to the stopped one and were lost.
    async def main() -> None:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda _loop, _ctx: None)
        phactor.start(instance_name, test_mode=True)
        instrument_asyncio(instance=instance_name)
        phactor.stop(instance_name, timeout=5)
        phactor.start(instance_name, test_mode=True)

        def broken_callback() -> None:
            raise ValueError("after the restart")

        done = asyncio.Event()
        loop.call_soon(broken_callback)
        loop.call_soon(done.set)
        await done.wait()

    asyncio.run(main())
    events = _exceptions(instance_name)
    assert [e["properties"]["$exception_list"][0]["value"] for e in events] == ["after the restart"]


def test_without_error_tracking_a_named_instance_sends_the_same_asyncio_event(
    start_test_mode: StartInstance,
):
    # Before: the fallback went through capture_exception, whose own source overwrote
    # "asyncio" ($exception_source "capture_exception", handled, mechanism "generic").
    inst = start_test_mode(enable_error_tracking=False)
    _fail_on_a_loop(silence_default=True, instance=inst.name)
    [event] = _exceptions(inst.name)
    props = event["properties"]
    assert props["$exception_source"] == "asyncio"
    assert props["$exception_list"][0]["mechanism"]["handled"] is False
    assert props["$exception_list"][0]["mechanism"]["type"] == "onuncaughtexception"


def test_a_source_set_in_the_failing_callbacks_context_is_kept(start_test_mode: StartInstance):
    inst = start_test_mode()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda _loop, _ctx: None)
        instrument_asyncio(instance=inst.name)
        # The callback's own context (a copy): what the loop's handler reads back.
        ctx = contextvars.copy_context()
        ctx.run(phactor.set_context, {"$exception_source": "billing-worker"}, instance=inst.name)

        def broken_callback() -> None:
            raise KeyError("k")

        done = asyncio.Event()
        loop.call_soon(broken_callback, context=ctx)
        loop.call_soon(done.set)
        await done.wait()

    asyncio.run(main())
    [event] = _exceptions(inst.name)
    assert event["properties"]["$exception_source"] == "billing-worker"


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(source=st.one_of(st.text(st.characters(blacklist_categories=("Cs",))), st.integers(), st.none()))
def test_a_source_the_caller_sets_is_kept(start_test_mode: StartInstance, source: Any):
    # Before: the capture's own name ("capture_exception") overwrote the caller's.
    inst = phactor.instance(_source_instance(start_test_mode))
    try:
        raise ValueError("explicit")
    except ValueError as exc:
        uuid = inst.capture_exception(exc, properties={"$exception_source": source})
    assert uuid is not None
    [event] = [e for e in _exceptions(inst.name) if e["uuid"] == uuid]
    kept = source if isinstance(source, str) and source else "capture_exception"
    assert event["properties"]["$exception_source"] == kept


def _source_instance(start_test_mode: StartInstance) -> str:
    """One instance for every example of a test (the fixture's name is the same in each)."""
    names = phactor.instances()
    started = [n for n in names if n.endswith("test_a_source_the_caller_sets_is_kept")]
    if started:
        return started[0]
    return start_test_mode(exception_rate_limit_burst=100_000).name
