"""phactor.devserver and hostile clients: framing, slow and lying peers, odd bodies."""

from __future__ import annotations

import base64
import contextlib
import gzip
import json
import socket
import threading
import time
import tracemalloc
import uuid

import orjson
import pytest
import requests
from devserver_client import (
    KEY,
    batch,
    event,
    exchange,
    exchange_all,
    post_head,
    server_fixture,  # noqa: F401  (fixtures)
    still_serving,
)
from hypothesis import given
from hypothesis import strategies as st

from phactor.devserver import DevServer

# -- hostile clients: framing, slow and lying peers, odd bodies -----------------------------


@pytest.mark.parametrize("length", ["abc", "+5", "-5", "1e3", "5, 6"])
def test_malformed_content_length_is_400(server: DevServer, length: str) -> None:
    status, body = exchange(server, post_head(Content_Length=length) + b"hello")
    assert status == 400
    assert b"Content-Length" in body
    assert still_serving(server)


@pytest.mark.parametrize("size_line", [b"-1", b"zz", b"", b"0x10", b"1" * 5000])
def test_malformed_chunk_size_is_400_without_reading_to_eof(
    server: DevServer, size_line: bytes
) -> None:
    # the client keeps its side open: reading "to the end" would hang until the client gives up
    head = post_head(Transfer_Encoding="chunked")
    status, _ = exchange(server, head + size_line + b"\r\n{}\r\n", timeout=10)
    assert status == 400
    assert still_serving(server)


def test_chunked_body_is_accepted(server: DevServer) -> None:
    text = json.dumps(batch(event("chunked"))).encode()
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (text[:7], text[7:]))
    status, _ = exchange(server, post_head(Transfer_Encoding="chunked") + chunks + b"0\r\n\r\n")
    assert status == 200
    assert [e["event"] for e in server.events()] == ["chunked"]


def test_a_lying_content_length_gets_408_promptly() -> None:
    with DevServer(read_timeout=0.5) as server:
        started = time.monotonic()
        status, body = exchange(server, post_head(Content_Length="1000") + b'{"api_key"')
        assert status == 408
        assert time.monotonic() - started < 5
        assert b"request_timeout" in body
        assert still_serving(server)


def test_a_dripping_body_gets_408_at_the_request_deadline() -> None:
    with DevServer(read_timeout=1.0) as server:
        results: list[tuple[int, bytes]] = []
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(post_head(Content_Length="200"))

            def drip() -> None:  # one byte every 50 ms: never idle long, done only after 10 s
                with contextlib.suppress(OSError):
                    for _ in range(200):
                        sock.sendall(b" ")
                        time.sleep(0.05)

            dripper = threading.Thread(target=drip, daemon=True)
            started = time.monotonic()
            dripper.start()
            response = b""
            while chunk := sock.recv(65536):
                response += chunk
                if b"\r\n\r\n" in response:
                    break
            elapsed = time.monotonic() - started
            results.append((int(response.split(b" ")[1]) if response else 0, response))
        dripper.join(timeout=20)
        assert results[0][0] == 408
        assert elapsed < 5
        assert still_serving(server)


def test_an_idle_connection_is_closed_after_idle_timeout() -> None:
    with DevServer(idle_timeout=0.3) as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            assert sock.recv(1) == b""  # closed by the server, not by our 10 s timeout
        assert still_serving(server)


def test_timeouts_are_checked() -> None:
    for bad in (0, -1, float("nan"), float("inf"), "5", True):
        with pytest.raises(TypeError):
            DevServer(read_timeout=bad)  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            DevServer(idle_timeout=bad)  # type: ignore[arg-type]
    assert DevServer(idle_timeout=None) is not None


def test_a_get_body_does_not_poison_the_next_request(server: DevServer) -> None:
    first = b"GET /api/events HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nxxxxx"
    second = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    received = exchange_all(server.port, first + second)
    assert received.count(b"HTTP/1.1 200") == 2


def test_form_body_with_a_flood_of_fields_is_400(server: DevServer) -> None:
    flood = b"a=&" * 700_000  # 2 MiB: 700,000 fields, ~40 MiB once split into strings
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        response = requests.post(
            server.url + "/e/",
            data=flood,
            headers={"Content-Type": "application/x-www-form-urlencoded"},
            timeout=10,
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 20 * 1024 * 1024
    assert response.status_code == 400
    assert "form" in response.json()["detail"]


def test_flags_body_with_odd_flag_keys_is_400(server: DevServer) -> None:
    server.set_flags({"beta": True})
    body = {"api_key": KEY, "distinct_id": "u", "flag_keys_to_evaluate": [["beta"], {"a": 1}]}
    response = requests.post(server.url + "/flags/?v=2", json=body, timeout=5)
    assert response.status_code == 400
    assert "flag_keys_to_evaluate" in response.json()["detail"]
    assert server.requests[-1].status == 400


@pytest.mark.parametrize(
    "params",
    [{"limit": "99999999999999999999"}, {"offset": "-1"}, {"limit": "-3"}, {"limit": "x"}],
)
def test_listing_with_absurd_limit_or_offset_is_400(
    server: DevServer, params: dict[str, str]
) -> None:
    response = requests.get(server.url + "/api/events", params=params, timeout=5)
    assert response.status_code == 400


JSON_LEAVES = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
    | st.just(str(uuid.uuid4()))
)
JSON_VALUES = st.recursive(
    JSON_LEAVES,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
EVENT_LIKE = st.fixed_dictionaries(
    {},
    optional={
        "event": st.just("clicked") | JSON_VALUES,
        "distinct_id": st.just("u1") | JSON_VALUES,
        "uuid": st.just(str(uuid.uuid4())) | JSON_VALUES,
        "properties": st.dictionaries(st.text(max_size=8), JSON_VALUES, max_size=3) | JSON_VALUES,
        "timestamp": JSON_VALUES,
        "api_key": st.just(KEY) | JSON_VALUES,
    },
)
BODIES = st.one_of(
    JSON_VALUES,
    EVENT_LIKE,
    st.lists(EVENT_LIKE | JSON_VALUES, max_size=4),
    st.fixed_dictionaries(
        {"batch": st.lists(EVENT_LIKE | JSON_VALUES, max_size=4) | JSON_VALUES},
        optional={"api_key": st.just(KEY) | JSON_VALUES, "flag_keys_to_evaluate": JSON_VALUES},
    ),
)
BODY_BYTES = st.one_of(
    st.binary(max_size=512),
    BODIES.map(orjson.dumps),
    BODIES.map(lambda v: gzip.compress(orjson.dumps(v))),
    BODIES.map(lambda v: gzip.compress(orjson.dumps(v))[: len(orjson.dumps(v)) // 2]),
    st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")),
    BODIES.map(lambda v: b"data=" + base64.b64encode(orjson.dumps(v))),
)


def test_random_bodies_get_a_2xx_or_4xx_and_the_server_keeps_serving() -> None:
    with DevServer(max_events=1000) as server, requests.Session() as http:

        @given(
            body=BODY_BYTES,
            path=st.sampled_from(["/batch/", "/e/", "/i/v0/e/?compression=gzip-js", "/flags/"]),
            content_type=st.sampled_from(
                ["application/json", "application/x-www-form-urlencoded", "text/plain"]
            ),
            gzip_header=st.booleans(),
        )
        def check(body: bytes, path: str, content_type: str, gzip_header: bool) -> None:
            headers = {"Content-Type": content_type}
            if gzip_header:
                headers["Content-Encoding"] = "gzip"
            response = http.post(server.url + path, data=body, headers=headers, timeout=10)
            assert 200 <= response.status_code < 500, response.text
            assert response.headers["Content-Type"] == "application/json"

        check()
        assert still_serving(server)


FRAMING_HEADERS = st.dictionaries(
    st.sampled_from(["Content-Length", "Transfer-Encoding", "Content-Encoding", "Content-Type"]),
    st.sampled_from(["0", "5", "-1", "99999999999", "chunked", "gzip", "x", "5, 5", "1e3"])
    | st.text(st.characters(min_codepoint=33, max_codepoint=126), max_size=12),
)


def test_random_framing_is_answered_or_closed_and_the_server_keeps_serving() -> None:
    with DevServer(read_timeout=2.0) as server:

        @given(
            request=st.binary(max_size=300)
            | st.builds(
                lambda headers, body: post_head(**headers) + body,
                FRAMING_HEADERS,
                st.binary(max_size=64) | st.sampled_from([b"5\r\nhello\r\n0\r\n\r\n", b"{}"]),
            )
        )
        def check(request: bytes) -> None:
            received = exchange_all(server.port, request, half_close=True)
            statuses = [
                int(line.split(b" ")[1])
                for line in received.split(b"\r\n")
                if line.startswith(b"HTTP/1.") and line[9:12].isdigit()
            ]
            assert all(status < 500 or status in (501, 505) for status in statuses), received

        check()
        assert still_serving(server)


def test_content_length_with_surrounding_whitespace_is_accepted(server: DevServer) -> None:
    body = json.dumps(batch(event("spaced"))).encode()
    status, _ = exchange(server, post_head(Content_Length=f" {len(body)}  ") + body)
    assert status == 200
    assert [e["event"] for e in server.events()] == ["spaced"]
