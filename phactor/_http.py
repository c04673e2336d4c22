"""HTTP requests with a deadline on their total time and the configured TLS verification.

requests' ``timeout`` bounds each socket operation, not the request: a server (or a proxy) that
sends one byte before every read timeout holds the caller for ever — a Sender, so ``flush()``,
or an app thread waiting for a flag. Here each request also gets a deadline on the shared
scheduler thread; when it passes, the request's socket is shut down, the blocked read returns
at once, and the request raises `DeadlineExceeded` (a ``requests.Timeout``). The socket is
found through connection classes that tell the calling thread's deadline which connection
(and, while connecting, which raw socket) it is using.

``verify`` is passed with every request instead of being set on the Session: with
``trust_env`` (the default, which keeps proxy settings working) requests lets
REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE replace ``Session.verify``, so a CA path or ``False`` from
the config was silently ignored.

Imported lazily (it imports requests, which `import phactor` must not pay for).
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Mapping
from typing import Any

import requests
import requests.adapters
import urllib3
import urllib3.connection
import urllib3.poolmanager

from phactor.timer import scheduler

__all__ = ["BoundedSession", "DeadlineExceeded"]


class DeadlineExceeded(requests.Timeout):
    """The request did not complete (connect, send, whole response) within its deadline."""


class _Deadline:
    """One request's deadline: at expiry, shut down the sockets the request is using."""

    __slots__ = ("_done", "_handle", "_lock", "_watched", "expired")

    def __init__(self, seconds: float) -> None:
        self.expired = False
        self._lock = threading.Lock()
        self._done = False
        self._watched: list[tuple[Any, Any]] = []  # (connection, socket it had then)
        self._handle = scheduler.call_later(seconds, self._expire)

    def watch(self, conn: Any, sock: Any) -> None:
        # Which request owns the connection now: a pooled connection may serve another
        # thread's request after this one is done with it.
        conn._phactor_deadline = self
        with self._lock:
            if not self._done:
                self._watched.append((conn, sock))

    def finish(self) -> None:
        with self._lock:
            self._done = True
            self._watched = []
        scheduler.cancel(self._handle)

    def _expire(self) -> None:
        with self._lock:
            if self._done:
                return
            self.expired = True
            watched = self._watched
        for conn, sock in watched:
            if getattr(conn, "_phactor_deadline", None) is not self:
                continue
            # The socket it had when watched: a response that ends with the connection
            # ("Connection: close") takes the socket over and the connection forgets it.
            for target in (sock, getattr(conn, "sock", None)):
                if isinstance(target, socket.socket):
                    # The plain socket's shutdown (also for an SSLSocket): it wakes a blocked
                    # read or write with EOF/EPIPE without touching TLS state from this thread.
                    with contextlib.suppress(OSError):
                        socket.socket.shutdown(target, socket.SHUT_RDWR)


_current = threading.local()  # .deadline: the _Deadline of the request on this thread


def _watch(conn: Any, sock: Any) -> None:
    deadline = getattr(_current, "deadline", None)
    if deadline is not None:
        deadline.watch(conn, sock)


class _HTTPConnection(urllib3.connection.HTTPConnection):
    def _new_conn(self) -> socket.socket:
        raw = super()._new_conn()
        _watch(self, raw)
        return raw

    def request(self, *args: Any, **kwargs: Any) -> None:
        _watch(self, self.sock)  # None until connected: then `_new_conn` reports the socket
        super().request(*args, **kwargs)


class _HTTPSConnection(urllib3.connection.HTTPSConnection):
    def _new_conn(self) -> socket.socket:
        raw = super()._new_conn()
        _watch(self, raw)  # covers the TLS handshake (the TLS socket replaces it afterwards)
        return raw

    def request(self, *args: Any, **kwargs: Any) -> None:
        _watch(self, self.sock)  # the TLS socket (connected before the request is sent)
        super().request(*args, **kwargs)


class _HTTPConnectionPool(urllib3.HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSConnectionPool(urllib3.HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


_POOLS = {"http": _HTTPConnectionPool, "https": _HTTPSConnectionPool}


class _Adapter(requests.adapters.HTTPAdapter):
    """requests' adapter, with pools whose connections report to the thread's deadline."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _POOLS

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if manager.pool_classes_by_scheme is urllib3.poolmanager.pool_classes_by_scheme:
            manager.pool_classes_by_scheme = _POOLS  # (a SOCKS proxy keeps its own pools)
        return manager


class BoundedSession:
    """A keep-alive `requests.Session` whose requests each finish within `timeout` seconds.

    Thread-safe as requests' Session is for requests; each calling thread has its own deadline.
    """

    def __init__(self, *, verify: bool | str, headers: Mapping[str, str]) -> None:
        self.verify = verify
        self.session = requests.Session()
        adapter = _Adapter()
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.session.headers.update(headers)

    def request(self, method: str, url: str, *, timeout: float, **kwargs: Any) -> Any:
        """Send one request (redirects not followed); returns the `requests.Response`.

        Raises only `requests.RequestException`: `DeadlineExceeded` when connecting, sending and
        reading the whole response took longer than `timeout` seconds, `requests.ConnectionError`
        for what requests lets through unwrapped (a missing CA bundle file is a bare OSError).
        """
        deadline = _Deadline(timeout)
        outer = getattr(_current, "deadline", None)
        _current.deadline = deadline
        try:
            response = self.session.request(
                method,
                url,
                timeout=timeout,
                verify=self.verify,
                allow_redirects=False,
                **kwargs,
            )
        except Exception as error:
            if deadline.expired:
                raise DeadlineExceeded(f"no complete response within {timeout:g} s") from error
            if isinstance(error, requests.RequestException):
                raise
            raise requests.ConnectionError(f"{type(error).__name__}: {error}") from error
        finally:
            _current.deadline = outer
            deadline.finish()
        if deadline.expired:  # the shutdown may end a body without Content-Length "cleanly"
            raise DeadlineExceeded(f"no complete response within {timeout:g} s")
        return response

    def close(self) -> None:
        self.session.close()
