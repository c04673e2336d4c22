"""Outages, concurrency and shutdown against a real loopback server, counted exactly."""

from __future__ import annotations

import datetime as dt
import itertools
import logging
import threading
import time
from collections import Counter
from typing import Any

import pytest
from conftest import assert_ledger as ledger
from conftest import stored_uuids, wait_until

import phactor
from phactor.devserver import DevServer

API_KEY = "phc_outage_test_key_0123456789"


def fast(**overrides: Any) -> dict[str, Any]:
    options: dict[str, Any] = {
        "api_key": API_KEY,
        "flush_at": 10,
        "flush_interval": 0.1,
        "senders": 2,
        "max_retries": 3,
        "retry_base_delay": 0.01,
        "retry_max_delay": 0.05,
        "request_timeout": 3.0,
        "enable_error_tracking": False,
    }
    options.update(overrides)
    return options


def arrival(request: Any) -> float:
    return dt.datetime.fromisoformat(request.received_at.replace("Z", "+00:00")).timestamp()


def flush_until_true(inst: phactor.Instance, timeout: float = 15.0) -> bool:
    # flush() returns False early while batches run out of retries; call again (bounded).
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if inst.flush(max(deadline - time.monotonic(), 0.0)):
            return True
    return False


def test_down_then_up_delivers_everything_within_capacity(
    devserver: DevServer, instance_name: str
) -> None:
    devserver.set_mode("down")
    inst = phactor.start(
        instance_name, host=devserver.url, **fast(max_queue_size=50, max_retries=1)
    )
    returned = [inst.capture("ev", "user", {"i": i}) for i in range(200)]
    accepted = [u for u in returned if u is not None]
    assert devserver.wait_for_requests(6, timeout=10)  # probing while down
    down = ledger(inst)
    assert down["sent"] == 0 and down["circuit"] == "open"
    assert down["queued"] <= 50 and down["requeued"] > 0  # exhausted batches went back
    devserver.set_mode("up")
    assert flush_until_true(inst)
    s = ledger(inst)
    counts = stored_uuids(devserver)
    assert all(n == 1 for n in counts.values())
    assert set(counts) <= set(accepted)
    assert s["sent"] == len(counts) >= 50
    # The rest are counted, under one named reason: nothing unaccounted.
    assert s["dropped"] == {"queue_full": 200 - s["sent"]}
    assert s["circuit"] == "closed" and s["queued"] == 0 and s["in_flight"] == 0


def test_flush_without_timeout_returns_false_during_an_outage(
    devserver: DevServer, instance_name: str
) -> None:
    devserver.set_mode("error", status=503)
    inst = phactor.start(instance_name, host=devserver.url, **fast(max_retries=2))
    uuids = [inst.capture("ev", "user", {"i": i}) for i in range(10)]
    assert inst.flush(None) is False  # must not wait for the outage to end
    s = ledger(inst)
    assert s["sent"] == 0 and s["dropped"] == {}
    devserver.set_mode("up")
    assert flush_until_true(inst)  # the next flush retries the requeued batch
    assert stored_uuids(devserver) == Counter({u: 1 for u in uuids})
    ledger(inst)


def test_one_probe_at_a_time_while_failing(devserver: DevServer, instance_name: str) -> None:
    devserver.set_mode("error", status=503)
    devserver.delay(0.15, endpoint="capture")
    inst = phactor.start(
        instance_name, host=devserver.url, **fast(senders=4, max_retries=100, retry_max_delay=0.01)
    )
    for i in range(40):
        inst.capture("ev", "user", {"i": i})
    inst.flush(0)
    assert devserver.wait_for_requests(10, timeout=20)
    devserver.reset_faults()
    assert flush_until_true(inst)
    failing = [r for r in devserver.requests if r.status == 503]
    starts = sorted(arrival(r) for r in failing)
    # The first wave (one request per Sender) goes out before anyone knows of the outage;
    # after it, each request starts only after the previous probe was answered (0.15 s).
    later = starts[4:]
    assert len(later) >= 5
    gaps = [b - a for a, b in itertools.pairwise(later)]
    assert min(gaps) >= 0.1, gaps
    s = ledger(inst)
    assert s["sent"] == 40
    assert all(n == 1 for n in stored_uuids(devserver).values())


def test_concurrent_capture_from_8_threads_into_2_instances_during_faults(
    devserver: DevServer, instance_name: str
) -> None:
    devserver.fail_next(4, 500)
    devserver.drop_next(2, reset=True)
    devserver.fail_next(2, 429, headers={"Retry-After": "0"})
    devserver.drop_next(2)
    insts = [
        phactor.start(f"{instance_name}-{k}", host=devserver.url, **fast(max_retries=10))
        for k in range(2)
    ]
    returned: list[list[str | None]] = [[] for _ in range(8)]
    go = threading.Barrier(8)

    def work(t: int) -> None:
        go.wait()
        for i in range(150):
            returned[t].append(insts[(t + i) % 2].capture("ev", f"user-{t}", {"i": i}))

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(30)
    accepted = [u for r in returned for u in r]
    assert len(accepted) == 1200 and None not in accepted
    for inst in insts:
        assert flush_until_true(inst)
    stats = [ledger(inst) for inst in insts]
    assert sum(s["captured"] for s in stats) == 1200
    assert sum(s["sent"] for s in stats) == 1200
    assert all(s["dropped"] == {} for s in stats)
    assert sum(s["retries"] for s in stats) >= 10
    assert stored_uuids(devserver) == Counter({u: 1 for u in accepted})


def test_shutdown_with_the_endpoint_down_is_bounded_and_counted(
    devserver: DevServer, instance_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="phactor")
    devserver.set_mode("down")
    inst = phactor.start(instance_name, host=devserver.url, **fast(max_retries=1000))
    for i in range(35):
        inst.capture("ev", "user", {"i": i})
    began = time.monotonic()
    assert inst.stop(timeout=1.0) is False
    elapsed = time.monotonic() - began
    assert elapsed < 1.0 + 1.5  # a small margin past the deadline, never "forever"
    s = ledger(inst)
    assert s["sent"] == 0 and s["dropped"] == {"shutdown": 35}
    assert s["queued"] == 0 and s["in_flight"] == 0
    messages = [r.getMessage() for r in caplog.records]
    assert any("shutdown_dropped" in m for m in messages), messages
    assert not [m for m in messages if API_KEY in m]
    assert inst.capture("ev", "user") is None  # stopped: refused, and counted
    assert stored_uuids(devserver) == Counter()


def test_shutdown_while_a_sender_is_blocked_in_a_request(
    devserver: DevServer, instance_name: str
) -> None:
    devserver.delay(30, endpoint="capture")
    inst = phactor.start(instance_name, host=devserver.url, **fast(senders=1, request_timeout=60.0))
    for i in range(10):
        inst.capture("ev", "user", {"i": i})
    inst.flush(0)
    # Wait until the batch is in flight and the request reached the server: the Sender is
    # inside its request.
    assert wait_until(lambda: inst.stats()["in_flight"] == 10, timeout=10)
    assert devserver.wait_for_arrivals(1, timeout=10)
    sender = inst._registry.get("sender-0")
    assert sender is not None
    began = time.monotonic()
    assert inst.stop(timeout=0.5) is False
    assert time.monotonic() - began < 0.5 + 1.5
    final = ledger(inst)
    assert final["dropped"] == {"shutdown": 10} and final["sent"] == 0
    # Let the blocked request end (the server cuts its delay), then the late settle must not
    # count those events a second time.
    devserver.stop()
    assert sender.actor_stopped.wait(10)
    live = inst._buffer.stats()
    assert live["captured"] == 10 and live["sent"] == 0 and live["dropped"] == {"shutdown": 10}
