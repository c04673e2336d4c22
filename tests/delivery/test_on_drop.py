"""`on_drop(reason, count)`: drops reported from a phactor thread, batched per reason, exactly.

Against a real loopback server (401, down); the reporting arithmetic itself by hypothesis.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from typing import Any

import pytest
from conftest import StartInstance, assert_ledger
from hypothesis import given
from hypothesis import strategies as st

from phactor.devserver import DevServer
from phactor.health import DeliveryHealth

API_KEY = "phc_on_drop_test_key_0123456789abcdef"


def options(devserver: DevServer, **overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "api_key": API_KEY,
        "host": devserver.url,
        "flush_at": 10,
        "flush_interval": 0.05,
        "max_retries": 0,
        "retry_base_delay": 0.01,
        "retry_max_delay": 0.02,
        "request_timeout": 2.0,
        "enable_error_tracking": False,
    }
    base.update(overrides)
    return base


class Recorder:
    """An on_drop callback that records (reason, count, thread) and can wait for a total."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int, int]] = []
        self._cond = threading.Condition()

    def __call__(self, reason: str, count: int) -> None:
        with self._cond:
            self.calls.append((reason, count, threading.get_ident()))
            self._cond.notify_all()

    def totals(self) -> Counter[str]:
        with self._cond:
            total: Counter[str] = Counter()
            for reason, count, _ in self.calls:
                total[reason] += count
            return total

    def wait_for(self, expected: dict[str, int], timeout: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                total: Counter[str] = Counter()
                for reason, count, _ in self.calls:
                    total[reason] += count
                if all(total[r] >= n for r, n in expected.items()):
                    return True
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)


def test_unauthorized_drops_are_reported_from_a_phactor_thread(
    devserver: DevServer, start_instance: StartInstance
) -> None:
    devserver.set_mode("error", status=401)
    recorder = Recorder()
    inst = start_instance(**options(devserver, on_drop=recorder))
    for i in range(30):
        inst.capture("ev", "user", {"i": i})
    assert inst.flush(5.0)
    assert recorder.wait_for({"unauthorized": 30})
    stats = assert_ledger(inst)
    assert stats["dropped"] == {"unauthorized": 30}
    assert recorder.totals() == Counter(stats["dropped"])
    assert all(ident != threading.get_ident() for _, _, ident in recorder.calls)
    assert all(count > 0 for _, count, _ in recorder.calls)


def test_a_burst_of_queue_full_drops_is_batched_and_never_runs_on_the_caller(
    devserver: DevServer, start_instance: StartInstance
) -> None:
    devserver.set_mode("down")
    release = threading.Event()
    recorder = Recorder()

    def slow(reason: str, count: int) -> None:
        recorder(reason, count)
        release.wait(10)  # a callback that blocks: the app's captures must not notice

    inst = start_instance(**options(devserver, on_drop=slow, max_queue_size=5))
    started = time.monotonic()
    returned = [inst.capture("ev", "user", {"i": i}) for i in range(2000)]
    took = time.monotonic() - started
    release.set()
    assert took < 5.0  # captures returned promptly while on_drop was blocked
    refused = returned.count(None)
    assert refused >= 1990
    assert recorder.wait_for({"queue_full": refused})
    assert all(ident != threading.get_ident() for _, _, ident in recorder.calls)
    queue_full_calls = [c for c in recorder.calls if c[0] == "queue_full"]
    assert len(queue_full_calls) < refused // 10  # batched per reason, not one call per drop
    assert recorder.totals()["queue_full"] == inst.stats()["dropped"]["queue_full"]


def test_an_on_drop_that_raises_is_logged_rate_limited_and_ignored(
    devserver: DevServer, start_instance: StartInstance, caplog: pytest.LogCaptureFixture
) -> None:
    calls = Recorder()

    def broken(reason: str, count: int) -> None:
        calls(reason, count)
        raise RuntimeError("metrics backend down")

    caplog.set_level(logging.ERROR, logger="phactor")
    inst = start_instance(**options(devserver, on_drop=broken, max_queue_size=1, flush_at=1000))
    devserver.set_mode("down")
    for round_ in range(20):
        for _ in range(3):  # a queue of 1 (plus 1 in flight at most): at least one queue_full
            inst.capture("ev", "user")
        assert calls.wait_for({"queue_full": round_ + 1})  # reported at a later tick
    failures = [r for r in caplog.records if "on_drop_callback_failed" in r.getMessage()]
    assert 1 <= len(failures) <= 6  # 1st, 2nd, 4th, 8th, 16th: never one per failure
    assert "metrics backend down" in failures[0].getMessage()
    devserver.set_mode("up")
    # A request still in flight to the down server when it came back fails, and with
    # max_retries=0 its batch goes back to the queue: flush() then returns False at once, as
    # documented. The next flush delivers it.
    assert any(inst.flush(5.0) for _ in range(3))
    stats = assert_ledger(inst)
    assert stats["restarts"] == 0  # the Batcher that ran the callback never crashed
    assert stats["sent"] >= 1 and devserver.count() == stats["sent"]


def test_flush_and_stop_called_from_on_drop_return_instead_of_waiting(
    devserver: DevServer, start_instance: StartInstance
) -> None:
    answers: list[bool] = []
    done = threading.Event()
    holder: dict[str, Any] = {}

    def flushes(reason: str, count: int) -> None:
        answers.append(holder["inst"].flush())  # on the Batcher's thread: cannot wait for it
        done.set()

    inst = start_instance(**options(devserver, on_drop=flushes, max_queue_size=1, flush_at=1000))
    holder["inst"] = inst
    devserver.set_mode("down")
    inst.capture("ev", "user")
    assert inst.capture("ev", "user") is None  # queue_full
    assert done.wait(5.0)
    assert answers == [False]
    devserver.set_mode("up")
    assert inst.flush(5.0)  # the Batcher is not stuck
    assert devserver.count() == 1


def test_drops_counted_while_stopping_get_a_final_report(
    devserver: DevServer, start_instance: StartInstance
) -> None:
    devserver.set_mode("down")
    recorder = Recorder()
    inst = start_instance(**options(devserver, on_drop=recorder, flush_interval=60.0))
    for _ in range(3):
        inst.capture("ev", "user")
    inst.stop(timeout=0.1)
    stats = assert_ledger(inst)
    assert stats["dropped"] == {"shutdown": 3}
    assert recorder.totals() == Counter(stats["dropped"])


# --- the reporting arithmetic, for any sequence of drops and reports -----------------------

REASONS = st.sampled_from(["queue_full", "unauthorized", "rejected", "shutdown", "ünïcode"])
STEPS = st.lists(
    st.one_of(st.tuples(st.just("drop"), REASONS, st.integers(1, 10**6)), st.just(("report",))),
    max_size=40,
)


class _NoLog:
    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: None


@given(steps=STEPS, fail=st.booleans())
def test_every_drop_is_reported_exactly_once_and_per_reason(
    steps: list[tuple[Any, ...]], fail: bool
) -> None:
    reported: list[tuple[str, int]] = []

    def on_drop(reason: str, count: int) -> None:
        reported.append((reason, count))
        if fail:
            raise ValueError("ignored")

    health = DeliveryHealth(watchdog_interval=1.0, on_drop=on_drop, log=_NoLog())
    counts: Counter[str] = Counter()
    for step in [*steps, ("report",)]:
        if step[0] == "drop":
            counts[step[1]] += step[2]
        else:
            before = len(reported)
            health.report_drops(dict(counts))
            batch = reported[before:]
            assert len({reason for reason, _ in batch}) == len(batch)  # one call per reason
            assert all(count > 0 for _, count in batch)
    total: Counter[str] = Counter()
    for reason, count in reported:
        total[reason] += count
    assert total == counts


def test_a_drop_on_an_idle_instance_is_reported_without_another_event(
    start_instance: StartInstance, devserver: DevServer
) -> None:
    # An idle Batcher arms no timer; a drop (here by before_send, on the caller's thread) must
    # still reach on_drop on its own.
    recorder = Recorder()
    inst = start_instance(
        **options(devserver, on_drop=recorder, before_send=lambda e: None, flush_interval=0.05)
    )
    assert inst.capture("filtered", "u1") is None
    assert recorder.wait_for({"before_send": 1}), recorder.calls
    assert_ledger(inst)


def test_a_refused_batch_is_reported_after_the_queue_went_idle(
    start_instance: StartInstance, devserver: DevServer
) -> None:
    recorder = Recorder()
    devserver.set_mode("error", status=401)
    inst = start_instance(**options(devserver, on_drop=recorder))
    assert inst.capture("refused", "u1") is not None
    assert inst.flush(5)
    assert inst.queue_length() == 0 and inst.stats()["in_flight"] == 0
    assert inst.stats()["dropped"] == {"unauthorized": 1}
    assert recorder.wait_for({"unauthorized": 1}), recorder.calls
