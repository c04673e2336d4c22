"""HTTP transport: turns a list of serialised events into one POST and reports what happened.

It knows bytes, headers and status codes — not batching, retries or stats (those are the
Sender's). `MemoryTransport` is the test-mode stand-in: it accepts everything and keeps the
decoded events for `phactor.testing`.
"""

from __future__ import annotations

import os
import sys
import threading
import zlib
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple, Protocol

import orjson

from phactor._log import scrub
from phactor._version import __version__
from phactor.events import now_iso

__all__ = [
    "USER_AGENT",
    "HttpTransport",
    "MemoryTransport",
    "Response",
    "Transport",
    "batch_body",
    "load_http_stack",
]

USER_AGENT = f"phactor/{__version__}"

# requests (~50-120 ms to import) loads on the first Sender's thread, not in start(). A fork
# while that thread is inside the import would leave the child a module lock held by a thread
# that does not exist there (its first request would hang for good), so a fork waits for an
# import in progress: `_import_lock` is held across os.fork() by the forking thread.
_import_lock = threading.Lock()
_FORK_WAIT = 10.0  # bounded: a fork never waits forever on an import that is stuck itself
_held_for_fork = False


def load_http_stack() -> None:
    """Import requests (and what its first request imports) once, fork-safely."""
    if "phactor._http" in sys.modules:
        return
    with _import_lock:
        import netrc  # noqa: F401  # lazy: start-up time (requests imports it per request)
        import shlex  # noqa: F401  # lazy: start-up time

        import phactor._http  # noqa: F401  # lazy: start-up time (requests)


def _before_fork() -> None:
    global _held_for_fork
    _held_for_fork = _import_lock.acquire(timeout=_FORK_WAIT)


def _after_fork_in_parent() -> None:
    global _held_for_fork
    if _held_for_fork:
        _held_for_fork = False
        _import_lock.release()


def _after_fork_in_child() -> None:
    global _import_lock, _held_for_fork
    _import_lock = threading.Lock()
    _held_for_fork = False


if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=_before_fork,
        after_in_parent=_after_fork_in_parent,
        after_in_child=_after_fork_in_child,
    )


class Response(NamedTuple):
    """The outcome of one request: a status (None on a network error) and what came with it."""

    status: int | None
    headers: Mapping[str, str]
    text: str
    error: BaseException | None = None


class Transport(Protocol):
    def post_batch(self, api_key: str, events: Sequence[bytes]) -> Response: ...

    def close(self) -> None: ...


def batch_body(api_key: str, events: Sequence[bytes], sent_at: str | None = None) -> bytes:
    """The `/batch/` request body, assembled from already-serialised events (no re-encoding)."""
    return b"".join(
        (
            b'{"api_key":',
            orjson.dumps(api_key),
            b',"batch":[',
            b",".join(events),
            b'],"sent_at":"',
            (sent_at or now_iso()).encode(),
            b'","historical_migration":false}',
        )
    )


class HttpTransport:
    """POSTs batches to `{host}/batch/` over one keep-alive session.

    Each request, from connecting to the last byte of the answer, is bounded by `timeout`
    (see `phactor._http`): a server that drips its answer cannot hold a Sender.
    """

    def __init__(self, host: str, *, timeout: float, gzip: bool, verify: bool | str):
        self.url = f"{host}/batch/"
        self.timeout = timeout
        self.gzip = gzip
        self.verify = verify
        # requests (~50-120 ms to import) loads here, on the Sender's own thread while start()
        # returns (not on the caller's): a process that forks after start() (a pre-fork pool)
        # gives its children requests already imported, as an import in a dying child could
        # wait on a module lock its interrupted main thread holds. The session is made on the
        # first POST.
        load_http_stack()
        self._http: Any = None

    def _session(self) -> Any:
        load_http_stack()
        from phactor._http import BoundedSession  # lazy: start-up time (requests)

        self._http = BoundedSession(
            verify=self.verify,
            headers={"User-Agent": USER_AGENT, "Content-Type": "application/json"},
            url=self.url,
        )
        return self._http

    def post_batch(self, api_key: str, events: Sequence[bytes]) -> Response:
        body = batch_body(api_key, events)
        headers = {}
        if self.gzip:
            # One zlib call writes the whole gzip member (header, deflate, CRC): ~30 % less CPU
            # than gzip.compress, and one GIL release per batch instead of two (its separate
            # crc32 releases it too): each release is a GIL hand-off to and back from the app.
            body = zlib.compress(body, 6, wbits=31)
            headers["Content-Encoding"] = "gzip"
        http = self._http if self._http is not None else self._session()
        try:
            # Redirects are not followed: requests would turn a POST into a GET on 301/302 and
            # could follow to another scheme; a redirect is reported as the status it is.
            r = http.request(
                "POST", self.url, data=body, headers=headers, timeout=self.timeout
            )
        except Exception as error:  # requests, http.client, urllib3, ssl: all network errors
            return Response(None, {}, "", error)
        # Keys masked before the cut: an echoed key cut in two would stay readable.
        return Response(r.status_code, r.headers, scrub(r.text)[:2000])

    def close(self) -> None:
        if self._http is not None:
            self._http.close()


class MemoryTransport:
    """Test mode: accepts every batch and keeps its events (decoded) in `sink`."""

    def __init__(self, sink: list[dict[str, Any]], lock: threading.Lock):
        self.sink = sink
        self.lock = lock

    def post_batch(self, api_key: str, events: Sequence[bytes]) -> Response:
        decoded = [orjson.loads(e) for e in events]
        with self.lock:
            self.sink.extend(decoded)
        return Response(200, {}, '{"status":1}')

    def close(self) -> None:
        pass
