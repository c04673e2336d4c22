"""phactor.devserver memory bounds: body caps, gzip bombs, evictions, the request log, connections."""

from __future__ import annotations

import gzip
import json
import socket
import threading
import time
import tracemalloc
import zlib

import orjson
import pytest
import requests
from devserver_client import (  # noqa: F401  (fixtures)
    KEY,
    batch,
    event,
    exchange,
    read_response,
    server_fixture,
    session_fixture,
    still_serving,
)

import phactor.devserver.requestlog as requestlog_module
from phactor.devserver import DevServer

# -- memory bounds (issue 10: #16) ----------------------------------------------------------


def gzip_of_zeros(mebibytes: int) -> bytes:
    """A gzip body inflating to ``mebibytes`` MiB, built without holding the inflated bytes."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    block = bytes(1024 * 1024)
    return b"".join([*(compressor.compress(block) for _ in range(mebibytes)), compressor.flush()])


def test_a_gzip_bomb_is_413_without_inflating_it(server: DevServer) -> None:
    bomb = gzip_of_zeros(256)  # ~250 KiB on the wire, 256 MiB inflated
    assert len(bomb) < 1024 * 1024
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        response = requests.post(
            server.url + "/batch/", data=bomb, headers={"Content-Encoding": "gzip"}, timeout=30
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert response.status_code == 413
    assert response.json()["code"] == "payload_too_large"
    # the default cap is 20 MiB decompressed: the peak stays near it, far below 256 MiB
    assert peak < 64 * 1024 * 1024
    assert server.requests[-1].status == 413
    assert requests.post(server.url + "/batch/", json=batch(event()), timeout=5).ok


def test_decompressed_and_raw_body_caps_are_options(session: requests.Session) -> None:
    payload = json.dumps(batch(event(pad="x" * 4000))).encode()  # ~4.2 KB, gzip far smaller
    with DevServer(max_body_bytes=2048) as server:
        inflated = session.post(
            server.url + "/batch/",
            data=gzip.compress(payload),
            headers={"Content-Encoding": "gzip"},
            timeout=5,
        )
        plain = session.post(server.url + "/batch/", data=payload, timeout=5)
        fits = session.post(server.url + "/batch/", json=batch(event()), timeout=5)
        assert (inflated.status_code, plain.status_code) == (413, 413)
        assert fits.status_code == 200
        assert server.count() == 1
    with pytest.raises(TypeError):
        DevServer(max_body_bytes=0)
    with pytest.raises(TypeError):
        DevServer(max_body_bytes="1")  # type: ignore[arg-type]


def test_multi_member_gzip_is_one_body(server: DevServer) -> None:
    text = json.dumps(batch(event("members"))).encode()
    body = gzip.compress(text[:10]) + gzip.compress(text[10:])
    response = requests.post(
        server.url + "/batch/", data=body, headers={"Content-Encoding": "gzip"}, timeout=5
    )
    assert response.status_code == 200
    assert [e["event"] for e in server.events()] == ["members"]


def test_truncated_gzip_is_400(server: DevServer) -> None:
    body = gzip.compress(json.dumps(batch(event())).encode())[:-12]
    response = requests.post(
        server.url + "/batch/", data=body, headers={"Content-Encoding": "gzip"}, timeout=5
    )
    assert response.status_code == 400
    assert "gzip" in response.json()["detail"]


def test_stored_events_are_capped_oldest_evicted_first() -> None:
    with DevServer(max_events=5) as server:
        sent = [event(f"e{i}") for i in range(12)]
        for chunk in (sent[:3], sent[3:4], sent[4:12]):
            assert requests.post(server.url + "/batch/", json=batch(*chunk), timeout=5).ok
        assert [e["event"] for e in server.events()] == [f"e{i}" for i in range(7, 12)]
        assert (server.count(), server.evicted) == (5, 7)
        # every event that arrived counts for wait_for, evicted or not
        assert server.wait_for(12, timeout=0)
        status = requests.get(server.url + "/", timeout=5).json()
        assert (status["events"], status["evicted"]) == (5, 7)
        server.clear()
        assert (server.count(), server.evicted) == (0, 0)
    assert DevServer().max_events == 100_000
    assert DevServer(max_events=None).max_events is None
    with pytest.raises(TypeError):
        DevServer(max_events=0)


def test_the_request_log_is_bounded_and_counts_stay_exact(session: requests.Session) -> None:
    with DevServer(max_requests=3) as server:
        sent = [event(f"r{i}") for i in range(5)]
        for one in sent:
            assert session.post(server.url + "/batch/", json=batch(one), timeout=5).ok
        assert session.post(server.url + "/flags/", json={"api_key": KEY}, timeout=5).ok
        # the log keeps the newest requests; the counts cover every request
        assert [r.endpoint for r in server.requests] == ["capture", "capture", "flags"]
        assert server.requests[0].uuids == (sent[3]["uuid"],)
        assert server.request_count() == 5
        assert server.request_count("any") == 6
        assert server.wait_for_requests(5, timeout=0)
        assert requests.get(server.url + "/", timeout=5).json()["requests"] == 6
        server.clear()
        assert (server.request_count("any"), server.requests) == (0, [])
    with pytest.raises(TypeError):
        DevServer(max_requests=0)


def test_a_flood_of_big_headers_does_not_grow_the_log_without_bound(
    session: requests.Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(requestlog_module, "_MAX_LOG_BYTES", 4 * 1024 * 1024)  # 64 MiB by default
    headers = {f"X-Pad-{i}": "p" * 60_000 for i in range(16)}  # ~1 MB of headers a request
    with DevServer() as server:
        tracemalloc.start()
        try:
            for _ in range(24):  # ~23 MB of headers in all
                response = session.post(
                    server.url + "/flags/", json={"api_key": KEY}, headers=headers, timeout=10
                )
                assert response.ok
            current, _ = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert server.request_count("flags") == 24
        assert 3 <= len(server.requests) <= 5
    assert current < 12 * 1024 * 1024


@pytest.mark.parametrize("unit", [b"{}", b"[]", b'"a"', b"1.5"])
def test_a_body_of_millions_of_tiny_values_is_413_before_parsing(unit: bytes) -> None:
    # 4 MiB of tiny JSON values would be ~1.4 million Python objects (~100+ MiB)
    count = 4 * 1024 * 1024 // (len(unit) + 1)
    body = b'{"api_key": "k", "batch": [' + b",".join([unit] * count) + b"]}"
    with DevServer(max_body_bytes=len(body) + 1) as server:
        tracemalloc.start()
        try:
            tracemalloc.reset_peak()
            response = requests.post(server.url + "/batch/", data=body, timeout=30)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert response.status_code == 413
        assert "JSON values" in response.json()["detail"]
        assert peak < 32 * 1024 * 1024
        assert still_serving(server)


def test_a_batch_of_ordinary_events_near_the_cap_is_accepted() -> None:
    props = {"$lib": "phactor", "$lib_version": "0.1.0", "plan": "pro", "n": 3, "ok": False}
    events = [event("clicked", f"u{i}", **props) for i in range(12_000)]
    body = json.dumps(batch(*events), separators=(",", ":")).encode()  # ~3 MB, densest form
    with DevServer(max_body_bytes=len(body) + 1) as server:
        response = requests.post(server.url + "/batch/", data=body, timeout=30)
        assert response.status_code == 200, response.text
        assert server.count() == len(events)


def test_stored_events_are_capped_by_bytes_too() -> None:
    with DevServer(max_stored_bytes=10_000) as server:
        sent = [event(f"big{i}", pad="x" * 1500) for i in range(6)]  # ~3.2 KB stored each
        for one in sent:
            assert requests.post(server.url + "/batch/", json=batch(one), timeout=5).ok
        kept = [e["event"] for e in server.events()]
        assert kept == [f"big{i}" for i in range(6 - len(kept), 6)]  # the newest, in order
        assert 2 <= len(kept) <= 3
        assert server.stored_bytes <= 10_000
        assert server.evicted == 6 - len(kept)
        huge = event("huge", pad="x" * 20_000)  # alone over the budget: evicted on arrival
        assert requests.post(server.url + "/batch/", json=batch(huge), timeout=5).ok
        assert [e["event"] for e in server.events()][-1] != "huge"
        assert server.evicted == 7 - len(kept)
        server.clear()
        assert server.stored_bytes == 0
    assert DevServer().max_stored_bytes == 256 * 1024 * 1024
    with pytest.raises(TypeError):
        DevServer(max_stored_bytes=0)


def test_connections_beyond_max_connections_get_503_and_the_server_recovers() -> None:
    with DevServer(max_connections=2) as server:
        held = [socket.create_connection(("127.0.0.1", server.port), timeout=10) for _ in "ab"]
        try:
            for sock in held:  # answered: each is accepted and kept alive by a handler thread
                sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                assert read_response(sock)[0] == 200
            status, body = exchange(server, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert status == 503
            assert b"too_many_connections" in body
        finally:
            for sock in held:
                sock.close()
        # the held connections' threads end on EOF; new connections are served again
        deadline = time.monotonic() + 5
        while exchange(server, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")[0] != 200:
            assert time.monotonic() < deadline
    with pytest.raises(TypeError):
        DevServer(max_connections=0)


def test_large_bodies_are_processed_a_few_at_a_time() -> None:
    # 6 concurrent 4 MiB bodies, each held (parsed) for 0.5 s by delay(): before, all six were
    # in memory at once; now at most two large bodies are read and parsed at a time.
    body = orjson.dumps(batch(*(event(f"big{i}", pad="x" * 4000) for i in range(1000))))
    assert len(body) > 4_000_000
    statuses: list[int] = []
    with DevServer() as server:
        server.delay(0.5, endpoint="capture")

        def post() -> None:
            response = requests.post(server.url + "/batch/", data=body, timeout=30)
            statuses.append(response.status_code)

        tracemalloc.start()
        try:
            tracemalloc.reset_peak()
            posters = [threading.Thread(target=post) for _ in range(6)]
            for poster in posters:
                poster.start()
            for poster in posters:
                poster.join(timeout=30)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert statuses == [200] * 6
        assert server.count() == 6000
    # before: ~420 MB (six bodies, their parses and their rows' spare capacity); now ~75 MB
    assert peak < 200 * 1024 * 1024
