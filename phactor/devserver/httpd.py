"""HTTP handling: connections, framing, timeouts and limits; what a request *means* is the server's.

Standard library ``http.server``, one thread per connection up to ``max_connections``; every read
honours the request's deadline (``read_timeout`` from its first byte, ``idle_timeout`` before it).
"""

from __future__ import annotations

import contextlib
import http.server
import io
import logging
import socket
import struct
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import orjson
import structlog

from phactor.devserver.ingest import BadRequest, error_body, too_large
from phactor.devserver.limits import MAX_CHUNK_LINE, MAX_TRAILER_LINES

_log = structlog.wrap_logger(logging.getLogger("phactor.devserver"))


class DeadlineReader(io.RawIOBase):
    """The handler's socket as a raw stream whose every read honours the request's deadline.

    Before a request's first byte the wait is the idle (keep-alive) timeout; from that byte on,
    every read gets only what is left of ``read_timeout``, so a client dripping a byte at a time
    cannot hold a request open longer than that.
    """

    def __init__(self, handler: Handler) -> None:
        super().__init__()
        self._handler = handler
        self._sock: socket.socket = handler.connection

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        handler = self._handler
        if handler.deadline is None:
            self._sock.settimeout(handler.server.idle_timeout)
        else:
            left = handler.deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("request not received within the read timeout")
            self._sock.settimeout(left)
        received = self._sock.recv_into(buffer)
        if handler.deadline is None and received:
            handler.deadline = time.monotonic() + handler.server.read_timeout
        return received


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "phactor-devserver"
    # Two small writes per response (headers, body) would otherwise stall on delayed ACKs.
    disable_nagle_algorithm = True
    server: HTTPServer

    deadline: float | None = None

    def setup(self) -> None:
        super().setup()
        self.rfile.close()  # replaced by a reader that enforces the timeouts
        self.rfile = io.BufferedReader(DeadlineReader(self))
        self.server.track(self.connection, add=True)

    def handle_one_request(self) -> None:
        self.deadline = None  # the next request's clock starts at its first byte
        super().handle_one_request()

    def finish(self) -> None:
        with contextlib.suppress(OSError):
            super().finish()
        self.server.track(self.connection, add=False)

    def log_message(self, format: str, *args: Any) -> None:
        _log.debug("devserver_http", message=format % args)

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _dispatch(self, method: str) -> None:
        try:
            self.server.route(self, method)
        except (ConnectionError, TimeoutError):
            self.close_connection = True
        except Exception:
            _log.exception("devserver_handler_failed", path=self.path)
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.send_json(500, error_body("server_error", "internal dev server error"))

    def read_body(self, limit: int) -> bytes:
        """The request body, at most ``limit`` bytes.

        Raises BadRequest for a malformed Content-Length or chunked framing (400), a body over
        ``limit`` (413) or one not received within the read timeout (408); the connection then
        closes, as its remaining bytes cannot be trusted. ConnectionError when the client hangs up.
        """
        try:
            encoding = self.headers.get("Transfer-Encoding")
            if encoding is not None:
                if encoding.lower().rsplit(",", 1)[-1].strip() != "chunked":
                    raise BadRequest(400, "invalid_payload", "unsupported Transfer-Encoding")
                return self._read_chunked(limit)
            lengths = {value.strip() for value in self.headers.get_all("Content-Length") or ()}
            if not lengths:
                return b""
            if len(lengths) > 1:
                raise BadRequest(400, "invalid_payload", "conflicting Content-Length headers")
            text = lengths.pop()
            if not text.isascii() or not text.isdigit():
                raise BadRequest(400, "invalid_payload", f"invalid Content-Length {text[:40]!r}")
            length = int(text)
            if length > limit:
                raise too_large(limit)
            return self._read_exactly(length)
        except TimeoutError:
            timeout = self.server.read_timeout
            raise self._refuse(
                BadRequest(408, "request_timeout", f"body not received within {timeout} s")
            ) from None
        except BadRequest as exc:
            raise self._refuse(exc) from None

    def declares_large_body(self, threshold: int) -> bool:
        """Whether the request announces a body of ``threshold`` bytes or more (or chunked)."""
        if self.headers.get("Transfer-Encoding") is not None:
            return True
        text = (self.headers.get("Content-Length") or "").strip()
        return text.isascii() and text.isdigit() and int(text) >= threshold

    def _refuse(self, error: BadRequest) -> BadRequest:
        self.close_connection = True
        return error

    def _read_exactly(self, length: int) -> bytes:
        data = self.rfile.read(length) if length else b""
        if len(data) < length:
            raise ConnectionError("client closed the connection inside the body")
        return data

    def _read_line(self, what: str) -> bytes:
        line = self.rfile.readline(MAX_CHUNK_LINE + 1)
        if not line:
            raise ConnectionError("client closed the connection inside the body")
        if not line.endswith(b"\n"):
            raise BadRequest(400, "invalid_payload", f"malformed chunked body: {what} too long")
        return line

    def _read_chunked(self, limit: int) -> bytes:
        chunks: list[bytes] = []
        total = 0
        while True:
            text = self._read_line("chunk size line").split(b";", 1)[0].strip()
            if not text or text.strip(b"0123456789abcdefABCDEF"):
                raise BadRequest(400, "invalid_payload", f"malformed chunk size {text[:40]!r}")
            size = int(text, 16)
            if size == 0:
                for _ in range(MAX_TRAILER_LINES):
                    if self._read_line("trailer line") in (b"\r\n", b"\n"):
                        return b"".join(chunks)
                raise BadRequest(400, "invalid_payload", "malformed chunked body: trailers")
            total += size
            if total > limit:
                raise too_large(limit)
            chunks.append(self._read_exactly(size))
            if self._read_line("chunk end") not in (b"\r\n", b"\n"):
                raise BadRequest(400, "invalid_payload", "malformed chunked body: chunk end")

    def send_json(
        self, status: int, payload: Any, headers: Mapping[str, str] | None = None
    ) -> None:
        self.send_bytes(status, orjson.dumps(payload), headers, "application/json")

    def send_bytes(
        self,
        status: int,
        body: bytes,
        headers: Mapping[str, str] | None = None,
        content_type: str = "application/json",
    ) -> None:
        # A client that stops reading its responses must not hold this thread forever.
        self.connection.settimeout(self.server.read_timeout)
        self.send_response(status)
        if status != 304:
            self.send_header("Content-Type", content_type)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if status != 304:
            self.send_header("Content-Length", str(len(body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if status != 304 and body:
            self.wfile.write(body)

    def drop(self, reset: bool) -> None:
        """Close the connection without a response; with ``reset``, make the close a TCP RST."""
        self.close_connection = True
        if reset:
            with contextlib.suppress(OSError):
                self.connection.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                )
        with contextlib.suppress(OSError):
            self.connection.close()


Route = Callable[[Handler, str], None]
"""Serves one request: given the handler (headers read, body not yet) and its method."""


class HTTPServer(http.server.ThreadingHTTPServer):
    """Threads per connection up to ``max_connections``; each request goes to ``route``."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(
        self,
        address: tuple[str, int],
        route: Route,
        *,
        max_connections: int,
        read_timeout: float,
        idle_timeout: float | None,
    ) -> None:
        self.route = route
        self.max_connections = max_connections
        self.read_timeout = read_timeout
        self.idle_timeout = idle_timeout
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        self._active = 0  # connections owning a handler thread
        super().__init__(address, Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        # One thread per connection: past max_connections a flood of connections is answered
        # 503 from the accepting thread instead of each getting a thread.
        with self._connections_lock:
            busy = self._active >= self.max_connections
            if not busy:
                self._active += 1
        if busy:
            self._refuse(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._release()

    def _release(self) -> None:
        with self._connections_lock:
            self._active -= 1

    def _refuse(self, request: socket.socket) -> None:
        body = orjson.dumps(
            error_body("too_many_connections", "too many open connections, retry later")
        )
        head = (
            "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nRetry-After: 1\r\nConnection: close\r\n\r\n"
        )
        with contextlib.suppress(OSError):
            request.settimeout(1.0)
            request.sendall(head.encode() + body)
        self.shutdown_request(request)

    def track(self, connection: socket.socket, *, add: bool) -> None:
        with self._connections_lock:
            if add:
                self._connections.add(connection)
            else:
                self._connections.discard(connection)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client hanging up or resetting mid-request is no server error: no traceback on stderr.
        _log.debug("devserver_connection_error", peer=str(client_address), exc_info=True)

    def close_connections(self) -> None:
        # Handler threads blocked on a keep-alive read would otherwise keep serving after stop().
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
