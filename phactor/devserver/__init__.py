"""A small local PostHog-compatible endpoint: the embedded default for demos, and a real
(optionally misbehaving) server for integration tests.

Standard library plus orjson only. Start it in-process::

    with DevServer() as server:                      # port 0: a free port is picked
        phactor.start(api_key="phc_test", host=server.url)
        ...
        assert server.wait_for(3, timeout=5)         # blocks on a Condition, no sleeps
        server.events(event="signed_up")             # list of dicts, oldest first

or from a shell: ``python -m phactor.devserver --port 8010 --db events.sqlite``.

Endpoints
---------
- ``POST /batch/``, ``/capture/``, ``/e/``, ``/i/v0/e/`` (the *capture* endpoints). Bodies:
  ``{"api_key", "batch": [...]}``, a single event ``{"api_key", "event", ...}``, or a bare list of
  events carrying their own ``api_key``/``token``. JSON, gzip (``Content-Encoding: gzip``,
  ``?compression=gzip``/``gzip-js``, or gzip magic bytes) and form-encoded ``data=<base64>`` are
  accepted. 200 ``{"status": 1}``; 400 with a ``detail`` message for malformed JSON or events (no
  ``event`` name, no ``distinct_id``, bad ``uuid``, non-object ``properties``); 401 when no api key
  is found (as PostHog does). A rejected request stores nothing.
- ``POST /flags/`` (the *flags* endpoint): answers from ``DevServer(flags=...)`` in the v4 shape.
  A value ``False`` is a disabled flag, ``True`` an enabled boolean flag, a string an enabled
  variant. ``flag_payloads`` maps a key to any JSON value, sent as a JSON string like PostHog does.
- ``GET /flags/definitions`` and ``GET /api/feature_flag/local_evaluation/`` (the *definitions*
  endpoint): returns ``flag_definitions`` (a list of flags, or a full ``{"flags", ...}`` document)
  with an ``ETag``; 304 on a matching ``If-None-Match``; 401 without ``Authorization`` or, when
  ``personal_api_key`` is set, with a different bearer key.
- ``GET /api/events?limit=&offset=&event=&distinct_id=&api_key=``: ``{"results": [...],
  "count": n}``, results **oldest first** (arrival order), ``count`` the number of matching events
  before ``limit``/``offset``. ``DELETE /api/events`` clears them. ``GET /`` reports the counts.

Stored events (SQLite, one table ``events``; ``db=":memory:"`` or a file path) come back from
:meth:`DevServer.events` and the listing as dicts with ``id``, ``api_key``, ``uuid``, ``event``,
``distinct_id``, ``timestamp``, ``properties`` (dict), ``received_at`` and ``raw`` (the event object
exactly as it arrived, e.g. with a top-level ``$set``).

Request log
-----------
Every request to a capture, flags or definitions endpoint is recorded as a :class:`ReceivedRequest`
*before* the response is written, including those answered with an injected fault and those dropped
without an answer. :attr:`DevServer.requests`, :meth:`DevServer.request_count`,
:meth:`DevServer.uuid_counts` (how often each event uuid arrived) and
:meth:`DevServer.wait_for_requests` let a test count exactly what reached the wire;
:meth:`DevServer.wait_for_arrivals` returns as soon as requests were *read*, before any delay or
fault, so a test knows a client is inside a request.

Fault injection
---------------
``endpoint`` selects what a fault applies to: ``"capture"``, ``"flags"``, ``"definitions"`` or
``"any"``. Precedence per request: :meth:`~DevServer.set_mode` > queued one-shot faults (FIFO) >
:meth:`~DevServer.reject_larger_than` > normal handling.

- ``fail_next(n=1, status=500, *, headers=None, body=b"", endpoint="capture", store=False)``: the
  next ``n`` matching requests get ``status`` with ``headers`` (e.g. ``{"Retry-After": "2"}``).
- ``drop_next(n=1, *, reset=False, endpoint="capture", store=False)``: the next ``n`` matching
  requests are read, then the connection is closed without a response (``reset=True``: TCP RST).
- ``store=True`` on either stores the events first: the server accepted them but the answer was
  lost, so a retrying client will deliver the same uuids twice.
- ``set_mode("up" | "down" | "reset" | "error", *, status=503)``: persistent, for every endpoint;
  ``down`` closes each connection without a response, ``reset`` resets it, ``error`` answers
  ``status``.
- ``delay(seconds, *, endpoint="any")``: every matching response waits ``seconds`` (0 clears);
  :meth:`~DevServer.stop` cuts the wait short.
- ``reject_larger_than(limit)``: capture bodies over ``limit`` wire bytes get 413 (None clears).
- ``reset_faults()``: back to a well-behaved server. ``clear()`` forgets events and the request log.

Limits (docs/devserver.md)
--------------------------
- ``max_body_bytes`` (20 MiB, PostHog's cap): a body larger on the wire or once decompressed gets
  413; gzip is inflated incrementally and stops at the cap. So does a body of more than one
  JSON value per 8 bytes of the cap (parsing it would take ~30x its size).
- ``max_events`` (100,000) and ``max_stored_bytes`` (256 MiB of event JSON; None: no limit):
  beyond either the oldest stored events are evicted, counted in :attr:`DevServer.evicted` and
  ``GET /``.
- ``max_requests`` (10,000): the request log keeps the newest requests (and about 64 MiB of
  them); the counts of :meth:`~DevServer.request_count` cover every request.
- ``max_connections`` (256): a connection beyond that many open ones gets 503 and is closed.
- ``read_timeout`` (30 s): a request must arrive in full within it once its first byte came,
  else 408 and the connection closes; ``idle_timeout`` (75 s, None: never) closes a kept-alive
  connection waiting that long for its next request.
- Malformed framing (``Content-Length``, chunked) gets 400 and closes the connection.
"""

from __future__ import annotations

import base64
import binascii
import collections
import contextlib
import datetime as dt
import hashlib
import http.server
import io
import logging
import math
import os
import socket
import sqlite3
import struct
import threading
import time
import uuid as uuid_module
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

import orjson
import structlog

__all__ = [
    "CAPTURE_PATHS",
    "DEFAULT_IDLE_TIMEOUT",
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_MAX_CONNECTIONS",
    "DEFAULT_MAX_EVENTS",
    "DEFAULT_MAX_REQUESTS",
    "DEFAULT_MAX_STORED_BYTES",
    "DEFAULT_READ_TIMEOUT",
    "DevServer",
    "Endpoint",
    "ReceivedRequest",
]

_log = structlog.wrap_logger(logging.getLogger("phactor.devserver"))

CAPTURE_PATHS: tuple[str, ...] = ("/batch/", "/capture/", "/e/", "/i/v0/e/")
"""Paths accepting events; each also answers without its trailing slash."""

_FLAGS_PATHS = ("/flags/", "/flags")
_DEFINITIONS_PATHS = (
    "/flags/definitions",
    "/flags/definitions/",
    "/api/feature_flag/local_evaluation",
    "/api/feature_flag/local_evaluation/",
)
_CAPTURE_LOOKUP = frozenset(CAPTURE_PATHS) | {p.rstrip("/") for p in CAPTURE_PATHS}

DEFAULT_MAX_BODY_BYTES = 20 * 1024 * 1024
"""PostHog's ingestion cap: the largest body accepted, on the wire and after decompression."""

DEFAULT_MAX_EVENTS = 100_000
"""The most events kept by default; the oldest are evicted first."""

DEFAULT_MAX_STORED_BYTES = 256 * 1024 * 1024
"""The most bytes of event JSON kept by default; the oldest events are evicted first."""

DEFAULT_MAX_REQUESTS = 10_000
"""The most requests kept in the request log by default; counts cover every request."""

# The log also keeps at most about this many bytes (headers, uuids, flags bodies): many requests
# with huge headers must not pile up.
_MAX_LOG_BYTES = 64 * 1024 * 1024
_UUID_COST = 100  # a uuid str in a tuple, roughly

DEFAULT_MAX_CONNECTIONS = 256
"""The most connections served at once by default; more get 503 at once."""

DEFAULT_READ_TIMEOUT = 30.0
"""Seconds a request may take to arrive in full once its first byte came (408 beyond)."""

DEFAULT_IDLE_TIMEOUT = 75.0
"""Seconds a kept-alive connection may wait for its next request before it is closed."""

_MAX_CHUNK_LINE = 1024  # a chunk-size line: hex digits and extensions
_MAX_TRAILER_LINES = 100
_MAX_FORM_FIELDS = 64  # posthog-js sends data= and a few more
_MAX_SQL_INT = 2**63 - 1
_MAX_UNUSED_BODY_BYTES = 64 * 1024  # bodies of GET/DELETE/404 requests are read and dropped
_LARGE_BODY_BYTES = 1024 * 1024  # bodies from this size on (or chunked) are processed ...
_LARGE_BODIES_AT_ONCE = 2  # ... at most this many at a time
# Event JSON averages well over this per "," or ":" (a bare event ~13, with properties more);
# bodies of that density under max_body_bytes / 4 are never even scanned.
_MIN_BYTES_PER_VALUE = 8

Endpoint = Literal["capture", "flags", "definitions", "any"]
"""Which requests a fault, a count or a wait applies to."""

_ENDPOINTS = ("capture", "flags", "definitions", "any")
_MODES = ("up", "down", "reset", "error")


@dataclass(frozen=True)
class ReceivedRequest:
    """One request that reached a capture, flags or definitions endpoint.

    ``status`` is None when the connection was dropped without a response; ``fault`` names the
    injected behaviour that answered it (``"fail"``, ``"drop"``, ``"reset"``, ``"mode:<mode>"``,
    ``"too_large"``) or is None for normal handling. ``uuids`` are the event uuids found in the
    body (capture only, also for rejected requests when the body could be parsed). ``body`` is the
    parsed JSON body of flags requests (None for capture, whose events are in the table).
    ``peer`` is the client's ``host:port``: one peer across requests means one kept-alive
    connection.
    """

    method: str
    path: str
    endpoint: str
    query: Mapping[str, str]
    headers: Mapping[str, str]
    body_bytes: int
    status: int | None
    fault: str | None = None
    api_key: str | None = None
    uuids: tuple[str, ...] = ()
    event_count: int = 0
    error: str | None = None
    body: Any = None
    received_at: str = ""
    peer: str = ""


@dataclass
class _Fault:
    kind: Literal["fail", "drop", "reset"]
    remaining: int
    endpoint: str
    status: int = 500
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""
    store: bool = False


class _BadRequest(Exception):
    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail


@dataclass
class _Parsed:
    api_key: str | None = None
    rows: list[tuple[Any, ...]] = field(default_factory=list)
    uuids: tuple[str, ...] = ()
    body: Any = None
    error: _BadRequest | None = None


def _now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _error_body(code: str, detail: str) -> dict[str, Any]:
    kind = "authentication_error" if code == "invalid_api_key" else "validation_error"
    return {"type": kind, "code": code, "detail": detail, "attr": None}


def _too_large(limit: int) -> _BadRequest:
    return _BadRequest(413, "payload_too_large", f"request body over {limit} bytes")


def _gunzip(data: bytes, limit: int) -> bytes:
    """Inflate one or more gzip members, never holding more than ``limit`` + 1 output bytes."""
    parts: list[bytes] = []
    size = 0
    try:
        while data:
            inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
            pending = data
            while not inflater.eof:
                chunk = inflater.decompress(pending, limit - size + 1)
                pending = inflater.unconsumed_tail
                if not chunk and not pending:
                    raise _BadRequest(400, "invalid_payload", "invalid gzip body: truncated")
                size += len(chunk)
                if size > limit:
                    raise _too_large(limit)
                parts.append(chunk)
            data = inflater.unused_data
            if not data.strip(b"\0"):  # padding after the last member, as gzip(1) allows
                break
    except zlib.error as exc:
        raise _BadRequest(400, "invalid_payload", f"invalid gzip body: {exc}") from None
    return b"".join(parts)


def _decode_body(
    raw: bytes, headers: Mapping[str, str], query: Mapping[str, str], limit: int
) -> Any:
    """Undo the encodings PostHog SDKs use, then parse JSON; raise _BadRequest on failure.

    The body, once decoded and decompressed, may hold at most ``limit`` bytes (413 beyond).
    """
    data = raw
    if headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        try:
            fields = parse_qs(raw.decode("latin-1"), max_num_fields=_MAX_FORM_FIELDS)
        except ValueError:
            raise _BadRequest(
                400, "invalid_payload", f"form body with over {_MAX_FORM_FIELDS} fields"
            ) from None
        if "data" not in fields:
            raise _BadRequest(400, "invalid_payload", "form body without a data= field")
        text = fields["data"][0].strip()
        data = text.encode()
        # posthog-js sends base64 of JSON (or of gzip); anything else is taken as JSON text.
        if data[:1] not in (b"{", b"["):
            with contextlib.suppress(binascii.Error, ValueError):
                data = base64.b64decode(data + b"=" * (-len(data) % 4))
    compression = query.get("compression", "")
    gzipped = (
        headers.get("content-encoding", "").lower() == "gzip"
        or compression in ("gzip", "gzip-js")
        or data[:2] == b"\x1f\x8b"
    )
    if gzipped:
        data = _gunzip(data, limit)
    elif len(data) > limit:
        raise _too_large(limit)
    if not data.strip():
        raise _BadRequest(400, "invalid_payload", "empty body")
    # Parsed JSON can take 30x its text (a 20 MiB "[{},{},...]" is ~600 MiB of dicts): bound
    # the number of values to limit / _MIN_BYTES_PER_VALUE (~10x the cap in memory at worst).
    # Every value past the first follows a "," or a ":", so counting them is cheap (strings
    # containing them make it an over-estimate), and short bodies cannot reach the bound at all.
    max_values = limit // _MIN_BYTES_PER_VALUE
    if len(data) // 2 >= max_values and data.count(b",") + data.count(b":") >= max_values:
        raise _BadRequest(413, "payload_too_large", f"body with over {max_values} JSON values")
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise _BadRequest(400, "invalid_payload", f"malformed JSON: {exc}") from None


def _key_of(obj: Mapping[str, Any]) -> str | None:
    key = obj.get("api_key") or obj.get("token")
    return key if isinstance(key, str) and key else None


def _capture_rows(body: Any, received_at: str) -> _Parsed:
    """Turn a capture body into table rows; the uuids are collected even when it is rejected."""
    if isinstance(body, list):
        default_key, events = None, body
    elif isinstance(body, dict) and "batch" in body:
        default_key, events = _key_of(body), body["batch"]
        if not isinstance(events, list):
            raise _BadRequest(400, "invalid_payload", "batch must be a list")
    elif isinstance(body, dict) and "event" in body:
        default_key, events = _key_of(body), [body]
    else:
        raise _BadRequest(400, "invalid_payload", "expected {batch: [...]}, an event or a list")

    parsed = _Parsed(api_key=default_key)
    uuids = [e["uuid"] for e in events if isinstance(e, dict) and isinstance(e.get("uuid"), str)]
    parsed.uuids = tuple(uuids)
    try:
        for index, event in enumerate(events):
            parsed.rows.append(_capture_row(index, event, default_key, received_at))
    except _BadRequest as exc:
        parsed.rows = []
        parsed.error = exc
    if parsed.rows and parsed.api_key is None:
        parsed.api_key = parsed.rows[0][0]
    return parsed


def _capture_row(
    index: int, event: Any, default_key: str | None, received_at: str
) -> tuple[Any, ...]:
    where = f"event {index}"
    if not isinstance(event, dict):
        raise _BadRequest(400, "invalid_payload", f"{where} is not an object")
    name = event.get("event")
    if not isinstance(name, str) or not name:
        raise _BadRequest(400, "invalid_payload", f"{where} has no event name")
    properties = event.get("properties", {})
    if properties is None:
        properties = {}
    if not isinstance(properties, dict):
        raise _BadRequest(400, "invalid_payload", f"{where} properties is not an object")
    api_key = _key_of(event) or default_key or _key_of(properties)
    if api_key is None:
        raise _BadRequest(401, "invalid_api_key", "API key not provided")
    distinct_id = event.get("distinct_id")
    if distinct_id is None:
        distinct_id = properties.get("distinct_id", properties.get("$distinct_id"))
    if distinct_id is None or distinct_id == "" or isinstance(distinct_id, dict | list | bool):
        raise _BadRequest(400, "invalid_payload", f"{where} has no usable distinct_id")
    event_uuid = event.get("uuid")
    if event_uuid is not None:
        try:
            uuid_module.UUID(str(event_uuid))
        except ValueError:
            raise _BadRequest(400, "invalid_payload", f"{where} has an invalid uuid") from None
    timestamp = event.get("timestamp")
    return (
        api_key,
        None if event_uuid is None else str(event_uuid),
        name,
        str(distinct_id),
        None if timestamp is None else str(timestamp),
        # str, not orjson's bytes: those keep several times their size in spare capacity
        # (a 4 KB dict -> ~31 KB) while a batch waits to be stored; TEXT is the schema's type.
        orjson.dumps(properties, option=orjson.OPT_NON_STR_KEYS).decode(),
        received_at,
        orjson.dumps(event, option=orjson.OPT_NON_STR_KEYS).decode(),
    )


def _flag_entry(index: int, key: str, value: Any, payload: Any) -> dict[str, Any]:
    enabled = value is not False and value is not None
    variant = value if isinstance(value, str) else None
    return {
        "key": key,
        "enabled": enabled,
        "variant": variant,
        "reason": {
            "code": "condition_match" if enabled else "no_condition_match",
            "condition_index": 0 if enabled else None,
            "description": "Matched condition set 1" if enabled else "No matching condition set",
        },
        "metadata": {
            "id": index + 1,
            "version": 1,
            "payload": None if payload is None else orjson.dumps(payload).decode(),
        },
    }


def _definitions_document(definitions: Any) -> dict[str, Any]:
    if definitions is None:
        definitions = []
    if isinstance(definitions, list | tuple):
        return {"flags": list(definitions), "group_type_mapping": {}, "cohorts": {}}
    if isinstance(definitions, Mapping):
        document = dict(definitions)
        document.setdefault("flags", [])
        document.setdefault("group_type_mapping", {})
        document.setdefault("cohorts", {})
        return document
    raise TypeError("flag_definitions must be a list of flags or a mapping with 'flags'")


class _DeadlineReader(io.RawIOBase):
    """The handler's socket as a raw stream whose every read honours the request's deadline.

    Before a request's first byte the wait is the idle (keep-alive) timeout; from that byte on,
    every read gets only what is left of ``read_timeout``, so a client dripping a byte at a time
    cannot hold a request open longer than that.
    """

    def __init__(self, handler: _Handler) -> None:
        super().__init__()
        self._handler = handler
        self._sock: socket.socket = handler.connection

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        handler = self._handler
        if handler.deadline is None:
            self._sock.settimeout(handler.server.devserver._idle_timeout)
        else:
            left = handler.deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("request not received within the read timeout")
            self._sock.settimeout(left)
        received = self._sock.recv_into(buffer)
        if handler.deadline is None and received:
            handler.deadline = time.monotonic() + handler.server.devserver._read_timeout
        return received


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "phactor-devserver"
    # Two small writes per response (headers, body) would otherwise stall on delayed ACKs.
    disable_nagle_algorithm = True
    server: _HTTPServer

    deadline: float | None = None

    def setup(self) -> None:
        super().setup()
        self.rfile.close()  # replaced by a reader that enforces the timeouts
        self.rfile = io.BufferedReader(_DeadlineReader(self))
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
            self.server.devserver._handle(self, method)
        except (ConnectionError, TimeoutError):
            self.close_connection = True
        except Exception:
            _log.exception("devserver_handler_failed", path=self.path)
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.send_json(500, _error_body("server_error", "internal dev server error"))

    def read_body(self, limit: int) -> bytes:
        """The request body, at most ``limit`` bytes.

        Raises _BadRequest for a malformed Content-Length or chunked framing (400), a body over
        ``limit`` (413) or one not received within the read timeout (408); the connection then
        closes, as its remaining bytes cannot be trusted. ConnectionError when the client hangs up.
        """
        try:
            encoding = self.headers.get("Transfer-Encoding")
            if encoding is not None:
                if encoding.lower().rsplit(",", 1)[-1].strip() != "chunked":
                    raise _BadRequest(400, "invalid_payload", "unsupported Transfer-Encoding")
                return self._read_chunked(limit)
            lengths = {value.strip() for value in self.headers.get_all("Content-Length") or ()}
            if not lengths:
                return b""
            if len(lengths) > 1:
                raise _BadRequest(400, "invalid_payload", "conflicting Content-Length headers")
            text = lengths.pop()
            if not text.isascii() or not text.isdigit():
                raise _BadRequest(400, "invalid_payload", f"invalid Content-Length {text[:40]!r}")
            length = int(text)
            if length > limit:
                raise _too_large(limit)
            return self._read_exactly(length)
        except TimeoutError:
            timeout = self.server.devserver._read_timeout
            raise self._refuse(
                _BadRequest(408, "request_timeout", f"body not received within {timeout} s")
            ) from None
        except _BadRequest as exc:
            raise self._refuse(exc) from None

    def declares_large_body(self, threshold: int) -> bool:
        """Whether the request announces a body of ``threshold`` bytes or more (or chunked)."""
        if self.headers.get("Transfer-Encoding") is not None:
            return True
        text = (self.headers.get("Content-Length") or "").strip()
        return text.isascii() and text.isdigit() and int(text) >= threshold

    def _refuse(self, error: _BadRequest) -> _BadRequest:
        self.close_connection = True
        return error

    def _read_exactly(self, length: int) -> bytes:
        data = self.rfile.read(length) if length else b""
        if len(data) < length:
            raise ConnectionError("client closed the connection inside the body")
        return data

    def _read_line(self, what: str) -> bytes:
        line = self.rfile.readline(_MAX_CHUNK_LINE + 1)
        if not line:
            raise ConnectionError("client closed the connection inside the body")
        if not line.endswith(b"\n"):
            raise _BadRequest(400, "invalid_payload", f"malformed chunked body: {what} too long")
        return line

    def _read_chunked(self, limit: int) -> bytes:
        chunks: list[bytes] = []
        total = 0
        while True:
            text = self._read_line("chunk size line").split(b";", 1)[0].strip()
            if not text or text.strip(b"0123456789abcdefABCDEF"):
                raise _BadRequest(400, "invalid_payload", f"malformed chunk size {text[:40]!r}")
            size = int(text, 16)
            if size == 0:
                for _ in range(_MAX_TRAILER_LINES):
                    if self._read_line("trailer line") in (b"\r\n", b"\n"):
                        return b"".join(chunks)
                raise _BadRequest(400, "invalid_payload", "malformed chunked body: trailers")
            total += size
            if total > limit:
                raise _too_large(limit)
            chunks.append(self._read_exactly(size))
            if self._read_line("chunk end") not in (b"\r\n", b"\n"):
                raise _BadRequest(400, "invalid_payload", "malformed chunked body: chunk end")

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
        self.connection.settimeout(self.server.devserver._read_timeout)
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


class _HTTPServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], devserver: DevServer) -> None:
        self.devserver = devserver
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        self._active = 0  # connections owning a handler thread
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        # One thread per connection: past max_connections a flood of connections is answered
        # 503 from the accepting thread instead of each getting a thread.
        with self._connections_lock:
            busy = self._active >= self.devserver._max_connections
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
            _error_body("too_many_connections", "too many open connections, retry later")
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


_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    api_key TEXT NOT NULL,
    uuid TEXT,
    event TEXT NOT NULL,
    distinct_id TEXT NOT NULL,
    timestamp TEXT,
    properties TEXT NOT NULL,
    received_at TEXT NOT NULL,
    raw TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_event ON events (event);
CREATE INDEX IF NOT EXISTS events_distinct_id ON events (distinct_id);
"""

_COLUMNS = "id, api_key, uuid, event, distinct_id, timestamp, properties, received_at, raw"


class DevServer:
    """A local PostHog-compatible endpoint serving from a background thread.

    ``port=0`` picks a free port (read it from :attr:`port` / :attr:`url` after :meth:`start`).
    ``db`` is ``":memory:"`` (shared safely across the server's threads) or a file path; a file
    keeps events across runs. ``flags``, ``flag_payloads``, ``flag_definitions`` and
    ``personal_api_key`` configure the flag endpoints (see the module docstring).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        db: str | os.PathLike[str] = ":memory:",
        *,
        flags: Mapping[str, bool | str] | None = None,
        flag_payloads: Mapping[str, Any] | None = None,
        flag_definitions: Sequence[Mapping[str, Any]] | Mapping[str, Any] | None = None,
        personal_api_key: str | None = None,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        max_events: int | None = DEFAULT_MAX_EVENTS,
        max_stored_bytes: int | None = DEFAULT_MAX_STORED_BYTES,
        max_requests: int = DEFAULT_MAX_REQUESTS,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        read_timeout: float = DEFAULT_READ_TIMEOUT,
        idle_timeout: float | None = DEFAULT_IDLE_TIMEOUT,
    ) -> None:
        if not isinstance(host, str):
            raise TypeError("host must be a str")
        if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
            raise TypeError("port must be an int in 0..65535")
        if not _positive_int(max_body_bytes):
            raise TypeError("max_body_bytes must be a positive int")
        if max_events is not None and not _positive_int(max_events):
            raise TypeError("max_events must be a positive int or None")
        if max_stored_bytes is not None and not _positive_int(max_stored_bytes):
            raise TypeError("max_stored_bytes must be a positive int or None")
        if not _positive_int(max_requests):
            raise TypeError("max_requests must be a positive int")
        if not _positive_int(max_connections):
            raise TypeError("max_connections must be a positive int")
        if not _positive_seconds(read_timeout):
            raise TypeError("read_timeout must be a positive finite number of seconds")
        if idle_timeout is not None and not _positive_seconds(idle_timeout):
            raise TypeError("idle_timeout must be a positive finite number of seconds or None")
        self._max_body_bytes = max_body_bytes
        self._max_events = max_events
        self._max_stored_bytes = max_stored_bytes
        self._max_connections = max_connections
        self._large_bodies = threading.BoundedSemaphore(_LARGE_BODIES_AT_ONCE)
        self._read_timeout = float(read_timeout)
        self._idle_timeout = None if idle_timeout is None else float(idle_timeout)
        self._host = host
        self._requested_port = port
        self._db_path = os.fspath(db)
        self._db = sqlite3.connect(self._db_path, check_same_thread=False, isolation_level=None)
        if self._db_path != ":memory:":
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        # One lock serialises every use of the single connection; waiters sleep on its Condition.
        self._db_lock = threading.Lock()
        self._stored = threading.Condition(self._db_lock)
        self._stored_count = self._db.execute("SELECT COUNT(*) FROM events").fetchone()[0]
        self._stored_bytes = self._db.execute(
            "SELECT COALESCE(SUM(length(properties) + length(raw)), 0) FROM events"
        ).fetchone()[0]
        self._evicted = 0

        self._log_cond = threading.Condition()
        self._max_requests = max_requests
        self._requests: collections.deque[tuple[ReceivedRequest, int]] = collections.deque()
        self._log_bytes = 0
        self._recorded: collections.Counter[str] = collections.Counter()
        self._arrivals: collections.Counter[str] = collections.Counter()

        self._fault_lock = threading.Lock()
        self._faults: list[_Fault] = []
        self._mode = "up"
        self._mode_status = 503
        self._delay: tuple[float, str] = (0.0, "any")
        self._size_limit: int | None = None

        self._flags_lock = threading.Lock()
        self._flags: dict[str, bool | str] = {}
        self._flag_payloads: dict[str, Any] = {}
        self._definitions_body = b""
        self._definitions_etag = ""
        self._personal_api_key = personal_api_key
        self.set_flags(flags or {}, flag_payloads)
        self.set_flag_definitions(flag_definitions)

        self._server: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> DevServer:
        """Bind and serve from a daemon thread; returns self. Raises RuntimeError if started."""
        if self._server is not None:
            raise RuntimeError("DevServer already started")
        self._stopping.clear()
        self._server = _HTTPServer((self._host, self._requested_port), self)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name=f"phactor-devserver-{self.port}",
            daemon=True,
        )
        self._thread.start()
        _log.debug("devserver_started", url=self.url, db=self._db_path)
        return self

    def stop(self) -> None:
        """Stop serving and close open connections; stored events stay readable."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        server.close_connections()
        server.server_close()
        if self._thread is not None:
            self._thread.join()
        with self._log_cond:
            self._log_cond.notify_all()
        _log.debug("devserver_stopped")

    def __del__(self) -> None:
        # An explicit close keeps newer Pythons from warning about a connection left to the GC.
        with contextlib.suppress(Exception):
            self._db.close()

    def __enter__(self) -> DevServer:
        if self._server is None:
            self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The bound port; RuntimeError before :meth:`start`."""
        if self._server is None:
            raise RuntimeError("DevServer not started")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """The base URL to use as a client's ``host``, e.g. ``http://127.0.0.1:54321``."""
        host = self._host if ":" not in self._host else f"[{self._host}]"
        return f"http://{host}:{self.port}"

    # -- stored events ---------------------------------------------------------------------

    def events(
        self,
        limit: int | None = None,
        event: str | None = None,
        distinct_id: str | None = None,
        api_key: str | None = None,
        *,
        offset: int = 0,
    ) -> list[dict[str, Any]]:
        """Stored events matching every given filter, oldest first, as plain dicts."""
        where, params = self._filters(event, distinct_id, api_key)
        sql = f"SELECT {_COLUMNS} FROM events{where} ORDER BY id LIMIT ? OFFSET ?"
        params += [-1 if limit is None else int(limit), int(offset)]
        with self._db_lock:
            rows = self._db.execute(sql, params).fetchall()
        return [
            {
                "id": row[0],
                "api_key": row[1],
                "uuid": row[2],
                "event": row[3],
                "distinct_id": row[4],
                "timestamp": row[5],
                "properties": orjson.loads(row[6]),
                "received_at": row[7],
                "raw": orjson.loads(row[8]),
            }
            for row in rows
        ]

    def count(
        self, event: str | None = None, distinct_id: str | None = None, api_key: str | None = None
    ) -> int:
        """How many stored events match every given filter."""
        where, params = self._filters(event, distinct_id, api_key)
        with self._db_lock:
            if not params:
                return self._stored_count
            row = self._db.execute(f"SELECT COUNT(*) FROM events{where}", params).fetchone()
            return int(row[0])

    @property
    def max_events(self) -> int | None:
        """The most events kept (None: no limit); beyond it the oldest are evicted."""
        return self._max_events

    @property
    def max_stored_bytes(self) -> int | None:
        """The most bytes of event JSON kept (None: no limit); beyond it the oldest are evicted."""
        return self._max_stored_bytes

    @property
    def stored_bytes(self) -> int:
        """The bytes of event JSON (properties and raw) stored now."""
        with self._db_lock:
            return self._stored_bytes

    @property
    def evicted(self) -> int:
        """How many events were evicted to stay within the store's limits (since clear())."""
        with self._db_lock:
            return self._evicted

    def wait_for(self, count: int, timeout: float | None = 5.0) -> bool:
        """Block until ``count`` events were stored (evicted ones included); False on timeout."""
        with self._stored:
            return self._stored.wait_for(
                lambda: self._stored_count + self._evicted >= count, timeout
            )

    def clear(self) -> None:
        """Forget every stored event and the request log (faults stay; see reset_faults)."""
        with self._stored:
            self._db.execute("DELETE FROM events")
            self._stored_count = 0
            self._stored_bytes = 0
            self._evicted = 0
        with self._log_cond:
            self._requests.clear()
            self._log_bytes = 0
            self._recorded.clear()
            self._arrivals.clear()

    @staticmethod
    def _filters(
        event: str | None, distinct_id: str | None, api_key: str | None
    ) -> tuple[str, list[Any]]:
        clauses, params = [], []
        for column, value in (("event", event), ("distinct_id", distinct_id), ("api_key", api_key)):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        return (" WHERE " + " AND ".join(clauses) if clauses else ""), params

    def _store(self, rows: list[tuple[Any, ...]]) -> None:
        if not rows:
            return
        max_count, max_bytes = self._max_events, self._max_stored_bytes
        sizes = [_row_bytes(row) for row in rows]
        # A batch that alone overflows a limit keeps its newest events that fit.
        keep = len(rows) if max_count is None else min(len(rows), max_count)
        if max_bytes is not None:
            total, fit = 0, 0
            for size in reversed(sizes[len(sizes) - keep :]):
                if total + size > max_bytes:
                    break
                total, fit = total + size, fit + 1
            keep = fit
        skipped = len(rows) - keep
        rows, sizes = rows[skipped:], sizes[skipped:]
        new_bytes = sum(sizes)
        with self._stored:
            over_count = 0 if max_count is None else self._stored_count + len(rows) - max_count
            over_bytes = 0 if max_bytes is None else self._stored_bytes + new_bytes - max_bytes
            removed = freed = 0
            # One transaction per request: per-event commits would cap throughput far too low.
            self._db.execute("BEGIN")
            try:
                if over_count > 0 or over_bytes > 0:
                    oldest = self._db.execute(
                        "SELECT length(properties) + length(raw) FROM events ORDER BY id"
                    )
                    for (size,) in oldest:
                        if removed >= over_count and freed >= over_bytes:
                            break
                        removed, freed = removed + 1, freed + size
                    oldest.close()
                    self._db.execute(
                        "DELETE FROM events WHERE id IN "
                        "(SELECT id FROM events ORDER BY id LIMIT ?)",
                        (removed,),
                    )
                self._db.executemany(
                    "INSERT INTO events (api_key, uuid, event, distinct_id, timestamp, "
                    "properties, received_at, raw) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    rows,
                )
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
            self._stored_count += len(rows) - removed
            self._stored_bytes += new_bytes - freed
            self._evicted += removed + skipped
            self._stored.notify_all()
        if removed + skipped:
            _log.debug(
                "devserver_evicted",
                events=removed + skipped,
                max_events=max_count,
                max_stored_bytes=max_bytes,
            )

    # -- request log -----------------------------------------------------------------------

    @property
    def requests(self) -> list[ReceivedRequest]:
        """A snapshot of the recorded requests, in arrival order.

        The log keeps the newest ``max_requests`` (and about 64 MiB); older ones are forgotten,
        while :meth:`request_count` and :meth:`wait_for_requests` still count every request.
        """
        with self._log_cond:
            return [request for request, _ in self._requests]

    def request_count(self, endpoint: Endpoint = "capture") -> int:
        """How many requests reached ``endpoint``, whatever they were answered with."""
        _check_endpoint(endpoint)
        with self._log_cond:
            return self._recorded_count(endpoint)

    def _recorded_count(self, endpoint: str) -> int:
        if endpoint == "any":
            return sum(self._recorded.values())
        return self._recorded[endpoint]

    def uuid_counts(self) -> collections.Counter[str]:
        """How often each event uuid arrived in a capture request (failed ones included).

        Counts the requests still in the log (see :attr:`requests`).
        """
        with self._log_cond:
            return collections.Counter(u for r, _ in self._requests for u in r.uuids)

    def wait_for_requests(
        self, count: int, timeout: float | None = 5.0, endpoint: Endpoint = "capture"
    ) -> bool:
        """Block until ``count`` requests reached ``endpoint``; False if ``timeout`` passes."""
        _check_endpoint(endpoint)

        def reached() -> bool:
            return self._recorded_count(endpoint) >= count

        with self._log_cond:
            return self._log_cond.wait_for(reached, timeout)

    def wait_for_arrivals(
        self, count: int, timeout: float | None = 5.0, endpoint: Endpoint = "capture"
    ) -> bool:
        """Block until ``count`` requests to ``endpoint`` were read (before any delay or fault).

        Unlike :meth:`wait_for_requests` (answered or dropped requests), this tells a test that
        a client is now *inside* a request, e.g. held by :meth:`delay`.
        """
        _check_endpoint(endpoint)

        def reached() -> bool:
            if endpoint == "any":
                return sum(self._arrivals.values()) >= count
            return self._arrivals[endpoint] >= count

        with self._log_cond:
            return self._log_cond.wait_for(reached, timeout)

    def _record(self, request: ReceivedRequest, body_cost: int = 0) -> None:
        cost = (
            body_cost
            + sum(len(name) + len(value) for name, value in request.headers.items())
            + _UUID_COST * len(request.uuids)
        )
        with self._log_cond:
            self._requests.append((request, cost))
            self._log_bytes += cost
            self._recorded[request.endpoint] += 1
            while len(self._requests) > 1 and (
                len(self._requests) > self._max_requests or self._log_bytes > _MAX_LOG_BYTES
            ):
                self._log_bytes -= self._requests.popleft()[1]
            self._log_cond.notify_all()

    # -- fault injection -------------------------------------------------------------------

    def fail_next(
        self,
        n: int = 1,
        status: int = 500,
        *,
        headers: Mapping[str, str] | None = None,
        body: bytes | str = b"",
        endpoint: Endpoint = "capture",
        store: bool = False,
    ) -> None:
        """Answer the next ``n`` requests to ``endpoint`` with ``status``, ``headers``, ``body``."""
        _check_endpoint(endpoint)
        if not isinstance(status, int) or not 100 <= status <= 599:
            raise TypeError("status must be an HTTP status code")
        payload = body.encode() if isinstance(body, str) else bytes(body)
        self._queue(_Fault("fail", n, endpoint, status, dict(headers or {}), payload, store))

    def drop_next(
        self,
        n: int = 1,
        *,
        reset: bool = False,
        endpoint: Endpoint = "capture",
        store: bool = False,
    ) -> None:
        """Close the connection of the next ``n`` requests to ``endpoint`` without answering."""
        _check_endpoint(endpoint)
        self._queue(_Fault("reset" if reset else "drop", n, endpoint, store=store))

    def set_mode(self, mode: Literal["up", "down", "reset", "error"], *, status: int = 503) -> None:
        """Switch persistent behaviour for every endpoint: up, down, reset or error(status)."""
        if mode not in _MODES:
            raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
        with self._fault_lock:
            self._mode, self._mode_status = mode, status

    def delay(self, seconds: float, *, endpoint: Endpoint = "any") -> None:
        """Hold every response to ``endpoint`` for ``seconds`` (0 turns it off)."""
        _check_endpoint(endpoint)
        if seconds < 0:
            raise ValueError("seconds must be >= 0")
        with self._fault_lock:
            self._delay = (float(seconds), endpoint)

    def reject_larger_than(self, limit: int | None) -> None:
        """Answer 413 to capture bodies larger than ``limit`` bytes on the wire (None: no limit)."""
        if limit is not None and (not isinstance(limit, int) or limit < 0):
            raise TypeError("limit must be a non-negative int or None")
        with self._fault_lock:
            self._size_limit = limit

    def reset_faults(self) -> None:
        """Drop queued faults, mode back to up, no delay, no size limit."""
        with self._fault_lock:
            self._faults.clear()
            self._mode, self._mode_status = "up", 503
            self._delay = (0.0, "any")
            self._size_limit = None

    def _queue(self, fault: _Fault) -> None:
        if not isinstance(fault.remaining, int) or fault.remaining < 1:
            raise ValueError("n must be a positive int")
        with self._fault_lock:
            self._faults.append(fault)

    def _take_fault(self, endpoint: str) -> tuple[str, int, _Fault | None, float]:
        with self._fault_lock:
            seconds, delayed = self._delay
            delay = seconds if _matches(delayed, endpoint) else 0.0
            for fault in self._faults:
                if _matches(fault.endpoint, endpoint):
                    fault.remaining -= 1
                    if fault.remaining == 0:
                        self._faults.remove(fault)
                    return self._mode, self._mode_status, fault, delay
            return self._mode, self._mode_status, None, delay

    # -- flags -----------------------------------------------------------------------------

    def set_flags(
        self, flags: Mapping[str, bool | str], payloads: Mapping[str, Any] | None = None
    ) -> None:
        """Replace what ``POST /flags/`` answers: key -> True/False/variant, key -> payload."""
        for key, value in flags.items():
            if not isinstance(key, str) or not isinstance(value, bool | str):
                raise TypeError("flags must map str keys to bool or variant str values")
        with self._flags_lock:
            self._flags = dict(flags)
            self._flag_payloads = dict(payloads or {})

    def set_flag_definitions(
        self, definitions: Sequence[Mapping[str, Any]] | Mapping[str, Any] | None
    ) -> None:
        """Replace what ``GET /flags/definitions`` answers; the ETag changes with the content."""
        body = orjson.dumps(_definitions_document(definitions), option=orjson.OPT_NON_STR_KEYS)
        etag = '"' + hashlib.sha1(body).hexdigest()[:20] + '"'
        with self._flags_lock:
            self._definitions_body, self._definitions_etag = body, etag

    # -- request handling ------------------------------------------------------------------

    def _handle(self, handler: _Handler, method: str) -> None:
        split = urlsplit(handler.path)
        path = split.path
        query = {k: v[-1] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        if method == "POST" and path in _CAPTURE_LOOKUP:
            self._serve_recorded(handler, method, path, query, "capture")
        elif method == "POST" and path in _FLAGS_PATHS:
            self._serve_recorded(handler, method, path, query, "flags")
        elif method == "GET" and path in _DEFINITIONS_PATHS:
            self._serve_recorded(handler, method, path, query, "definitions")
        elif not self._discard_body(handler):
            return
        elif method == "GET" and path in ("/api/events", "/api/events/"):
            self._serve_listing(handler, query)
        elif method == "DELETE" and path in ("/api/events", "/api/events/"):
            self.clear()
            handler.send_json(200, {"status": 1})
        elif method == "GET" and path == "/":
            handler.send_json(
                200,
                {
                    "status": "ok",
                    "events": self.count(),
                    "evicted": self.evicted,
                    "stored_bytes": self.stored_bytes,
                    "requests": self.request_count("any"),
                },
            )
        else:
            handler.send_json(404, _error_body("not_found", f"no {method} {path} here"))

    def _discard_body(self, handler: _Handler) -> bool:
        """Read a body nobody uses, so the next request on the connection starts where it should.

        False when it was refused (the error is sent and the connection closes).
        """
        try:
            handler.read_body(_MAX_UNUSED_BODY_BYTES)
        except _BadRequest as exc:
            handler.send_json(exc.status, _error_body(exc.code, exc.detail))
            return False
        return True

    def _serve_listing(self, handler: _Handler, query: Mapping[str, str]) -> None:
        limit_text, offset_text = query.get("limit") or None, query.get("offset") or "0"
        if not all(
            text.isascii() and text.isdigit() and int(text) <= _MAX_SQL_INT
            for text in (limit_text or "0", offset_text)
        ):
            handler.send_json(
                400, _error_body("invalid_input", "limit and offset must be non-negative ints")
            )
            return
        limit = None if limit_text is None else int(limit_text)
        offset = int(offset_text)
        filters = {k: query.get(k) or None for k in ("event", "distinct_id", "api_key")}
        results = self.events(limit, offset=offset, **filters)
        handler.send_json(200, {"results": results, "count": self.count(**filters)})

    def _serve_recorded(
        self, handler: _Handler, method: str, path: str, query: dict[str, str], endpoint: str
    ) -> None:
        # A large body costs up to ~10x its size while parsed and stored: only a few at a time,
        # whatever the number of connections. Small ones (every SDK request) never wait.
        large = handler.declares_large_body(_LARGE_BODY_BYTES)
        if large and not self._large_bodies.acquire(timeout=self._read_timeout):
            _log.debug("devserver_busy", path=path)
            handler.close_connection = True
            handler.send_json(
                503, _error_body("server_busy", "too many large requests at once, retry later")
            )
            return
        try:
            self._serve_recorded_body(handler, method, path, query, endpoint)
        finally:
            if large:
                self._large_bodies.release()

    def _serve_recorded_body(
        self, handler: _Handler, method: str, path: str, query: dict[str, str], endpoint: str
    ) -> None:
        received_at = _now_iso()
        headers = {k.lower(): v for k, v in handler.headers.items()}
        refused: _BadRequest | None = None
        try:
            raw: bytes | None = handler.read_body(self._max_body_bytes)
        except _BadRequest as exc:
            raw, refused = None, exc
        with self._log_cond:
            self._arrivals[endpoint] += 1
            self._log_cond.notify_all()
        mode, mode_status, fault, delay = self._take_fault(endpoint)
        record = {
            "method": method,
            "path": path,
            "endpoint": endpoint,
            "query": query,
            "headers": headers,
            "body_bytes": len(raw or b""),
            "received_at": received_at,
            "peer": "{}:{}".format(*handler.client_address[:2]),
        }
        parsed = self._parse(endpoint, raw, headers, query, received_at)
        record.update(api_key=parsed.api_key, uuids=parsed.uuids, event_count=len(parsed.rows))
        if endpoint == "flags":
            record["body"] = parsed.body

        # A flags body stays in the log as parsed JSON: a few times its text in memory.
        body_cost = 0 if parsed.body is None else 4 * len(orjson.dumps(parsed.body))

        def finish(status: int | None, fault_name: str | None, error: str | None = None) -> None:
            self._record(
                ReceivedRequest(status=status, fault=fault_name, error=error, **record),  # type: ignore[arg-type]
                body_cost,
            )

        if delay and self._stopping.wait(delay):
            finish(None, "stopped")
            handler.drop(reset=False)
            return

        if refused is not None:
            finish(refused.status, "too_large" if refused.status == 413 else None, refused.detail)
            handler.send_json(refused.status, _error_body(refused.code, refused.detail))
            return
        if mode in ("down", "reset"):
            finish(None, f"mode:{mode}")
            handler.drop(reset=mode == "reset")
            return
        if mode == "error":
            finish(mode_status, "mode:error")
            handler.send_json(mode_status, _error_body("server_error", "dev server in error mode"))
            return
        if fault is not None:
            if fault.store and parsed.error is None and endpoint == "capture":
                self._store(parsed.rows)
            if fault.kind == "fail":
                finish(fault.status, "fail")
                handler.send_bytes(fault.status, fault.body, fault.headers)
            else:
                finish(None, fault.kind)
                handler.drop(reset=fault.kind == "reset")
            return
        with self._fault_lock:
            limit = self._size_limit
        if endpoint == "capture" and limit is not None and len(raw or b"") > limit:
            finish(413, "too_large")
            handler.send_json(413, _error_body("payload_too_large", f"body over {limit} bytes"))
            return
        if parsed.error is not None:
            err = parsed.error
            finish(err.status, None, err.detail)
            handler.send_json(err.status, _error_body(err.code, err.detail))
            return

        if endpoint == "capture":
            self._store(parsed.rows)
            finish(200, None)
            handler.send_json(200, {"status": 1})
        elif endpoint == "flags":
            finish(200, None)
            handler.send_json(200, self._flags_response(parsed.body))
        else:
            self._serve_definitions(handler, headers, finish)

    def _parse(
        self,
        endpoint: str,
        raw: bytes | None,
        headers: Mapping[str, str],
        query: Mapping[str, str],
        received_at: str,
    ) -> _Parsed:
        if raw is None or endpoint == "definitions":
            return _Parsed()
        try:
            body = _decode_body(raw, headers, query, self._max_body_bytes)
            if endpoint == "capture":
                return _capture_rows(body, received_at)
            if not isinstance(body, dict):
                raise _BadRequest(400, "invalid_payload", "flags body must be an object")
            wanted = body.get("flag_keys_to_evaluate")
            if wanted is not None and not (
                isinstance(wanted, list) and all(isinstance(key, str) for key in wanted)
            ):
                raise _BadRequest(
                    400, "invalid_payload", "flag_keys_to_evaluate must be a list of strings"
                )
            parsed = _Parsed(api_key=_key_of(body), body=body)
            if parsed.api_key is None:
                parsed.error = _BadRequest(401, "invalid_api_key", "API key not provided")
            return parsed
        except _BadRequest as exc:
            return _Parsed(error=exc)

    def _flags_response(self, body: Mapping[str, Any]) -> dict[str, Any]:
        with self._flags_lock:
            flags, payloads = dict(self._flags), dict(self._flag_payloads)
        wanted = body.get("flag_keys_to_evaluate")
        wanted_keys = set(wanted) if isinstance(wanted, list) else None
        return {
            "flags": {
                key: _flag_entry(index, key, value, payloads.get(key))
                for index, (key, value) in enumerate(flags.items())
                if wanted_keys is None or key in wanted_keys
            },
            "errorsWhileComputingFlags": False,
            "requestId": str(uuid_module.uuid4()),
            "evaluatedAt": int(dt.datetime.now(dt.UTC).timestamp() * 1000),
        }

    def _serve_definitions(
        self, handler: _Handler, headers: Mapping[str, str], finish: Any
    ) -> None:
        auth = headers.get("authorization", "")
        bearer = auth[7:].strip() if auth.lower().startswith("bearer ") else ""
        if not bearer or (self._personal_api_key and bearer != self._personal_api_key):
            finish(401, None, "invalid personal api key")
            handler.send_json(
                401, _error_body("invalid_api_key", "personal API key missing or invalid")
            )
            return
        with self._flags_lock:
            body, etag = self._definitions_body, self._definitions_etag
        if etag in _etags(headers.get("if-none-match", "")):
            finish(304, None)
            handler.send_bytes(304, b"", {"ETag": etag})
            return
        finish(200, None)
        handler.send_bytes(200, body, {"ETag": etag})


def _etags(header: str) -> Iterable[str]:
    return [tag.strip().removeprefix("W/") for tag in header.split(",") if tag.strip()]


def _row_bytes(row: tuple[Any, ...]) -> int:
    """What a stored row weighs: its properties and raw JSON in characters (as SQL length())."""
    return len(row[5]) + len(row[7])


def _positive_seconds(value: object) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value > 0
    )


def _positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _matches(selector: str, endpoint: str) -> bool:
    return selector == "any" or selector == endpoint


def _check_endpoint(endpoint: str) -> None:
    if endpoint not in _ENDPOINTS:
        raise ValueError(f"endpoint must be one of {_ENDPOINTS}, got {endpoint!r}")
