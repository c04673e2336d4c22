"""Answers are read up to a bound: a server answering a batch POST or /flags with a multi-GiB or
endless body must not make us read it all into memory.

A real loopback server answers every request with a long body (Content-Length, chunked, or
until the connection closes) sent as fast as the client reads it, and counts what it managed
to send before the client went away: a client that reads it all makes it send everything.
"""

from __future__ import annotations

import contextlib
import gzip
import socket
import threading
from collections.abc import Iterator

import pytest
from conftest import StartInstance
from hypothesis import given
from hypothesis import strategies as st

from phactor._http import MAX_BODY, BoundedSession
from phactor._log import get_logger
from phactor.flags.http import FLAGS_MAX_ANSWER, FlagsHttp
from phactor.flags.remote import build_flags_request

API_KEY = "phc_body_limit_project_key_0123456789"
FRAMINGS = ("length", "chunked", "close")
_BLOCK = 64 * 1024


class LongAnswerServer:
    """Answers each request 200 with `size` bytes of body (`body` repeated), framed as `framing`."""

    def __init__(self) -> None:
        self.size = 0
        self.body = b" "
        self.framing = "length"
        self.gzip = False
        self.sent = 0  # body bytes written, summed over requests
        self.requests = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._listener.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(10)
        reader = conn.makefile("rb")
        with contextlib.suppress(OSError), conn, reader:
            while not self._stop.is_set():
                length = None
                line = reader.readline()
                if not line:
                    return
                while line not in (b"\r\n", b"\n", b""):
                    name, _, value = line.decode("latin-1").partition(":")
                    if name.strip().lower() == "content-length":
                        length = int(value)
                    line = reader.readline()
                reader.read(length or 0)
                with self._lock:
                    self.requests += 1
                if not self._answer(conn):
                    return

    def _payload(self) -> Iterator[bytes]:
        block = (self.body * (_BLOCK // len(self.body) + 1))[:_BLOCK]
        left = self.size
        while left > 0:
            piece = block[: min(left, _BLOCK)]
            left -= len(piece)
            yield piece

    def _answer(self, conn: socket.socket) -> bool:
        """Send one answer; False when the connection must end (close framing)."""
        payload: Iterator[bytes] = self._payload()
        head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        if self.gzip:
            data = gzip.compress(b"".join(payload), compresslevel=1)
            payload, size = iter([data]), len(data)
            head += "Content-Encoding: gzip\r\n"
        else:
            size = self.size
        if self.framing == "length":
            head += f"Content-Length: {size}\r\n\r\n"
        elif self.framing == "chunked":
            head += "Transfer-Encoding: chunked\r\n\r\n"
        else:
            head += "Connection: close\r\n\r\n"
        conn.sendall(head.encode())
        for piece in payload:
            if self._stop.is_set():
                return False
            if self.framing == "chunked":
                conn.sendall(b"%x\r\n" % len(piece) + piece + b"\r\n")
            else:
                conn.sendall(piece)
            with self._lock:
                self.sent += len(piece)
        if self.framing == "chunked":
            conn.sendall(b"0\r\n\r\n")
        return self.framing != "close"


@pytest.fixture(scope="module")
def shared_server() -> Iterator[LongAnswerServer]:
    s = LongAnswerServer()
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def server() -> Iterator[LongAnswerServer]:
    s = LongAnswerServer()
    try:
        yield s
    finally:
        s.close()


HUGE = 64 * 1024 * 1024  # "endless" here: far past every bound, finite so old code finishes
SOCKET_SLACK = 16 * 1024 * 1024  # what loopback socket buffers can take in beyond what we read


@pytest.mark.parametrize("framing", FRAMINGS)
def test_a_batch_answered_with_an_endless_body_is_sent_without_reading_it_all(
    server: LongAnswerServer, framing: str, start_instance: StartInstance
) -> None:
    server.size, server.framing = HUGE, framing
    inst = start_instance(api_key=API_KEY, host=server.url, gzip=False, request_timeout=10)
    inst.capture("long answer", "user-1")
    assert inst.flush(10)
    assert inst.stats()["sent"] == 1  # the status decides; the body beyond the bound is ignored
    assert server.sent < MAX_BODY + SOCKET_SLACK


@pytest.mark.parametrize("framing", FRAMINGS)
def test_a_flags_answer_with_an_endless_body_is_refused_without_reading_it_all(
    server: LongAnswerServer, framing: str
) -> None:
    server.size, server.framing, server.body = 4 * FLAGS_MAX_ANSWER, framing, b'{"flags":{'
    http = FlagsHttp(
        server.url,
        api_key=API_KEY,
        personal_api_key=None,
        flags_timeout=10,
        definitions_timeout=10,
        verify=True,
        log=get_logger("test"),
    )
    try:
        result = http.post_flags(build_flags_request(API_KEY, "user-1", flag_keys=["f"]))
    finally:
        http.close()
    assert result.error == "malformed_response"
    assert result.unresolved == {"f": "malformed_response"}
    assert server.sent < FLAGS_MAX_ANSWER + SOCKET_SLACK


@given(
    size=st.integers(0, 3 * 4096),
    framing=st.sampled_from(FRAMINGS),
    compressed=st.booleans(),
    body=st.binary(min_size=1, max_size=7),
)
def test_a_body_is_read_whole_up_to_the_bound_and_cut_there(
    shared_server: LongAnswerServer, size: int, framing: str, compressed: bool, body: bytes
) -> None:
    limit = 4096
    server = shared_server
    server.size, server.framing, server.gzip, server.body = size, framing, compressed, body
    expected = (body * (size // len(body) + 1))[:size]
    session = BoundedSession(verify=True, headers={}, url=server.url)
    try:
        for _ in range(2):  # the same session again: a cut connection is not reused as is
            response = session.request("POST", server.url, data=b"{}", timeout=5, max_body=limit)
            assert response.status_code == 200
            assert response.content == expected[:limit]
            assert response.body_cut is (size > limit)
    finally:
        session.close()
