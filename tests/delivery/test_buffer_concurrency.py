"""The buffer under concurrent callers (issue 16 item 4): appends never wait for the lock that
the Batcher's take and the Senders' settle hold, and the ledger still adds up at every
observation, per-thread order and the queue bound included."""

from __future__ import annotations

import threading
from typing import Any

from conftest import assert_ledger
from hypothesis import given
from hypothesis import strategies as st

from phactor.buffer import EventBuffer
from phactor.devserver import DevServer


def ledger(buf: EventBuffer) -> dict[str, Any]:
    s = buf.stats()
    assert s["captured"] == s["sent"] + sum(s["dropped"].values()) + s["queued"] + s["in_flight"], s
    return s


def _run_bounded(target: Any, timeout: float = 5.0) -> bool:
    """Run `target` on a thread; True when it finished within `timeout` (never hangs the test)."""
    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(timeout)
    return not t.is_alive()


def test_offer_does_not_wait_for_a_taker_or_a_settler_holding_the_lock() -> None:
    buf = EventBuffer(100, 10)
    results: list[bool] = []
    # As the Batcher taking a batch or a Sender settling one: the buffer's lock is held.
    with buf._lock:
        finished = _run_bounded(lambda: results.extend(buf.offer(b"e") for _ in range(50)))
        refused = buf.offer  # a full queue is refused at once too, lock or no lock
        buf.max_queue_size = 50
        refused_at_once = _run_bounded(lambda: results.append(refused(b"late")))
    assert finished and refused_at_once
    assert results == [True] * 50 + [False]
    s = ledger(buf)
    assert s["captured"] == 51 and s["queued"] == 50 and s["dropped"] == {"queue_full": 1}


def test_capture_returns_while_the_buffer_lock_is_held(
    devserver: DevServer, start_instance: Any
) -> None:
    inst = start_instance(
        api_key="phc_test", host=devserver.url, flush_at=10, gzip=False,
        enable_error_tracking=False,
    )  # fmt: skip
    uuids: list[str | None] = []

    def capture() -> None:
        for i in range(30):
            uuids.append(inst.capture("e", distinct_id=f"u{i}"))

    with inst._buffer._lock:  # a Sender settling, held as long as you like
        finished = _run_bounded(capture)
    assert finished
    assert all(uuids) and len(uuids) == 30
    assert inst.flush(10)
    assert assert_ledger(inst)["sent"] == 30


@given(
    threads=st.integers(1, 6),
    per_thread=st.integers(0, 150),
    max_queue=st.integers(1, 60),
    flush_at=st.integers(1, 20),
    outcomes=st.lists(st.sampled_from(["sent", "requeue", "drop"]), min_size=1, max_size=8),
    refuse_every=st.integers(0, 7),
)
def test_concurrent_appends_keep_the_ledger_order_and_bound(
    threads: int,
    per_thread: int,
    max_queue: int,
    flush_at: int,
    outcomes: list[str],
    refuse_every: int,
) -> None:
    buf = EventBuffer(max_queue, flush_at)
    accepted: list[list[bool]] = [[] for _ in range(threads)]
    seen: dict[int, list[tuple[int, int]]] = {t: [] for t in range(threads)}  # thread -> (seq, i)
    producers_done = threading.Event()
    problems: list[str] = []
    start = threading.Barrier(threads + 2)

    def producer(t: int) -> None:
        start.wait()
        for i in range(per_thread):
            if refuse_every and i % refuse_every == 0:
                buf.drop_at_capture("before_send")  # refused before the queue, counted
                continue
            accepted[t].append(buf.offer(b"%d:%d" % (t, i)))

    def taker() -> None:
        # The Batcher and a Sender in one: take, then settle with each outcome in turn.
        start.wait()
        k = 0
        while True:
            done = producers_done.is_set()
            batch = buf.take("s#1", flush_at, 10_000)
            if batch is None:
                if done and buf.queue_length() == 0:
                    return
                continue
            outcome = outcomes[k % len(outcomes)] if k < 500 else "sent"  # requeues end
            k += 1
            if outcome == "sent":
                for seq, data in batch.items:
                    t, i = map(int, data.split(b":"))
                    seen[t].append((seq, i))
                buf.settle("s#1", sent=len(batch))
            elif outcome == "requeue":
                buf.settle("s#1", requeue=batch.items)
            else:
                buf.settle("s#1", dropped={"rejected": len(batch)})

    def observer() -> None:
        start.wait()
        while not producers_done.is_set():
            s = buf.stats()
            accounted = s["sent"] + sum(s["dropped"].values()) + s["queued"] + s["in_flight"]
            if s["captured"] != accounted:
                problems.append(f"ledger: {s}")
            # Racing callers overshoot the bound by at most one event each (documented).
            if buf.queue_length() > max_queue + threads - 1:
                problems.append(f"queue {buf.queue_length()} > {max_queue} + {threads - 1}")

    workers = [threading.Thread(target=producer, args=(t,)) for t in range(threads)]
    others = [threading.Thread(target=taker), threading.Thread(target=observer)]
    for w in workers + others:
        w.start()
    for w in workers:
        w.join(30)
    producers_done.set()
    for w in others:
        w.join(30)
    assert not any(w.is_alive() for w in workers + others), "a thread hung"
    assert not problems, problems[:3]
    s = ledger(buf)
    total = threads * per_thread
    assert s["captured"] == total
    refused = sum(not ok for row in accepted for ok in row)
    assert s["dropped"].get("queue_full", 0) >= refused  # a requeue without room adds more
    assert s["dropped"].get("before_send", 0) == total - sum(map(len, accepted))
    assert s["queued"] == s["in_flight"] == 0
    for t in range(threads):
        # Sequence numbers follow each thread's own order (a requeued event keeps its number).
        by_seq = [i for _, i in sorted(seen[t])]
        assert by_seq == sorted(by_seq)
