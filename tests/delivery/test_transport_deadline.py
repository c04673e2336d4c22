"""Each request's TOTAL time is bounded, against a real loopback server that drips its answer.

requests' `timeout` is per socket read: a server sending one byte before each read timeout
would hold a Sender (and `flush()`) or a flag call for ever. The server here drips the status
line, the headers or the body one byte at a time, well inside the per-read timeout.
"""

from __future__ import annotations

import contextlib
import gzip
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import pytest
from conftest import StartInstance
from conftest import assert_ledger as ledger

from phactor._log import get_logger
from phactor.flags.http import FlagsHttp
from phactor.flags.remote import build_flags_request

API_KEY = "phc_deadline_project_key_0123456789"
DRIP_INTERVAL = 0.05  # far inside every per-read timeout used below
DRIP_LIMIT = 30.0  # a dripping answer stops by itself after this long
# What is dripped: from the status line on, the headers, or the body (with Content-Length, or
# ended by closing the connection: http.client then hands the socket over to the response).
PHASES = ("status", "headers", "body", "body-until-close")


class DripServer:
    """Reads each HTTP/1.1 request; answers it at once (mode "ok") or drips the answer.

    In a drip mode the given phase of the response goes out one byte per DRIP_INTERVAL: a
    ~500-byte answer that would take ~25 s. Dripping stops when the client goes away. Only
    requests answered in mode "ok" count as delivered (`uuids`).
    """

    def __init__(self) -> None:
        self.mode = "ok"
        self.uuids: Counter[str] = Counter()
        self.requests = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._conns: list[socket.socket] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    def close(self) -> None:
        self._stop.set()
        for conn in list(self._conns):
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)  # wakes a handler waiting on a kept-alive read
        for thread in list(self._threads):
            thread.join(5)
        self._listener.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self._conns.append(conn)
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(DRIP_LIMIT)
            reader = conn.makefile("rb")
            try:
                while not self._stop.is_set():
                    request = _read_request(reader)
                    if request is None:
                        return
                    with self._lock:
                        self.requests += 1
                        mode = self.mode
                    if mode != "ok":
                        self._drip(conn, mode)
                        return
                    headers, body = request
                    if headers.get("content-encoding") == "gzip":
                        body = gzip.decompress(body)
                    if body.startswith(b"{"):
                        batch = orjson.loads(body).get("batch", [])
                        with self._lock:
                            self.uuids.update(event["uuid"] for event in batch)
                    conn.sendall(_response(b'{"status":1}'))
            except OSError:
                return

    def _drip(self, conn: socket.socket, phase: str) -> None:
        answer = _response(b'{"flags":{}}' + b" " * 300, pad=200, close=phase == "body-until-close")
        phase = phase.removesuffix("-until-close")
        head_end = answer.index(b"\r\n\r\n") + 4
        status_end = answer.index(b"\r\n") + 2
        at_once = {"status": 0, "headers": status_end, "body": head_end}[phase]
        conn.sendall(answer[:at_once])
        slowly = answer[at_once:]
        deadline = time.monotonic() + DRIP_LIMIT
        for i in range(len(slowly)):
            if self._stop.wait(DRIP_INTERVAL) or time.monotonic() > deadline:
                return
            conn.sendall(slowly[i : i + 1])  # OSError once the client has gone: stop


def _read_request(reader: Any) -> tuple[dict[str, str], bytes] | None:
    line = reader.readline()
    if not line:
        return None
    headers: dict[str, str] = {}
    while True:
        line = reader.readline()
        if line in (b"\r\n", b"\n", b""):
            break
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    body = reader.read(int(headers.get("content-length", "0")))
    return headers, body


def _response(body: bytes, *, pad: int = 0, close: bool = False) -> bytes:
    head = (
        "HTTP/1.1 200 OK\r\n"
        "Content-Type: application/json\r\n"
        + ("Connection: close\r\n" if close else f"Content-Length: {len(body)}\r\n")
        + (f"X-Pad: {'p' * pad}\r\n" if pad else "")
        + "\r\n"
    )
    return head.encode() + body


@pytest.fixture
def drip() -> Iterator[DripServer]:
    server = DripServer()
    try:
        yield server
    finally:
        server.close()


def finishes_within(seconds: float, call: Callable[[], Any]) -> tuple[bool, Any, float]:
    """Run `call` on a thread; (finished in time, its result, elapsed). Bounded even if it hangs."""
    result: list[Any] = []
    thread = threading.Thread(target=lambda: result.append(call()), daemon=True)
    started = time.monotonic()
    thread.start()
    thread.join(seconds)
    return not thread.is_alive(), (result[0] if result else None), time.monotonic() - started


@pytest.mark.parametrize("phase", PHASES)
def test_flush_returns_against_a_dripping_server_and_delivers_once_it_recovers(
    drip: DripServer, start_instance: StartInstance, phase: str
) -> None:
    drip.mode = phase
    inst = start_instance(
        api_key=API_KEY,
        host=drip.url,
        flush_at=10,
        flush_interval=3600,
        senders=1,
        request_timeout=0.5,
        max_retries=1,
        retry_base_delay=0.01,
        retry_max_delay=0.05,
        enable_error_tracking=False,
    )
    uuids = [inst.capture("ev", "user", {"i": i}) for i in range(10)]
    # Two attempts of at most 0.5 s each; the dripped answers alone would take ~25 s apiece.
    finished, flushed, elapsed = finishes_within(8.0, lambda: inst.flush(None))
    assert finished, f"flush() still blocked after {elapsed:.1f} s"
    assert flushed is False  # the batch was requeued, not lost
    s = ledger(inst)
    assert s["retries"] >= 1 and s["sent"] == 0 and s["dropped"] == {}
    assert s["queued"] + s["in_flight"] == 10
    assert drip.requests >= 2 and not drip.uuids

    drip.mode = "ok"
    assert inst.flush(10)
    assert drip.uuids == Counter(uuids)  # every event once
    s = ledger(inst)
    assert s["sent"] == 10 and s["dropped"] == {}


def _flags_http(url: str) -> FlagsHttp:
    return FlagsHttp(
        url,
        api_key=API_KEY,
        personal_api_key="phx_deadline_personal_key_0123456789",
        flags_timeout=0.5,
        definitions_timeout=0.5,
        verify=True,
        log=get_logger("flags", instance="deadline-test"),
    )


@pytest.mark.parametrize("phase", PHASES)
def test_remote_flags_call_is_bounded_by_flags_request_timeout(
    drip: DripServer, phase: str
) -> None:
    drip.mode = phase
    http = _flags_http(drip.url)
    body = build_flags_request(API_KEY, "user", flag_keys=["beta"])
    try:
        # One attempt plus one retry, 0.5 s each.
        finished, remote, elapsed = finishes_within(6.0, lambda: http.post_flags(body))
    finally:
        with contextlib.suppress(Exception):
            http.close()
    assert finished, f"post_flags() still blocked after {elapsed:.1f} s"
    assert remote.error == "timeout" and remote.unresolved == {"beta": "timeout"}
    assert drip.requests == 2


@pytest.mark.parametrize("phase", PHASES)
def test_definitions_fetch_is_bounded_by_its_timeout(drip: DripServer, phase: str) -> None:
    drip.mode = phase
    http = _flags_http(drip.url)
    try:
        finished, fetch, elapsed = finishes_within(6.0, lambda: http.fetch_definitions(None))
    finally:
        with contextlib.suppress(Exception):
            http.close()
    assert finished, f"fetch_definitions() still blocked after {elapsed:.1f} s"
    assert (fetch.outcome, fetch.detail) == ("failed", "timeout")
