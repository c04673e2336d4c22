"""A fast loopback PostHog sink for the benchmarks, plus a "down" endpoint for outage runs.

The sink is deliberately separate from `phactor.devserver`: the benchmark must not depend on code
under test, and it must be cheap enough that it is never the bottleneck it measures. It speaks
HTTP/1.1 with keep-alive (one handler thread per connection), counts the events of every batch it
receives per project key (so concurrent runs never mix their counts), and answers 200 {"status":1}.

It also serves local-evaluation flag definitions on both definition paths, and two control
endpoints the benchmark children use: `GET /_sink/count?key=K` and
`GET /_sink/wait?key=K&n=N&timeout=T` (long-poll until K has received N events).
"""

from __future__ import annotations

import gzip
import json
import socket
import threading
import time
import urllib.parse
import urllib.request
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

try:  # orjson is a phactor runtime dependency, so it is present in every venv we run in.
    import orjson

    _loads = orjson.loads
except ImportError:  # pragma: no cover - only without phactor's dependencies
    _loads = json.loads

_OK_BODY = b'{"status":1}'
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found"}
_DEFINITION_PATHS = ("/flags/definitions", "/api/feature_flag/local_evaluation")


class _Counter:
    """Events, batches and bytes received for one project key."""

    __slots__ = ("batches", "bytes", "events")

    def __init__(self) -> None:
        self.events = 0
        self.batches = 0
        self.bytes = 0


class Sink:
    """A loopback HTTP server that accepts PostHog batches and counts their events per api key.

    Use as a context manager, or call `start()` / `stop()`. `url` is the base URL to give a client
    as its host. `flag_definitions` is the JSON document served on the definition endpoints.
    """

    def __init__(self, flag_definitions: dict[str, Any] | None = None, host: str = "127.0.0.1"):
        self._definitions = json.dumps(
            flag_definitions or {"flags": [], "group_type_mapping": {}, "cohorts": {}}
        ).encode()
        self._counters: dict[str, _Counter] = {}
        self._cond = threading.Condition()
        self._host = host
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.bad_requests = 0

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> Sink:
        """Bind an ephemeral loopback port and serve in a daemon thread; returns self."""
        handler = _make_handler(self)
        server = ThreadingHTTPServer((self._host, 0), handler)
        server.daemon_threads = True
        # A deep backlog so a burst of new connections is never refused.
        server.request_queue_size = 128
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the listening socket."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> Sink:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """The base URL (`http://127.0.0.1:PORT`) to pass as a client's host."""
        if self._server is None:
            raise RuntimeError("sink is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    # -- counting ----------------------------------------------------------------------------
    def record(self, key: str, events: int, nbytes: int) -> None:
        """Count one received batch of `events` events for project key `key`."""
        with self._cond:
            counter = self._counters.get(key)
            if counter is None:
                counter = self._counters[key] = _Counter()
            counter.events += events
            counter.batches += 1
            counter.bytes += nbytes
            self._cond.notify_all()

    def counts(self, key: str) -> dict[str, int]:
        """Events, batches and body bytes received so far for `key`."""
        with self._cond:
            c = self._counters.get(key) or _Counter()
            return {"events": c.events, "batches": c.batches, "bytes": c.bytes}

    def wait_for(self, key: str, n: int, timeout: float) -> bool:
        """Block until `key` has received at least `n` events; False if `timeout` passes first."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                c = self._counters.get(key)
                if c is not None and c.events >= n:
                    return True
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)

    @property
    def definitions_body(self) -> bytes:
        """The encoded flag-definitions document."""
        return self._definitions


def _count_events(doc: Any) -> tuple[str, int]:
    """(api key, number of events) of a decoded capture body; batch or single event."""
    if isinstance(doc, dict):
        key = doc.get("api_key") or doc.get("token") or ""
        batch = doc.get("batch")
        if isinstance(batch, list):
            return str(key), len(batch)
        if "event" in doc:
            return str(key), 1
        return str(key), 0
    if isinstance(doc, list):
        return "", len(doc)
    return "", 0


def _make_handler(sink: Sink) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: clients reuse one connection per sender
        server_version = "phactor-bench-sink"
        sys_version = ""
        # Without TCP_NODELAY, Nagle's algorithm plus the client's delayed ACK can add ~40 ms
        # to a request whose answer is split into small segments.
        disable_nagle_algorithm = True

        def log_message(self, format: str, *args: Any) -> None:
            """Silence per-request logging: it would dominate the sink's cost."""

        def _reply(self, status: int, body: bytes, ctype: str = "application/json") -> None:
            # One write for status line, headers and body: cheaper than send_response/send_header
            # and never split into small segments.
            reason = _REASONS.get(status, "OK")
            self.wfile.write(
                f"HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\n"
                f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )

        def _read_body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                parts = []
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        self.rfile.readline()
                        break
                    parts.append(self.rfile.read(size))
                    self.rfile.readline()
                return b"".join(parts)
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length else b""

        def do_POST(self) -> None:
            raw = self._read_body()
            path = self.path.split("?", 1)[0]
            if path.startswith("/flags"):
                # Remote evaluation is never what we measure: answer "no flags" quickly.
                self._reply(200, b'{"flags":{},"errorsWhileComputingFlags":false}')
                return
            try:
                encoding = self.headers.get("Content-Encoding", "").lower()
                body = raw
                if encoding == "gzip":
                    body = gzip.decompress(raw)
                elif encoding == "deflate":
                    body = zlib.decompress(body)
                key, n = _count_events(_loads(body))
            except Exception:
                sink.bad_requests += 1
                self._reply(400, b'{"status":0}')
                return
            sink.record(key, n, len(raw))
            self._reply(200, _OK_BODY)

        def do_GET(self) -> None:
            path, _, query = self.path.partition("?")
            params = {k: v[0] for k, v in urllib.parse.parse_qs(query).items()}
            if path.rstrip("/") in _DEFINITION_PATHS:
                self._reply(200, sink.definitions_body)
            elif path == "/_sink/count":
                self._reply(200, json.dumps(sink.counts(params.get("key", ""))).encode())
            elif path == "/_sink/wait":
                key = params.get("key", "")
                ok = sink.wait_for(
                    key, int(params.get("n", "0")), float(params.get("timeout", "60"))
                )
                self._reply(200, json.dumps({"ok": ok, **sink.counts(key)}).encode())
            else:
                self._reply(404, b'{"detail":"not found"}')

    return Handler


def down_url() -> str:
    """A loopback URL with nothing listening: every connection is refused at once (outage mode)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # The port was just released; nothing else on loopback will claim it during a run.
    return f"http://127.0.0.1:{port}"


def remote_wait(sink_url: str, key: str, n: int, timeout: float) -> dict[str, Any]:
    """Ask a sink in another process to wait until `key` has `n` events; returns its counts."""
    query = urllib.parse.urlencode({"key": key, "n": n, "timeout": timeout})
    with urllib.request.urlopen(f"{sink_url}/_sink/wait?{query}", timeout=timeout + 10) as r:
        return json.loads(r.read())


def remote_counts(sink_url: str, key: str) -> dict[str, Any]:
    """Counts for `key` from a sink in another process."""
    query = urllib.parse.urlencode({"key": key})
    with urllib.request.urlopen(f"{sink_url}/_sink/count?{query}", timeout=10) as r:
        return json.loads(r.read())
