"""asyncio: exceptions reaching an instrumented loop's exception handler become `$exception`."""

from __future__ import annotations

import asyncio
from typing import Any

import phactor
import phactor.testing
from phactor.errortracking import instrument_asyncio


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
