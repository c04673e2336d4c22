"""Delivery against a real misbehaving loopback server: one fault kind per test, counted exactly.

Every test checks the ledger invariant and that the server stored each uuid at most once
(except where a request timed out after the server had accepted it).
"""

from __future__ import annotations

import datetime as dt
import email.utils
import logging
import time
from collections import Counter
from typing import Any

import orjson
import pytest
from conftest import assert_ledger as ledger
from conftest import stored_uuids

import phactor
from phactor import DeliveryError
from phactor._version import __version__
from phactor.devserver import DevServer

API_KEY = "phc_secret_project_key_0123456789"


def fast(**overrides: Any) -> dict[str, Any]:
    """Small delays so the suite stays quick; one batch per `flush_at` events.

    Tests that count requests exactly pass `flush_interval=3600`, so a timer tick can never cut
    a batch in two while they capture.
    """
    options: dict[str, Any] = {
        "api_key": API_KEY,
        "flush_at": 10,
        "flush_interval": 0.2,
        "senders": 1,
        "max_retries": 5,
        "retry_base_delay": 0.01,
        "retry_max_delay": 0.05,
        "request_timeout": 3.0,
        "enable_error_tracking": False,
    }
    options.update(overrides)
    return options


def assert_stored_once(server: DevServer, uuids: list[str]) -> None:
    counts = stored_uuids(server)
    assert set(counts) == set(uuids)
    assert all(n == 1 for n in counts.values()), counts


def capture(inst: phactor.Instance, n: int, **props: Any) -> list[str]:
    out = []
    for i in range(n):
        uuid = inst.capture("ev", "user", {"i": i, **props})
        assert uuid is not None
        out.append(uuid)
    return out


def arrival(request: Any) -> float:
    return dt.datetime.fromisoformat(request.received_at.replace("Z", "+00:00")).timestamp()


def test_500_for_the_first_requests_then_200(devserver: DevServer, instance_name: str) -> None:
    devserver.fail_next(3, 500)
    inst = phactor.start(instance_name, host=devserver.url, **fast(flush_interval=3600))
    uuids = capture(inst, 10)
    assert inst.flush(10)
    assert devserver.request_count() == 4
    s = ledger(inst)
    assert s["sent"] == 10 and s["retries"] == 3 and s["dropped"] == {}
    # Every retry carried exactly the same events (same uuids), so the server can dedupe.
    assert [sorted(r.uuids) for r in devserver.requests] == [sorted(uuids)] * 4
    assert_stored_once(devserver, uuids)


@pytest.mark.parametrize("status", [408, 429, 502, 503])
def test_other_retryable_statuses(devserver: DevServer, instance_name: str, status: int) -> None:
    devserver.fail_next(1, status)
    inst = phactor.start(instance_name, host=devserver.url, **fast(flush_interval=3600))
    uuids = capture(inst, 10)
    assert inst.flush(10)
    assert devserver.request_count() == 2
    assert ledger(inst)["sent"] == 10
    assert_stored_once(devserver, uuids)


def test_429_retry_after_seconds_is_honoured(devserver: DevServer, instance_name: str) -> None:
    devserver.fail_next(1, 429, headers={"Retry-After": "1"})
    inst = phactor.start(instance_name, host=devserver.url, **fast(retry_max_delay=5.0))
    uuids = capture(inst, 10)
    assert inst.flush(10)
    first, second = devserver.requests
    assert first.status == 429 and second.status == 200
    # Correctness of the wait, not speed: the retry must not come before Retry-After.
    assert arrival(second) - arrival(first) >= 0.9
    assert ledger(inst)["sent"] == 10
    assert_stored_once(devserver, uuids)


def test_429_retry_after_http_date_is_honoured(devserver: DevServer, instance_name: str) -> None:
    not_before = int(time.time()) + 2
    devserver.fail_next(
        1, 429, headers={"Retry-After": email.utils.formatdate(not_before, usegmt=True)}
    )
    inst = phactor.start(instance_name, host=devserver.url, **fast(retry_max_delay=5.0))
    uuids = capture(inst, 10)
    assert inst.flush(10)
    first, second = devserver.requests
    assert first.status == 429 and second.status == 200
    assert arrival(second) >= not_before - 0.05  # received_at has millisecond resolution
    assert_stored_once(devserver, uuids)
    ledger(inst)


def test_retry_after_is_capped_by_retry_max_delay(devserver: DevServer, instance_name: str) -> None:
    devserver.fail_next(1, 503, headers={"Retry-After": "3600"})
    inst = phactor.start(instance_name, host=devserver.url, **fast(retry_max_delay=0.1))
    uuids = capture(inst, 10)
    assert inst.flush(10)  # an hour would have timed this out
    assert devserver.request_count() == 2
    assert_stored_once(devserver, uuids)
    ledger(inst)


@pytest.mark.parametrize("reset", [True, False])
def test_connection_closed_without_response(
    devserver: DevServer, instance_name: str, reset: bool
) -> None:
    devserver.drop_next(2, reset=reset)
    inst = phactor.start(instance_name, host=devserver.url, **fast())
    uuids = capture(inst, 10)
    assert inst.flush(10)
    assert [r.status for r in devserver.requests] == [None, None, 200]
    s = ledger(inst)
    assert s["sent"] == 10 and s["retries"] == 2
    assert_stored_once(devserver, uuids)


def test_answer_lost_after_store_is_resent_with_the_same_uuids(
    devserver: DevServer, instance_name: str
) -> None:
    devserver.drop_next(1, store=True)
    inst = phactor.start(instance_name, host=devserver.url, **fast())
    uuids = capture(inst, 10)
    assert inst.flush(10)
    # The one case where the server sees a uuid twice: it stored, the answer never came.
    assert stored_uuids(devserver) == Counter({u: 2 for u in uuids})
    assert ledger(inst)["sent"] == 10


def test_server_slower_than_request_timeout(devserver: DevServer, instance_name: str) -> None:
    devserver.delay(1.0)
    inst = phactor.start(
        instance_name,
        host=devserver.url,
        **fast(request_timeout=0.3, max_retries=50, retry_max_delay=0.1),
    )
    uuids = capture(inst, 10)
    inst.flush(0)
    # The first timed-out request is answered (and stored) by the server after its delay.
    assert devserver.wait_for_requests(1, timeout=10)
    devserver.delay(0)
    assert inst.flush(10)
    s = ledger(inst)
    assert s["sent"] == 10 and s["retries"] >= 1
    counts = stored_uuids(devserver)
    assert set(counts) == set(uuids)
    # Duplicates only from requests the client gave up on (timed out) after the server took them.
    timed_out = sum(1 for r in devserver.requests if r.status == 200) - 1
    assert all(1 <= n <= 1 + timed_out for n in counts.values()), counts


def test_401_drops_as_unauthorized_logs_once_and_calls_on_error(
    devserver: DevServer, instance_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    errors: list[tuple[DeliveryError, list[dict[str, Any]]]] = []
    body = orjson.dumps({"detail": f"Project API key invalid: {API_KEY}"})
    devserver.fail_next(2, 401, body=body)
    caplog.set_level(logging.DEBUG, logger="phactor")
    inst = phactor.start(
        instance_name,
        host=devserver.url,
        **fast(on_error=lambda error, events: errors.append((error, events))),
    )
    uuids = capture(inst, 20)
    assert inst.flush(10)
    assert devserver.request_count() == 2  # no retries
    s = ledger(inst)
    assert s["dropped"] == {"unauthorized": 20} and s["sent"] == 0 and s["retries"] == 0
    assert [(e.reason, e.status, len(evs)) for e, evs in errors] == [("unauthorized", 401, 10)] * 2
    assert sorted(ev["uuid"] for _, evs in errors for ev in evs) == sorted(uuids)
    dropped_errors = [
        r
        for r in caplog.records
        if "batch_dropped" in r.getMessage() and r.levelno == logging.ERROR
    ]
    assert len(dropped_errors) == 1
    assert "Project API key invalid" in dropped_errors[0].getMessage()
    # The key never reaches the logs, not even when the server echoes it.
    assert not [r for r in caplog.records if API_KEY in r.getMessage()]
    assert stored_uuids(devserver) == Counter()


def test_403_is_unauthorized_too(devserver: DevServer, instance_name: str) -> None:
    devserver.fail_next(1, 403)
    inst = phactor.start(instance_name, host=devserver.url, **fast())
    capture(inst, 10)
    assert inst.flush(10)
    assert ledger(inst)["dropped"] == {"unauthorized": 10}


def test_400_drops_as_rejected_without_retry(devserver: DevServer, instance_name: str) -> None:
    errors: list[DeliveryError] = []
    devserver.fail_next(1, 400, body=b'{"detail": "bad batch"}')
    inst = phactor.start(
        instance_name,
        host=devserver.url,
        **fast(flush_interval=3600, on_error=lambda e, evs: errors.append(e)),
    )
    capture(inst, 10)
    uuids = capture(inst, 10)  # the second batch is fine
    assert inst.flush(10)
    assert devserver.request_count() == 2
    s = ledger(inst)
    assert s["dropped"] == {"rejected": 10} and s["sent"] == 10
    assert [(e.reason, e.status, e.message) for e in errors] == [
        ("rejected", 400, '{"detail": "bad batch"}')
    ]
    assert_stored_once(devserver, uuids)


def test_413_splits_the_batch_and_drops_a_single_oversized_event(
    devserver: DevServer, instance_name: str
) -> None:
    inst = phactor.start(instance_name, host=devserver.url, **fast(gzip=False, flush_at=9))
    small = capture(inst, 8, pad="x" * 200)
    big = inst.capture("ev", "user", {"pad": "y" * 3000})
    assert big is not None
    # Two small events fit; four do not; the big one never fits.
    devserver.reject_larger_than(1000)
    assert inst.flush(10)
    s = ledger(inst)
    assert s["sent"] == 8 and s["dropped"] == {"too_large": 1}
    assert_stored_once(devserver, small)
    assert all(r.body_bytes <= 1000 for r in devserver.requests if r.status == 200)
    assert [r.status for r in devserver.requests].count(413) >= 3


def test_wire_format_gzip_user_agent_keep_alive(devserver: DevServer, instance_name: str) -> None:
    inst = phactor.start(instance_name, host=devserver.url, **fast(flush_interval=3600))
    uuids = capture(inst, 30)
    assert inst.flush(10)
    requests = devserver.requests
    assert len(requests) == 3
    assert {r.headers.get("content-encoding") for r in requests} == {"gzip"}
    assert {r.headers.get("user-agent") for r in requests} == {f"phactor/{__version__}"}
    assert len({r.peer for r in requests}) == 1  # one kept-alive connection
    assert_stored_once(devserver, uuids)
    ledger(inst)


def test_gzip_off_sends_plain_json(devserver: DevServer, instance_name: str) -> None:
    inst = phactor.start(instance_name, host=devserver.url, **fast(flush_interval=3600, gzip=False))
    uuids = capture(inst, 10)
    assert inst.flush(10)
    (request,) = devserver.requests
    assert "content-encoding" not in request.headers
    assert_stored_once(devserver, uuids)


def test_batches_stay_under_max_batch_bytes(devserver: DevServer, instance_name: str) -> None:
    inst = phactor.start(
        instance_name, host=devserver.url, **fast(gzip=False, flush_at=100, max_batch_bytes=2048)
    )
    uuids = capture(inst, 40, pad="z" * 200)
    assert inst.flush(10)
    assert len(devserver.requests) > 1
    assert all(r.body_bytes <= 2048 for r in devserver.requests)
    assert_stored_once(devserver, uuids)
    ledger(inst)


def test_event_over_max_event_bytes_is_refused_at_capture(
    devserver: DevServer, instance_name: str
) -> None:
    inst = phactor.start(instance_name, host=devserver.url, **fast(max_event_bytes=1024))
    assert inst.capture("ev", "user", {"pad": "p" * 2000}) is None
    uuids = capture(inst, 10)
    assert inst.flush(10)
    s = ledger(inst)
    assert s["dropped"] == {"event_too_large": 1} and s["sent"] == 10
    assert_stored_once(devserver, uuids)


def test_batch_envelope_carries_the_api_key(devserver: DevServer, instance_name: str) -> None:
    inst = phactor.start(instance_name, host=devserver.url, **fast())
    capture(inst, 10)
    assert inst.flush(10)
    raw = devserver.events()[0]["raw"]
    assert raw["uuid"] and raw["event"] == "ev"
    assert devserver.requests[0].api_key == API_KEY

