"""The background's turns per batch (issue 16 item 8): what the app loses to phactor's threads
is the GIL turns they take, so the pipeline wakes per batch, not per event or per Sender
round trip."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from conftest import assert_ledger, wait_until

from phactor.batcher import Batcher
from phactor.devserver import DevServer


@pytest.fixture
def batcher_messages(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The type of every message the Batchers handle (the real handler still runs)."""
    seen: list[str] = []
    handle = Batcher.handle

    def counting(self: Batcher, message: Any) -> Any:
        seen.append(type(message).__name__)
        return handle(self, message)

    monkeypatch.setattr(Batcher, "handle", counting)
    return seen


@pytest.mark.parametrize("senders", [1, 2])
def test_a_sender_takes_its_next_ready_batch_without_waking_the_batcher(
    devserver: DevServer, start_instance: Any, batcher_messages: list[str], senders: int
) -> None:
    inst = start_instance(
        api_key="phc_test", host=devserver.url, flush_at=20, senders=senders, gzip=False,
        enable_error_tracking=False, flush_interval=3600, max_queue_size=100_000,
    )  # fmt: skip
    for i in range(4000):  # 200 batches, captured faster than they are sent
        inst.capture("e", distinct_id=f"u{i % 50}")
    assert inst.flush(30)
    stats = assert_ledger(inst)
    assert stats["sent"] == 4000
    batches = devserver.request_count("capture")
    # Before: every batch ended with a SenderIdle to the Batcher (>= 1 message per batch).
    # It stays the fallback when a drain finds the Sender's take refused (seen once under load
    # at the final flush): a few, never one per batch.
    assert batcher_messages.count("SenderIdle") <= 2, batcher_messages
    assert len(batcher_messages) < batches / 2, (len(batcher_messages), batches)


def test_partial_batches_still_drain_on_flush_while_senders_are_busy(
    devserver: DevServer, start_instance: Any
) -> None:
    inst = start_instance(
        api_key="phc_test", host=devserver.url, flush_at=50, senders=1, gzip=False,
        enable_error_tracking=False, flush_interval=3600,
    )  # fmt: skip
    done = threading.Event()

    def capture() -> None:
        for i in range(1234):  # not a multiple of flush_at: a partial batch is left
            inst.capture("e", distinct_id=f"u{i}")
        done.set()

    t = threading.Thread(target=capture)
    t.start()
    t.join(30)
    assert done.is_set()
    assert inst.flush(30)
    assert assert_ledger(inst)["sent"] == 1234


def test_a_ready_batch_goes_to_an_idle_sender_without_waking_the_batcher(
    devserver: DevServer, start_instance: Any, batcher_messages: list[str]
) -> None:
    inst = start_instance(
        api_key="phc_test", host=devserver.url, flush_at=20, gzip=False,
        enable_error_tracking=False, flush_interval=3600,
    )  # fmt: skip
    for burst in range(10):  # a batch at a time, each delivered before the next is captured
        for i in range(20):
            inst.capture("e", distinct_id=f"u{i}")
        assert devserver.wait_for(20 * (burst + 1), timeout=10)
        # ... and the Sender is idle again (parked; code without parking: nothing to wait for).
        assert wait_until(lambda: getattr(inst._buffer, "_parked", True))
    # Before: the buffer woke the Batcher for every batch (10 Wakes); now only the first event
    # does (to arm the flush timer), and each ready batch goes to a parked Sender.
    assert batcher_messages.count("Wake") <= 2, batcher_messages
    assert inst.flush(10)
    assert assert_ledger(inst)["sent"] == 200


def test_batches_a_sender_takes_itself_keep_within_max_batch_bytes(
    devserver: DevServer, start_instance: Any
) -> None:
    inst = start_instance(
        api_key="phc_test", host=devserver.url, flush_at=20, gzip=False, senders=1,
        enable_error_tracking=False, max_batch_bytes=2048, max_queue_size=10_000,
    )  # fmt: skip
    for i in range(400):
        inst.capture("e", distinct_id=f"u{i}", properties={"pad": "x" * 150})
    assert inst.flush(30)
    assert assert_ledger(inst)["sent"] == 400
    sizes = [r.body_bytes for r in devserver.requests if r.endpoint == "capture"]
    assert sizes and max(sizes) <= 2048, max(sizes)
