"""EventBuffer ledger and CircuitBreaker: the invariant, requeue order, flush waits, probes."""

from __future__ import annotations

import threading
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from phactor import buffer as buffer_module
from phactor.buffer import CircuitBreaker, EventBuffer


def ledger(buf: EventBuffer) -> dict[str, Any]:
    s = buf.stats()
    assert s["captured"] == s["sent"] + sum(s["dropped"].values()) + s["queued"] + s["in_flight"], s
    return s


def seqs(buf: EventBuffer) -> list[int]:
    return [seq for seq, _ in buf._queue]


def test_requeue_goes_back_in_sequence_order() -> None:
    buf = EventBuffer(100, 3)
    for i in range(9):
        assert buf.offer(b"e%d" % i)
    a = buf.take("a", 3, 10_000)
    b = buf.take("b", 3, 10_000)
    assert a is not None and b is not None
    # b's batch (4..6) comes back first, then a's (1..3): the queue stays ordered.
    buf.settle("b", requeue=b.items)
    buf.settle("a", requeue=a.items)
    assert seqs(buf) == list(range(1, 10))
    assert ledger(buf)["requeued"] == 6


def test_requeue_without_room_counts_queue_full() -> None:
    buf = EventBuffer(4, 2)
    for _ in range(2):
        buf.offer(b"x")
    batch = buf.take("a", 2, 10_000)
    assert batch is not None
    for _ in range(3):
        buf.offer(b"y")
    buf.settle("a", requeue=batch.items)
    s = ledger(buf)
    assert s["dropped"] == {"queue_full": 1}
    assert s["queued"] == 4
    assert seqs(buf)[0] == 1  # the oldest is kept


def test_requeue_after_close_is_counted_under_the_close_reason() -> None:
    buf = EventBuffer(10, 2)
    buf.offer(b"x")
    buf.offer(b"y")
    batch = buf.take("a", 2, 10_000)
    buf.offer(b"z")
    assert buf.close("shutdown") == 1
    buf.settle("a", requeue=batch.items)
    s = ledger(buf)
    assert s["dropped"] == {"shutdown": 3}
    assert s["queued"] == 0


def test_late_settle_after_abandon_is_not_counted_twice() -> None:
    buf = EventBuffer(10, 2)
    buf.offer(b"x")
    buf.take("a", 2, 10_000)
    assert buf.abandon_in_flight("shutdown") == 1
    buf.settle("a", sent=1)
    s = ledger(buf)
    assert s["sent"] == 0 and s["dropped"] == {"shutdown": 1}


def test_take_respects_the_byte_budget_but_always_takes_one() -> None:
    buf = EventBuffer(100, 100)
    for _ in range(10):
        buf.offer(b"x" * 99)
    batch = buf.take("a", 100, 350)
    assert batch is not None and len(batch) == 3
    buf.settle("a", sent=3)
    buf.offer(b"y" * 1000)
    sizes = []
    while (batch := buf.take("b", 100, 350)) is not None:
        sizes.append([len(d) for _, d in batch.items])
        buf.settle("b", sent=len(batch))
    assert sizes == [[99] * 3, [99] * 3, [99], [1000]]  # over the budget alone: still sent
    ledger(buf)


def test_wait_through_true_when_done_false_on_timeout() -> None:
    buf = EventBuffer(10, 5)
    buf.offer(b"x")
    target = buf.high_water()
    assert buf.wait_through(target, 0.01) is False
    buf.take("a", 5, 10_000)
    buf.offer(b"newer")  # after the target: not waited for
    threading.Timer(0.05, lambda: buf.settle("a", sent=1)).start()
    assert buf.wait_through(target, 5.0) is True


def test_wait_through_returns_false_once_its_events_ran_out_of_retries() -> None:
    buf = EventBuffer(10, 5)
    buf.offer(b"x")
    target = buf.high_water()
    batch = buf.take("a", 5, 10_000)
    threading.Timer(0.05, lambda: buf.settle("a", requeue=batch.items)).start()
    # No timeout: it must still end, with False, and the event is queued again.
    assert buf.wait_through(target, None) is False
    assert ledger(buf)["queued"] == 1


def test_wait_through_ignores_exhausted_batches_newer_than_its_target() -> None:
    buf = EventBuffer(10, 1)
    buf.offer(b"old")
    target = buf.high_water()
    buf.offer(b"new")
    old = buf.take("a", 1, 10_000)
    new = buf.take("b", 1, 10_000)
    assert old is not None and new is not None
    buf.settle("b", requeue=new.items)
    assert buf.wait_through(target, 0.01) is False  # timed out: still waiting for "old"
    threading.Timer(0.05, lambda: buf.settle("a", sent=1)).start()
    assert buf.wait_through(target, 5.0) is True


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["offer", "take", "sent", "requeue", "drop", "give_back", "abandon"]),
            st.sampled_from(["a", "b", "c"]),
            st.integers(1, 5),
        ),
        max_size=60,
    )
)
def test_invariant_holds_after_any_sequence(ops: list[tuple[str, str, int]]) -> None:
    buf = EventBuffer(8, 3)
    for op, holder, n in ops:
        batch = buf._in_flight.get(holder)
        if op == "offer":
            for _ in range(n):
                buf.offer(b"e")
        elif op == "take":
            buf.take(holder, n, 10_000)
        elif batch is not None and op == "sent":
            buf.settle(holder, sent=len(batch))
        elif batch is not None and op == "requeue":
            buf.settle(holder, requeue=batch.items)
        elif batch is not None and op == "drop":
            buf.settle(holder, dropped={"rejected": len(batch)})
        elif op == "give_back":
            buf.give_back(holder)
        elif op == "abandon":
            buf.abandon_in_flight("shutdown")
        ledger(buf)
        order = seqs(buf)
        assert order == sorted(order)
        assert len(order) <= 8


def test_breaker_closed_lets_everyone_through() -> None:
    breaker = CircuitBreaker()
    assert breaker.acquire("a") and breaker.acquire("b")
    assert breaker.state() == "closed"


def test_breaker_open_allows_one_probe_then_full_speed_after_success() -> None:
    breaker = CircuitBreaker()
    breaker.failed("a", 0.0)
    assert breaker.is_open
    assert breaker.acquire("b")  # b is the probe
    got: list[str] = []
    done = threading.Event()

    def second() -> None:
        breaker.acquire("c")
        got.append("c")
        done.set()

    threading.Thread(target=second, daemon=True).start()
    assert not done.wait(0.1)  # c waits while b's probe is out
    breaker.succeeded("b")
    assert done.wait(5.0) and got == ["c"]
    assert breaker.state() == "closed"


def test_breaker_waits_for_the_backoff_and_a_failed_probe_frees_the_slot() -> None:
    now = [0.0]
    breaker = CircuitBreaker(clock=lambda: now[0])
    breaker.failed("a", 10.0)
    result: list[bool] = []
    t = threading.Thread(target=lambda: result.append(breaker.acquire("b")), daemon=True)
    t.start()
    t.join(0.1)
    assert t.is_alive()  # the clock has not reached the back-off
    now[0] = 11.0
    t.join(5.0)
    assert result == [True]
    breaker.failed("b", 0.0)  # the probe failed: the slot is free for the next one
    assert breaker.acquire("c")
    assert breaker.failures == 2


def test_breaker_shut_and_abort_release_waiters() -> None:
    breaker = CircuitBreaker()
    breaker.failed("a", 60.0)
    abort = threading.Event()
    abort.set()
    assert breaker.acquire("b", abort) is False
    result: list[bool] = []
    t = threading.Thread(target=lambda: result.append(breaker.acquire("c")), daemon=True)
    t.start()
    breaker.shut()
    t.join(5.0)
    assert result == [False]


class _Reentered:
    """As if a signal handler interrupted this thread inside an app-facing buffer call."""

    def __enter__(self) -> None:
        buffer_module._thread.busy = True

    def __exit__(self, *exc_info: object) -> None:
        buffer_module._thread.busy = False


@given(
    st.lists(
        st.tuples(
            st.sampled_from(
                ["offer", "handler_offer", "handler_drop", "handler_stats", "take", "sent", "close"]
            ),
            st.integers(1, 4),
        ),
        max_size=60,
    )
)
def test_calls_from_a_signal_handler_never_lock_and_are_counted_once(
    ops: list[tuple[str, int]],
) -> None:
    buf = EventBuffer(8, 3)
    # A handler that waits on the lock its own thread holds would hang: hold it throughout the
    # handler's calls (as the interrupted frame does); only the lock-free path can go on.
    offered = 0
    for op, n in ops:
        if op == "offer":
            for _ in range(n):
                buf.offer(b"main")
            offered += n
        elif op.startswith("handler_"):
            with _Reentered(), buf._lock:
                if op == "handler_offer":
                    # Never blocks; refused (False, counted) only when full or closed.
                    for _ in range(n):
                        refused = buf.queue_length() >= 8 or buf._closed
                        assert buf.offer(b"handler") is not refused
                    offered += n
                elif op == "handler_drop":
                    buf.drop_at_capture("before_send")
                    offered += 1
                else:
                    s = buf.stats()  # a lock-free snapshot that still adds up
                    accounted = s["sent"] + sum(s["dropped"].values()) + s["queued"]
                    assert s["captured"] == accounted + s["in_flight"] == offered, s
                    assert buf.queue_length() == s["queued"]
        elif op == "take":
            buf.take("a", n, 10_000)
        elif op == "sent" and "a" in buf._in_flight:
            buf.settle("a", sent=len(buf._in_flight["a"]))
        elif op == "close":
            buf.close("shutdown")
        stats = ledger(buf)  # locked: merges what the handler handed off
        assert stats["captured"] == offered
        assert not buf._handoff
        order = seqs(buf)
        assert order == sorted(order)
        assert len(order) <= 8


def test_refusals_during_a_long_outage_keep_memory_bounded() -> None:
    # Refusals are counted without the lock and folded in by the next locked call; in an
    # outage nothing else takes the lock, and the waiting list grew by one entry per refused
    # capture (990,000 in the benchmark's outage run: +8 MiB).
    buf = EventBuffer(10, 5)
    for _ in range(10):
        assert buf.offer(b"{}")
    for _ in range(100_000):
        assert not buf.offer(b"{}")
    assert len(buf._drops) < 2 * buffer_module._MERGE_DROPS_AT
    assert buf.stats()["dropped"] == {"queue_full": 100_000}
