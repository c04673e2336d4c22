"""The :class:`DevServer`: what each endpoint means, over the parts in the sibling modules.

It routes a request (see :mod:`phactor.devserver` for the endpoints), asks the fault plan how to
misbehave, parses capture and flags bodies (:mod:`~phactor.devserver.ingest`), stores events
(:mod:`~phactor.devserver.store`), logs the request (:mod:`~phactor.devserver.requestlog`) and
answers from the flag fixtures (:mod:`~phactor.devserver.flags`).

Over 500 lines on purpose: it is the one place that says what every endpoint does (routing and
the viewer's JSON API side by side); the work behind each endpoint lives in the sibling modules.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import threading
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson
import structlog

from phactor.devserver.faults import Endpoint, FaultPlan, Mode
from phactor.devserver.flags import FlagFixtures, etags
from phactor.devserver.httpd import Handler, HTTPServer
from phactor.devserver.ingest import (
    BadRequest,
    Parsed,
    capture_rows,
    decode_body,
    error_body,
    key_of,
    now_iso,
)
from phactor.devserver.limits import (
    DEFAULT_IDLE_TIMEOUT,
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_EVENTS,
    DEFAULT_MAX_REQUESTS,
    DEFAULT_MAX_STORED_BYTES,
    DEFAULT_READ_TIMEOUT,
    LARGE_BODIES_AT_ONCE,
    LARGE_BODY_BYTES,
    MAX_UNUSED_BODY_BYTES,
    positive_int,
    positive_seconds,
)
from phactor.devserver.requestlog import ReceivedRequest, RequestLog
from phactor.devserver.store import EventStore
from phactor.devserver.viewer import ViewerApi

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
        if not positive_int(max_body_bytes):
            raise TypeError("max_body_bytes must be a positive int")
        if max_events is not None and not positive_int(max_events):
            raise TypeError("max_events must be a positive int or None")
        if max_stored_bytes is not None and not positive_int(max_stored_bytes):
            raise TypeError("max_stored_bytes must be a positive int or None")
        if not positive_int(max_requests):
            raise TypeError("max_requests must be a positive int")
        if not positive_int(max_connections):
            raise TypeError("max_connections must be a positive int")
        if not positive_seconds(read_timeout):
            raise TypeError("read_timeout must be a positive finite number of seconds")
        if idle_timeout is not None and not positive_seconds(idle_timeout):
            raise TypeError("idle_timeout must be a positive finite number of seconds or None")
        self._max_body_bytes = max_body_bytes
        self._max_connections = max_connections
        self._large_bodies = threading.BoundedSemaphore(LARGE_BODIES_AT_ONCE)
        self._read_timeout = float(read_timeout)
        self._idle_timeout = None if idle_timeout is None else float(idle_timeout)
        self._host = host
        self._requested_port = port
        self._store = EventStore(db, max_events, max_stored_bytes)
        self._request_log = RequestLog(max_requests)
        self._faults = FaultPlan()
        self._flags = FlagFixtures(personal_api_key)
        self._viewer = ViewerApi(self._store, self._request_log, self._faults, self._status)
        self.set_flags(flags or {}, flag_payloads)
        self.set_flag_definitions(flag_definitions)

        self._server: HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> DevServer:
        """Bind and serve from a daemon thread; returns self. Raises RuntimeError if started."""
        if self._server is not None:
            raise RuntimeError("DevServer already started")
        self._stopping.clear()
        self._server = HTTPServer(
            (self._host, self._requested_port),
            self._handle,
            max_connections=self._max_connections,
            read_timeout=self._read_timeout,
            idle_timeout=self._idle_timeout,
        )
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name=f"phactor-devserver-{self.port}",
            daemon=True,
        )
        self._thread.start()
        _log.debug("devserver_started", url=self.url, db=self._store.path)
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
        self._request_log.wake()
        _log.debug("devserver_stopped")

    def __del__(self) -> None:
        # An explicit close keeps newer Pythons from warning about a connection left to the GC.
        with contextlib.suppress(Exception):
            self._store.close()

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
        return self._store.events(limit, event, distinct_id, api_key, offset=offset)

    def count(
        self, event: str | None = None, distinct_id: str | None = None, api_key: str | None = None
    ) -> int:
        """How many stored events match every given filter."""
        return self._store.count(event, distinct_id, api_key)

    @property
    def max_events(self) -> int | None:
        """The most events kept (None: no limit); beyond it the oldest are evicted."""
        return self._store.max_events

    @property
    def max_stored_bytes(self) -> int | None:
        """The most bytes of event JSON kept (None: no limit); beyond it the oldest are evicted."""
        return self._store.max_stored_bytes

    @property
    def stored_bytes(self) -> int:
        """The bytes of event JSON (properties and raw) stored now."""
        return self._store.stored_bytes

    @property
    def evicted(self) -> int:
        """How many events were evicted to stay within the store's limits (since clear())."""
        return self._store.evicted

    def wait_for(self, count: int, timeout: float | None = 5.0) -> bool:
        """Block until ``count`` events were stored (evicted ones included); False on timeout."""
        return self._store.wait_for(count, timeout)

    def clear(self) -> None:
        """Forget every stored event and the request log (faults stay; see reset_faults)."""
        self._store.clear()
        self._request_log.clear()

    # -- request log -----------------------------------------------------------------------

    @property
    def requests(self) -> list[ReceivedRequest]:
        """A snapshot of the recorded requests, in arrival order.

        The log keeps the newest ``max_requests`` (and about 64 MiB); older ones are forgotten,
        while :meth:`request_count` and :meth:`wait_for_requests` still count every request.
        """
        return self._request_log.requests

    def request_count(self, endpoint: Endpoint = "capture") -> int:
        """How many requests reached ``endpoint``, whatever they were answered with."""
        return self._request_log.count(endpoint)

    def uuid_counts(self) -> collections.Counter[str]:
        """How often each event uuid arrived in a capture request (failed ones included).

        Counts the requests still in the log (see :attr:`requests`).
        """
        return self._request_log.uuid_counts()

    def wait_for_requests(
        self, count: int, timeout: float | None = 5.0, endpoint: Endpoint = "capture"
    ) -> bool:
        """Block until ``count`` requests reached ``endpoint``; False if ``timeout`` passes."""
        return self._request_log.wait_for_requests(count, timeout, endpoint)

    def wait_for_arrivals(
        self, count: int, timeout: float | None = 5.0, endpoint: Endpoint = "capture"
    ) -> bool:
        """Block until ``count`` requests to ``endpoint`` were read (before any delay or fault).

        Unlike :meth:`wait_for_requests` (answered or dropped requests), this tells a test that
        a client is now *inside* a request, e.g. held by :meth:`delay`.
        """
        return self._request_log.wait_for_arrivals(count, timeout, endpoint)

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
        self._faults.fail_next(
            n, status, headers=headers, body=body, endpoint=endpoint, store=store
        )

    def drop_next(
        self,
        n: int = 1,
        *,
        reset: bool = False,
        endpoint: Endpoint = "capture",
        store: bool = False,
    ) -> None:
        """Close the connection of the next ``n`` requests to ``endpoint`` without answering."""
        self._faults.drop_next(n, reset=reset, endpoint=endpoint, store=store)

    def set_mode(self, mode: Mode, *, status: int = 503) -> None:
        """Switch persistent behaviour for every endpoint: up, down, reset or error(status)."""
        self._faults.set_mode(mode, status=status)

    def delay(self, seconds: float, *, endpoint: Endpoint = "any") -> None:
        """Hold every response to ``endpoint`` for ``seconds`` (0 turns it off)."""
        self._faults.delay(seconds, endpoint=endpoint)

    def reject_larger_than(self, limit: int | None) -> None:
        """Answer 413 to capture bodies larger than ``limit`` bytes on the wire (None: no limit)."""
        self._faults.reject_larger_than(limit)

    def reset_faults(self) -> None:
        """Drop queued faults, mode back to up, no delay, no size limit."""
        self._faults.reset()

    # -- flags -----------------------------------------------------------------------------

    def set_flags(
        self, flags: Mapping[str, bool | str], payloads: Mapping[str, Any] | None = None
    ) -> None:
        """Replace what ``POST /flags/`` answers: key -> True/False/variant, key -> payload."""
        self._flags.set_flags(flags, payloads)

    def set_flag_definitions(
        self, definitions: Sequence[Mapping[str, Any]] | Mapping[str, Any] | None
    ) -> None:
        """Replace what ``GET /flags/definitions`` answers; the ETag changes with the content."""
        self._flags.set_definitions(definitions)

    # -- request handling ------------------------------------------------------------------

    def _handle(self, handler: Handler, method: str) -> None:
        split = urlsplit(handler.path)
        path = split.path
        query = {k: v[-1] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        if method == "POST" and path in _CAPTURE_LOOKUP:
            self._serve_recorded(handler, method, path, query, "capture")
        elif method == "POST" and path in _FLAGS_PATHS:
            self._serve_recorded(handler, method, path, query, "flags")
        elif method == "GET" and path in _DEFINITIONS_PATHS:
            self._serve_recorded(handler, method, path, query, "definitions")
        elif (body := self._small_body(handler)) is None or self._viewer.serve(handler, method, path, query, body):
            return
        elif method == "DELETE" and path in ("/api/events", "/api/events/"):
            self.clear()
            handler.send_json(200, {"status": 1})
        else:
            handler.send_json(404, error_body("not_found", f"no {method} {path} here"))

    def _status(self) -> dict[str, Any]:
        return {
            "status": "ok",
            "events": self.count(),
            "evicted": self.evicted,
            "stored_bytes": self.stored_bytes,
            "requests": self.request_count("any"),
        }

    def _small_body(self, handler: Handler) -> bytes | None:
        """Read the body of a request outside the recorded endpoints (used only by a fault
        switch, read anyway so the next request on the connection starts where it should).

        None when it was refused (the error is sent and the connection closes).
        """
        try:
            return handler.read_body(MAX_UNUSED_BODY_BYTES)
        except BadRequest as exc:
            handler.send_json(exc.status, error_body(exc.code, exc.detail))
            return None

    def _serve_recorded(
        self, handler: Handler, method: str, path: str, query: dict[str, str], endpoint: str
    ) -> None:
        # A large body costs up to ~10x its size while parsed and stored: only a few at a time,
        # whatever the number of connections. Small ones (every SDK request) never wait.
        large = handler.declares_large_body(LARGE_BODY_BYTES)
        if large and not self._large_bodies.acquire(timeout=self._read_timeout):
            _log.debug("devserver_busy", path=path)
            handler.close_connection = True
            handler.send_json(
                503, error_body("server_busy", "too many large requests at once, retry later")
            )
            return
        try:
            self._serve_recorded_body(handler, method, path, query, endpoint)
        finally:
            if large:
                self._large_bodies.release()

    def _serve_recorded_body(
        self, handler: Handler, method: str, path: str, query: dict[str, str], endpoint: str
    ) -> None:
        received_at = now_iso()
        headers = {k.lower(): v for k, v in handler.headers.items()}
        refused: BadRequest | None = None
        try:
            raw: bytes | None = handler.read_body(self._max_body_bytes)
        except BadRequest as exc:
            raw, refused = None, exc
        self._request_log.arrived(endpoint)
        decision = self._faults.take(endpoint)
        mode, mode_status, fault, delay = (
            decision.mode,
            decision.mode_status,
            decision.fault,
            decision.delay,
        )
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

        gzipped = (
            headers.get("content-encoding", "").lower() == "gzip"
            or query.get("compression") in ("gzip", "gzip-js")
            or (raw or b"")[:2] == b"\x1f\x8b"
        )

        def finish(
            status: int | None,
            fault_name: str | None,
            error: str | None = None,
            code: str | None = None,
        ) -> None:
            accepted = status == 200 and fault_name is None
            self._request_log.record(
                ReceivedRequest(status=status, fault=fault_name, error=error, **record),  # type: ignore[arg-type]
                body_cost,
                gzipped=gzipped,
                reason=None if accepted else code or fault_name or f"status_{status}",
            )

        if delay and self._stopping.wait(delay):
            finish(None, "stopped")
            handler.drop(reset=False)
            return

        if refused is not None:
            finish(
                refused.status,
                "too_large" if refused.status == 413 else None,
                refused.detail,
                refused.code,
            )
            handler.send_json(refused.status, error_body(refused.code, refused.detail))
            return
        if mode in ("down", "reset"):
            finish(None, f"mode:{mode}")
            handler.drop(reset=mode == "reset")
            return
        if mode == "error":
            finish(mode_status, "mode:error")
            handler.send_json(mode_status, error_body("server_error", "dev server in error mode"))
            return
        if fault is not None:
            if fault.store and parsed.error is None and endpoint == "capture":
                self._store.store(parsed.rows)
            if fault.kind == "fail":
                finish(fault.status, "fail", None, f"fail:{fault.status}")
                handler.send_bytes(fault.status, fault.body, fault.headers)
            else:
                finish(None, fault.kind)
                handler.drop(reset=fault.kind == "reset")
            return
        limit = self._faults.size_limit
        if endpoint == "capture" and limit is not None and len(raw or b"") > limit:
            finish(413, "too_large", None, "payload_too_large")
            handler.send_json(413, error_body("payload_too_large", f"body over {limit} bytes"))
            return
        if parsed.error is not None:
            err = parsed.error
            finish(err.status, None, err.detail, err.code)
            handler.send_json(err.status, error_body(err.code, err.detail))
            return

        if endpoint == "capture":
            self._store.store(parsed.rows)
            finish(200, None)
            handler.send_json(200, {"status": 1})
        elif endpoint == "flags":
            finish(200, None)
            handler.send_json(200, self._flags.response(parsed.body))
        else:
            self._serve_definitions(handler, headers, finish)

    def _parse(
        self,
        endpoint: str,
        raw: bytes | None,
        headers: Mapping[str, str],
        query: Mapping[str, str],
        received_at: str,
    ) -> Parsed:
        if raw is None or endpoint == "definitions":
            return Parsed()
        try:
            body = decode_body(raw, headers, query, self._max_body_bytes)
            if endpoint == "capture":
                return capture_rows(body, received_at)
            if not isinstance(body, dict):
                raise BadRequest(400, "invalid_payload", "flags body must be an object")
            wanted = body.get("flag_keys_to_evaluate")
            if wanted is not None and not (
                isinstance(wanted, list) and all(isinstance(key, str) for key in wanted)
            ):
                raise BadRequest(
                    400, "invalid_payload", "flag_keys_to_evaluate must be a list of strings"
                )
            parsed = Parsed(api_key=key_of(body), body=body)
            if parsed.api_key is None:
                parsed.error = BadRequest(401, "invalid_api_key", "API key not provided")
            return parsed
        except BadRequest as exc:
            return Parsed(error=exc)

    def _serve_definitions(self, handler: Handler, headers: Mapping[str, str], finish: Any) -> None:
        if not self._flags.authorized(headers):
            finish(401, None, "invalid personal api key")
            handler.send_json(
                401, error_body("invalid_api_key", "personal API key missing or invalid")
            )
            return
        body, etag = self._flags.definitions()
        if etag in etags(headers.get("if-none-match", "")):
            finish(304, None)
            handler.send_bytes(304, b"", {"ETag": etag})
            return
        finish(200, None)
        handler.send_bytes(200, body, {"ETag": etag})
