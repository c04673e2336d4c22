"""An idle instance arms no flush timer: the first event arms it, an empty buffer disarms it.

Issue 16 item 2: with 100 instances and nothing to send, the Batchers' flush ticks were the
process's wake-ups. Counted here on the shared scheduler: the callbacks it holds.
"""

from __future__ import annotations

from conftest import StartInstance, assert_ledger, wait_until
from hypothesis import given
from hypothesis import strategies as st

from phactor.devserver import DevServer
from phactor.timer import scheduler

KEY = "phc_batcher_idle"


def pending_timers() -> int:
    """Callbacks the shared scheduler will still run."""
    return scheduler.pending()


def test_idle_instances_arm_no_timer(devserver: DevServer, start_instance: StartInstance) -> None:
    before = pending_timers()
    instances = [
        start_instance(api_key=KEY, host=devserver.url, flush_interval=0.05) for _ in range(5)
    ]
    # Before the fix every Batcher armed its tick at start: 5 more callbacks pending.
    assert pending_timers() == before
    inst = instances[0]
    inst.capture("first", "u1")
    # No flush(): the event's own timer sends it.
    assert devserver.wait_for(1, timeout=5)
    # Sent and settled: the Batcher disarms again (one bounded tick later at most).
    assert wait_until(lambda: pending_timers() == before and inst.stats()["in_flight"] == 0)
    assert_ledger(inst)


@given(bursts=st.lists(st.integers(min_value=1, max_value=30), min_size=1, max_size=4))
def test_every_event_goes_out_by_timer_and_the_batcher_goes_idle(
    bursts: list[int],
) -> None:
    # A devserver and an instance per example would be slow: one for the whole property.
    server = DevServer().start()
    try:
        import phactor

        inst = phactor.start(
            f"idle-prop-{id(bursts)}",
            api_key=KEY,
            host=server.url,
            flush_at=10_000,
            flush_interval=0.02,
        )
        try:
            base = pending_timers()
            total = 0
            for size in bursts:
                for i in range(size):
                    inst.capture("e", f"u{i}")
                total += size
                # Delivered by the interval alone (flush_at is never reached), each once.
                assert server.wait_for(total, timeout=5)
                assert wait_until(
                    lambda: inst.stats()["in_flight"] == 0 and inst.queue_length() == 0
                )
                assert wait_until(lambda: pending_timers() <= base)
            assert set(server.uuid_counts().values()) == {1}
            stats = assert_ledger(inst)
            assert stats["sent"] == total
        finally:
            inst.stop(timeout=2)
    finally:
        server.stop()
