"""The asyncio API: flag calls, `flush` and `stop` that never block the running event loop.

`await phactor.aio.evaluate_flags("user-1", instance="default")`, or the same methods on an
instance's async view, `inst.aio`. Each call runs the synchronous one on a thread of phactor's
own bounded executor (`MAX_WORKERS` threads, shared by every instance; not the loop's default
executor, so a slow PostHog cannot exhaust the app's), in a copy of the calling task's context
(contextvars: `phactor.context(...)` set in the task applies). The loop only awaits a future.

Cancelling the awaiting task abandons the wait at once: a call not started yet never runs; one
already inside a `/flags` request finishes on its thread, bounded by `flags_request_timeout`
(twice that with the one retry), and its result is dropped. Nothing is left waiting for it.

Capture-family calls (`capture`, `identify`, `capture_exception`, ...) have no async twin: they
never do I/O and return in microseconds, so they are safe to call from a coroutine as they are.

A name that was never started gets what the synchronous module function gives (the flag's
default, after one warning per name); `flush` on it raises `NotStarted`, `stop` returns False.
"""

from __future__ import annotations

import _thread
import asyncio
import contextvars
import functools
import itertools
import os
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, TypeVar

from phactor import registry

if TYPE_CHECKING:
    from phactor.flags.evaluations import FlagEvaluations
    from phactor.flags.results import FeatureFlagResult
    from phactor.instance import Instance

__all__ = [
    "MAX_WORKERS",
    "AsyncInstance",
    "Executor",
    "evaluate_flags",
    "feature_enabled",
    "flush",
    "get_all_flags",
    "get_all_flags_and_payloads",
    "get_feature_flag",
    "get_feature_flag_payload",
    "get_feature_flag_result",
    "reload_feature_flags",
    "stop",
]

#: Threads of phactor's executor: at most this many blocking calls run at once; more wait
#: their turn in its queue (on no thread of the app's).
MAX_WORKERS = 32

_T = TypeVar("_T")
_Task = tuple["Future[Any]", Callable[[], Any]]


class Executor:
    """At most `max_workers` threads taking calls from one queue, started as calls need them.

    Not `concurrent.futures.ThreadPoolExecutor`: its `submit` starts a worker with
    `Thread.start()`, which waits until the new thread runs -- on the event loop's thread, a
    stall of milliseconds (tens under load) per worker. Here a worker starts with
    `_thread.start_new_thread`, which does not wait. Workers are daemon threads: one inside a
    `/flags` request at exit is not waited for (its request is bounded anyway).
    """

    def __init__(self, max_workers: int) -> None:
        self.max_workers = max_workers
        self._queue: queue.SimpleQueue[_Task] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads = 0
        self._idle = 0
        self._unclaimed = 0  # submitted, not yet taken by a worker
        self._numbers = itertools.count(1)

    def submit(self, call: Callable[[], Any]) -> Future[Any]:
        """Queue `call`; its Future (cancelling it before a worker takes it: it never runs)."""
        future: Future[Any] = Future()
        self._queue.put((future, call))
        with self._lock:
            self._unclaimed += 1
            spawn = self._unclaimed > self._idle and self._threads < self.max_workers
            if spawn:
                self._threads += 1
        if spawn:
            _thread.start_new_thread(self._work, (next(self._numbers),))
        return future

    def pending(self) -> int:
        """Calls submitted and not yet taken by a worker."""
        return self._unclaimed

    def workers(self) -> int:
        return self._threads

    def _work(self, number: int) -> None:
        threading.current_thread().name = f"phactor-aio-{number}"
        while True:
            with self._lock:
                self._idle += 1
            future, call = self._queue.get()
            with self._lock:
                self._idle -= 1
                self._unclaimed -= 1
            if not future.set_running_or_notify_cancel():
                continue  # cancelled while queued: never runs
            try:
                result = call()
            except BaseException as error:
                future.set_exception(error)
            else:
                future.set_result(result)
            del future, call


_executor: Executor | None = None
_executor_pid = 0
_lock = threading.Lock()


def executor() -> Executor:
    """phactor's executor, created on first use (again in a forked child)."""
    global _executor, _executor_pid
    pool = _executor
    if pool is not None and _executor_pid == os.getpid():
        return pool
    with _lock:
        if _executor is None or _executor_pid != os.getpid():
            _executor = Executor(MAX_WORKERS)
            _executor_pid = os.getpid()
        return _executor


def _new_lock_after_fork() -> None:
    global _lock
    _lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_lock_after_fork)


async def _run(call: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
    """`call(*args, **kwargs)` on phactor's executor, in the calling task's context."""
    loop = asyncio.get_running_loop()
    context = contextvars.copy_context()
    future = executor().submit(functools.partial(context.run, call, *args, **kwargs))
    # Cancelling this await cancels `future` if it has not started (it never runs).
    return await asyncio.wrap_future(future, loop=loop)


class AsyncInstance:
    """The async view of one `Instance` (`inst.aio`): the flag calls, `flush` and `stop` as
    coroutines; keyword arguments as the synchronous methods (checked there: a TypeError or
    ValueError comes out of the await)."""

    __slots__ = ("_inst",)

    def __init__(self, inst: Instance) -> None:
        self._inst = inst

    def __repr__(self) -> str:
        return f"<AsyncInstance {self._inst.name!r}>"

    async def evaluate_flags(self, distinct_id: Any = None, **options: Any) -> FlagEvaluations:
        """`Instance.evaluate_flags` off the loop."""
        return await _run(self._inst.evaluate_flags, distinct_id, **options)

    async def feature_enabled(
        self, key: str, distinct_id: Any = None, **options: Any
    ) -> bool | None:
        """`Instance.feature_enabled` off the loop."""
        return await _run(self._inst.feature_enabled, key, distinct_id, **options)

    async def get_feature_flag(
        self, key: str, distinct_id: Any = None, **options: Any
    ) -> bool | str | None:
        """`Instance.get_feature_flag` off the loop."""
        return await _run(self._inst.get_feature_flag, key, distinct_id, **options)

    async def get_feature_flag_result(
        self, key: str, distinct_id: Any = None, **options: Any
    ) -> FeatureFlagResult | None:
        """`Instance.get_feature_flag_result` off the loop."""
        return await _run(self._inst.get_feature_flag_result, key, distinct_id, **options)

    async def get_feature_flag_payload(
        self, key: str, distinct_id: Any = None, **options: Any
    ) -> Any:
        """`Instance.get_feature_flag_payload` off the loop."""
        return await _run(self._inst.get_feature_flag_payload, key, distinct_id, **options)

    async def get_all_flags(self, distinct_id: Any = None, **options: Any) -> dict[str, Any]:
        """`Instance.get_all_flags` off the loop."""
        return await _run(self._inst.get_all_flags, distinct_id, **options)

    async def get_all_flags_and_payloads(
        self, distinct_id: Any = None, **options: Any
    ) -> dict[str, dict[str, Any]]:
        """`Instance.get_all_flags_and_payloads` off the loop."""
        return await _run(self._inst.get_all_flags_and_payloads, distinct_id, **options)

    async def reload_feature_flags(self, timeout: float | None = None) -> bool:
        """`Instance.reload_feature_flags` off the loop."""
        return await _run(self._inst.reload_feature_flags, timeout)

    async def flush(self, timeout: float | None = None) -> bool:
        """`Instance.flush` off the loop."""
        return await _run(self._inst.flush, timeout)

    async def stop(self, timeout: float | None = None) -> bool:
        """`Instance.stop` off the loop."""
        return await _run(self._inst.stop, timeout)


def _view(name: str) -> AsyncInstance | None:
    inst = registry.by_name.get(name) or registry.unstarted(name)
    return None if inst is None else AsyncInstance(inst)


async def evaluate_flags(
    distinct_id: Any = None, *, instance: str = "default", **options: Any
) -> FlagEvaluations:
    """`phactor.evaluate_flags` off the loop."""
    view = _view(instance)
    if view is None:
        from phactor.flags.evaluations import FlagEvaluations  # lazy: start-up time

        return FlagEvaluations()
    return await view.evaluate_flags(distinct_id, **options)


async def feature_enabled(
    key: str, distinct_id: Any = None, *, instance: str = "default", **options: Any
) -> bool | None:
    """`phactor.feature_enabled` off the loop."""
    view = _view(instance)
    return None if view is None else await view.feature_enabled(key, distinct_id, **options)


async def get_feature_flag(
    key: str, distinct_id: Any = None, *, instance: str = "default", **options: Any
) -> bool | str | None:
    """`phactor.get_feature_flag` off the loop."""
    view = _view(instance)
    return None if view is None else await view.get_feature_flag(key, distinct_id, **options)


async def get_feature_flag_result(
    key: str, distinct_id: Any = None, *, instance: str = "default", **options: Any
) -> FeatureFlagResult | None:
    """`phactor.get_feature_flag_result` off the loop."""
    view = _view(instance)
    if view is None:
        return None
    return await view.get_feature_flag_result(key, distinct_id, **options)


async def get_feature_flag_payload(
    key: str, distinct_id: Any = None, *, instance: str = "default", **options: Any
) -> Any:
    """`phactor.get_feature_flag_payload` off the loop."""
    view = _view(instance)
    if view is None:
        return None
    return await view.get_feature_flag_payload(key, distinct_id, **options)


async def get_all_flags(
    distinct_id: Any = None, *, instance: str = "default", **options: Any
) -> dict[str, Any]:
    """`phactor.get_all_flags` off the loop."""
    view = _view(instance)
    return {} if view is None else await view.get_all_flags(distinct_id, **options)


async def get_all_flags_and_payloads(
    distinct_id: Any = None, *, instance: str = "default", **options: Any
) -> dict[str, dict[str, Any]]:
    """`phactor.get_all_flags_and_payloads` off the loop."""
    view = _view(instance)
    if view is None:
        return {"featureFlags": {}, "featureFlagPayloads": {}}
    return await view.get_all_flags_and_payloads(distinct_id, **options)


async def reload_feature_flags(*, timeout: float | None = None, instance: str = "default") -> bool:
    """`phactor.reload_feature_flags` off the loop."""
    view = _view(instance)
    return False if view is None else await view.reload_feature_flags(timeout)


async def flush(timeout: float | None = None, *, instance: str = "default") -> bool:
    """`phactor.flush` off the loop (NotStarted for a name that is not running)."""
    return await AsyncInstance(registry.lookup(instance)).flush(timeout)


async def stop(name: str = "default", timeout: float = 10.0) -> bool:
    """`phactor.stop` off the loop: flush within `timeout`, then stop the named instance."""
    inst = registry.by_name.get(name)
    if inst is None:
        return False
    return await AsyncInstance(inst).stop(timeout)
