"""HTTP requests with a deadline on their total time and the configured TLS verification.

requests' ``timeout`` bounds each socket operation, not the request: a server (or a proxy) that
sends one byte before every read timeout holds the caller for ever — a Sender, so ``flush()``,
or an app thread waiting for a flag. Here each request also gets a deadline on the shared
scheduler thread; when it passes, the request's socket is shut down, the blocked read returns
at once, and the request raises `DeadlineExceeded` (a ``requests.Timeout``). The socket is
found through connection classes that tell the calling thread's deadline which connection
(and, while connecting, which raw socket) it is using.

The environment is read once, when the session is made (`environment`), not on every request
as requests' ``trust_env`` does (proxies, NO_PROXY, ~/.netrc, the CA bundle variables: ~10% of a
Sender's CPU, and a file system lookup per request): HTTP(S)_PROXY / ALL_PROXY / NO_PROXY for
the configured host, and REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE when ``verify`` is True (a CA path
or ``False`` from the config wins over them). The session then runs with ``trust_env`` off and
those settings explicit, so ~/.netrc never adds an ``Authorization`` of its own to our requests.

A response body is read up to a bound (`MAX_BODY`, or the caller's): the rest of an oversized
or endless answer is never read (the connection is closed instead of reused) and the response
says it was cut (``body_cut``).

Imported lazily (it imports requests, which `import phactor` must not pay for).
"""

from __future__ import annotations

import contextlib
import os
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

__all__ = ["MAX_BODY", "BoundedSession", "DeadlineExceeded", "environment"]

#: What is read of a response body by default (a batch answer is a few bytes).
MAX_BODY = 1024 * 1024
_CHUNK = 16 * 1024  # read (and decompress) at most this much at a time


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
    """requests' adapter, with pools whose connections report to the thread's deadline.

    The CA settings of a pool are checked once per (scheme, verify, cert) rather than with a
    file system lookup on every request (a missing bundle still fails every attempt).
    """

    def cert_verify(self, conn: Any, url: str, verify: Any, cert: Any) -> None:
        key = (url[:6].lower() == "https:", verify, cert)
        if getattr(conn, "_phactor_verified", None) == key:
            return
        super().cert_verify(conn, url, verify, cert)
        conn._phactor_verified = key

    def build_connection_pool_key_attributes(
        self, request: Any, verify: Any, cert: Any = None
    ) -> Any:
        # requests looks at the file system (is `verify` a directory?) on every request.
        origin = request.url.split("/", 3)[:3]
        key = (*origin, verify, cert)
        cached = self._phactor_pool_keys.get(key)
        if cached is None:
            cached = super().build_connection_pool_key_attributes(request, verify, cert)
            if len(self._phactor_pool_keys) < 16:
                self._phactor_pool_keys[key] = cached
        host_params, pool_kwargs = cached
        return dict(host_params), dict(pool_kwargs)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        self._phactor_pool_keys: dict[Any, Any] = {}
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _POOLS

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if manager.pool_classes_by_scheme is urllib3.poolmanager.pool_classes_by_scheme:
            manager.pool_classes_by_scheme = _POOLS  # (a SOCKS proxy keeps its own pools)
        return manager


def environment(url: str, verify: bool | str) -> tuple[dict[str, str], bool | str]:
    """The proxies and the `verify` value requests' ``trust_env`` would use for `url`, now.

    Proxies: HTTP_PROXY / HTTPS_PROXY / ALL_PROXY (and the system's settings where requests
    reads them), none when NO_PROXY matches the host. `verify` True: REQUESTS_CA_BUNDLE or
    CURL_CA_BUNDLE when set (they name the trust store, as in requests); a CA path or False
    is kept as configured.
    """
    proxies = dict(requests.utils.get_environ_proxies(url))
    if verify is True:
        verify = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
    return proxies, verify


class BoundedSession:
    """A keep-alive `requests.Session` whose requests each finish within `timeout` seconds.

    `url` is the host every request goes to: its proxy and CA settings are read from the
    environment once, here (`environment`); without one, requests reads them per request
    (``trust_env``). Thread-safe as requests' Session is for requests; each calling thread has
    its own deadline.
    """

    def __init__(
        self, *, verify: bool | str, headers: Mapping[str, str], url: str | None = None
    ) -> None:
        self.verify = verify
        self.session = requests.Session()
        if url is not None:
            proxies, self.verify = environment(url, verify)
            self.session.trust_env = False  # read once: no netrc, no per-request lookups
            self.session.proxies.update(proxies)
        adapter = _Adapter()
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.session.headers.update(headers)

    def request(
        self, method: str, url: str, *, timeout: float, max_body: int = MAX_BODY, **kwargs: Any
    ) -> Any:
        """Send one request (redirects not followed); returns the `requests.Response`.

        At most `max_body` bytes of the (decoded) body are read: a longer one is cut there and
        the response's ``body_cut`` is True (the connection is then closed, not reused).
        Raises only `requests.RequestException`: `DeadlineExceeded` when connecting, sending and
        reading the whole response took longer than `timeout` seconds, `requests.ConnectionError`
        for what requests lets through unwrapped (a missing CA bundle file is a bare OSError).
        """
        deadline = _Deadline(timeout)
        outer = getattr(_current, "deadline", None)
        _current.deadline = deadline
        try:
            response: Any = self.session.request(
                method,
                url,
                timeout=timeout,
                verify=self.verify,
                allow_redirects=False,
                stream=True,
                **kwargs,
            )
            response.body_cut = _read_body(response, max_body)
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


def _read_body(response: Any, limit: int) -> bool:
    """Read at most `limit` bytes of `response`'s body into `response.content`; True when
    there was more (left unread: the connection is closed rather than returned to the pool)."""
    chunks = []
    left = limit
    cut = False
    try:
        for chunk in response.iter_content(_CHUNK):
            if len(chunk) > left:
                chunks.append(chunk[:left])
                cut = True
                break
            chunks.append(chunk)
            left -= len(chunk)
    except BaseException:
        response.close()
        raise
    response._content = b"".join(chunks)
    response._content_consumed = True
    if cut:
        response.raw.close()  # the unread rest must not be taken for the next answer
    response.close()  # gives the connection back to the pool (a closed one reconnects)
    return cut
