"""The asyncio API (`phactor.aio`, `Instance.aio`): flag calls, flush and stop never block the
running loop; cancellation abandons the wait with no thread left in a request; the caller task's
context applies. Against a real loopback DevServer (slow, down)."""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from typing import Any

import pytest
from conftest import StartInstance, wait_until
from hypothesis import given
from hypothesis import strategies as st

import phactor
import phactor.aio
from phactor.devserver import DevServer


@pytest.fixture
def started(start_instance: StartInstance, devserver: DevServer) -> Any:
    def start(**options: Any) -> phactor.Instance:
        config: dict[str, Any] = {
            "api_key": "phc_aio",
            "host": devserver.url,
            "enable_error_tracking": False,
        }
        config.update(options)
        return start_instance(**config)

    return start


def _run(coro: Any, timeout: float = 20.0) -> Any:
    """asyncio.run on a thread joined with `timeout`: a loop that hangs fails the test."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = asyncio.run(coro)
        except BaseException as error:  # re-raised on the test thread
            box["error"] = error

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), f"the loop did not finish within {timeout} s"
    if "error" in box:
        raise box["error"]
    return box["value"]


def _threads_in_a_flags_request() -> list[str]:
    """Names of phactor-aio threads whose stack is inside `FlagsHttp.post_flags` right now."""
    names = {t.ident: t.name for t in threading.enumerate()}
    busy = []
    for ident, frame in sys._current_frames().items():
        if not names.get(ident, "").startswith("phactor-aio"):
            continue
        walk: Any = frame
        while walk is not None:
            if walk.f_code.co_name == "post_flags":
                busy.append(names[ident])
                break
            walk = walk.f_back
    return busy


def test_the_loop_keeps_ticking_while_20_evaluate_flags_wait_on_a_slow_flags(
    devserver: DevServer, started: Any
) -> None:
    devserver.set_flags({"f": True})
    devserver.delay(0.5, endpoint="flags")
    inst = started(flags_request_timeout=5.0)
    # Measure the wait, not the one-time loading of the flag core and its HTTP session.
    assert inst.get_feature_flag("f", "warm-up") is True

    async def main() -> tuple[float, list[Any]]:
        gaps: list[float] = []
        done = asyncio.Event()

        async def ticker() -> None:
            last = time.perf_counter()
            while not done.is_set():
                await asyncio.sleep(0.005)
                now = time.perf_counter()
                gaps.append(now - last)
                last = now

        tick = asyncio.create_task(ticker())
        await asyncio.sleep(0.02)
        results = await asyncio.gather(
            *(inst.aio.evaluate_flags(f"user-{n}", flag_keys=["f"]) for n in range(20))
        )
        done.set()
        await tick
        return max(gaps), results

    # A synchronous call would stall the loop for each 0.5 s request in turn (10 s in total), in
    # every round. A loaded machine (CI, other processes) can stall any loop for tens of ms now
    # and then, phactor or not: the best of three rounds must stay under the bound. The debug-mode
    # test below checks the on-loop work itself, without the machine's noise.
    gaps = []
    for _ in range(3):
        max_gap, results = _run(main())
        assert all(r.is_enabled("f") for r in results)
        gaps.append(max_gap)
        if max_gap < 0.05:
            break
    assert devserver.request_count("flags") >= 20
    assert min(gaps) < 0.05, f"the loop stalled for {[round(g * 1000) for g in gaps]} ms"


def test_no_callback_blocks_the_loop_in_debug_mode(
    devserver: DevServer, started: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """The on-loop blocking itself: asyncio's debug mode logs every callback slower than
    `slow_callback_duration`; none of ours may be (unlike the ticker, CPU load elsewhere on
    the machine cannot make a phactor call look slow here unless it runs on the loop)."""
    devserver.set_flags({"f": "v"})
    devserver.delay(0.3, endpoint="flags")
    inst = started(flags_request_timeout=5.0)

    async def main() -> list[Any]:
        loop = asyncio.get_running_loop()
        loop.set_debug(True)
        loop.slow_callback_duration = 0.1
        return await asyncio.gather(
            *(inst.aio.get_feature_flag("f", f"u{n}") for n in range(20)),
            inst.aio.flush(5),
        )

    # A blocking call would be a slow callback of >= 0.3 s in every round; a loaded machine can
    # deschedule the loop's thread inside any callback now and then: the best of three rounds.
    rounds = []
    for _ in range(3):
        caplog.clear()
        with caplog.at_level("WARNING", logger="asyncio"):
            values = _run(main())
        assert values[:20] == ["v"] * 20 and values[20] is True
        slow = [r.getMessage() for r in caplog.records if "took" in r.getMessage()]
        rounds.append(slow)
        if not slow:
            break
    assert [] in rounds, rounds


def test_cancelling_the_await_abandons_the_wait_and_leaves_no_thread_in_a_request(
    devserver: DevServer, started: Any
) -> None:
    devserver.set_flags({"f": True})
    devserver.delay(30.0, endpoint="flags")
    inst = started(flags_request_timeout=0.5)

    async def main() -> float:
        task = asyncio.create_task(inst.aio.get_feature_flag("f", "u"))
        await asyncio.to_thread(devserver.wait_for_arrivals, 1, 5.0, "flags")
        began = time.perf_counter()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return time.perf_counter() - began

    assert _run(main()) < 1.0  # the await ends at once, not after the request
    # The abandoned request ends on its own thread within its timeout (and one retry).
    assert wait_until(lambda: not _threads_in_a_flags_request(), timeout=5.0)
    assert phactor.aio.executor().pending() == 0


def test_a_call_cancelled_before_it_started_never_runs(devserver: DevServer, started: Any) -> None:
    devserver.set_flags({"f": True})
    devserver.delay(30.0, endpoint="flags")
    inst = started(flags_request_timeout=1.0)
    workers = phactor.aio.MAX_WORKERS

    async def main() -> int:
        busy = [
            asyncio.create_task(inst.aio.get_feature_flag("f", f"b{n}")) for n in range(workers)
        ]
        await asyncio.to_thread(devserver.wait_for_arrivals, workers, 10.0, "flags")
        queued = asyncio.create_task(inst.aio.get_feature_flag("f", "queued"))
        await asyncio.sleep(0)
        queued.cancel()
        with pytest.raises(asyncio.CancelledError):
            await queued
        for task in busy:
            task.cancel()
        await asyncio.gather(*busy, return_exceptions=True)
        return devserver.request_count("flags")

    _run(main())
    assert wait_until(lambda: not _threads_in_a_flags_request(), timeout=10.0)
    users = {r.body.get("distinct_id") for r in devserver.requests if r.endpoint == "flags"}
    assert "queued" not in users


def test_the_calling_tasks_context_applies(devserver: DevServer, started: Any) -> None:
    devserver.set_flags({"f": "ctx"})
    inst = started()

    async def one(user: str) -> Any:
        with inst.context({"distinct_id": user}):
            return await inst.aio.get_feature_flag("f")

    async def main() -> list[Any]:
        return await asyncio.gather(one("task-a"), one("task-b"))

    assert _run(main()) == ["ctx", "ctx"]
    users = sorted(r.body.get("distinct_id") for r in devserver.requests if r.endpoint == "flags")
    assert users == ["task-a", "task-b"]


def test_module_functions_take_instance_and_unstarted_names_get_defaults(
    devserver: DevServer, started: Any, instance_name: str
) -> None:
    devserver.set_flags({"f": "v"}, payloads={"f": {"n": 1}})
    inst = started()
    aio = phactor.aio

    async def main() -> list[Any]:
        name = inst.name
        inst.capture("from_a_coroutine", "u")  # capture stays synchronous
        return [
            (await aio.evaluate_flags("u", instance=name)).get_flag("f"),
            await aio.feature_enabled("f", "u", instance=name),
            await aio.get_feature_flag("f", "u", instance=name),
            (await aio.get_feature_flag_result("f", "u", instance=name)).variant,
            await aio.get_feature_flag_payload("f", "u", instance=name),
            await aio.get_all_flags("u", instance=name),
            (await aio.get_all_flags_and_payloads("u", instance=name))["featureFlags"],
            await aio.reload_feature_flags(instance=name),
            await aio.flush(5, instance=name),
            # a name never started: the flag's default, as the synchronous functions
            await aio.get_feature_flag("f", "u", instance="never-started"),
            (await aio.evaluate_flags("u", instance="never-started")).keys(),
            await aio.get_all_flags("u", instance="never-started"),
            await aio.stop("never-started"),
            await aio.stop(name, 5),
        ]

    assert _run(main()) == [
        "v", True, "v", "v", {"n": 1}, {"f": "v"}, {"f": "v"}, False, True,
        None, [], {}, False, True,
    ]  # fmt: skip
    assert inst.name not in phactor.instances()  # stopped by aio.stop
    assert any(e["event"] == "from_a_coroutine" for e in devserver.events())


def test_bad_arguments_raise_out_of_the_await(started: Any) -> None:
    inst = started(test_mode=True, flags={"f": True})

    async def main() -> None:
        with pytest.raises(TypeError):
            await inst.aio.get_feature_flag(123, "u")  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            await inst.aio.evaluate_flags("u", no_such_option=1)

    _run(main())


@given(
    st.lists(st.sampled_from(["a", "b", "c", "d"]), max_size=4),
    st.text(min_size=1, max_size=8),
)
def test_async_evaluation_equals_the_synchronous_one(keys: list[str], user: str) -> None:
    inst = phactor.start("aio-property", test_mode=True, flags={"a": True, "b": "v", "c": False})
    try:

        async def main() -> Any:
            return await inst.aio.evaluate_flags(user, flag_keys=keys)

        got = asyncio.run(main())
        want = inst.evaluate_flags(user, flag_keys=keys)
        assert dict(got.results) == dict(want.results)
        assert got.keys() == want.keys()
        assert dict(got.unresolved) == dict(want.unresolved)
    finally:
        inst.stop(timeout=5)
