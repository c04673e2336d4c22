"""WSGI middleware: each request runs inside its own phactor context, and nothing leaks out.

    from phactor.integrations.wsgi import PhactorWSGIMiddleware
    app = PhactorWSGIMiddleware(app, instance="default", trusted_proxies=["10.0.0.0/8"])

Per request, in one `context()` scope of each chosen instance: the request properties of
`phactor.integrations._request` (`$current_url`, `$host`, `$pathname`, `$request_method`,
`$ip`, `$user_agent`, the tracing headers) and the `distinct_id` callback's answer (it gets the
WSGI environ and wins over the `X-POSTHOG-DISTINCT-ID` header). The scope ends when the app
returns; a streaming body is iterated (and closed) inside a copy of the request's context as the
app left it, so code running while the body streams sees the request's context and nothing set
there outlives it. An exception escaping the app (or the body) is captured once per instance
with the request's context, then re-raised unchanged. The middleware itself never fails a
request: if reading the request goes wrong, the request runs without phactor context.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from phactor._log import get_logger
from phactor.integrations._request import wsgi_properties
from phactor.integrations._scope import Options, RequestScope

__all__ = ["PhactorWSGIMiddleware"]

_log = get_logger("integrations")


class PhactorWSGIMiddleware:
    """Wrap a WSGI app: per-request phactor context and exception capture.

    Options: `instance` (a name or a list of names, default "default"), `distinct_id` (a
    callable taking the WSGI environ; returns a str/int/UUID or None), `trusted_proxies`
    (addresses/networks whose `X-Forwarded-For` is believed; default none: `$ip` is the peer),
    `capture_exceptions` (default True), `tracing_headers` (read `X-POSTHOG-*`, default True).
    """

    def __init__(
        self,
        app: Callable[..., Iterable[bytes]],
        instance: str | Iterable[str] = "default",
        *,
        distinct_id: Callable[[dict[str, Any]], Any] | None = None,
        trusted_proxies: Iterable[str] | None = None,
        capture_exceptions: bool = True,
        tracing_headers: bool = True,
    ):
        self.app = app
        self.options = Options(
            instance,
            distinct_id=distinct_id,
            trusted_proxies=trusted_proxies,
            capture_exceptions=capture_exceptions,
            tracing_headers=tracing_headers,
        )

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        scope = self.open_scope(environ)
        if scope is None:
            return self.app(environ, start_response)
        scope.enter()
        try:
            body = self.app(environ, start_response)
            if isinstance(body, (list, tuple)):
                return body  # nothing of the app runs while it is sent
            # The request's context as the app left it, for the code the body runs.
            return _ScopedBody(body, contextvars.copy_context(), self.options, scope)
        except BaseException as exc:
            self.options.capture(scope.instances, exc)
            raise
        finally:
            scope.exit()

    def open_scope(self, environ: dict[str, Any]) -> RequestScope | None:
        """The request's scope (not entered yet), or None when no instance is running or the
        request could not be read (logged; the request goes on without context)."""
        options = self.options
        try:
            instances = options.instances()
            if not instances:
                return None
            props = wsgi_properties(environ, options.trusted, options.tracing_headers)
            if options.distinct_id is not None:
                distinct_id = options.callback_distinct_id(environ)
                if distinct_id is not None:
                    props["distinct_id"] = distinct_id
            return RequestScope(instances, props)
        except Exception as error:
            _log.warning("request_context_failed", error=repr(error))
            return None


class _ScopedBody:
    """A response body iterated (and closed) inside the request's context."""

    __slots__ = ("_body", "_context", "_iterator", "_options", "_scope")

    def __init__(
        self,
        body: Iterable[bytes],
        context: contextvars.Context,
        options: Options,
        scope: RequestScope,
    ):
        self._body = body
        self._context = context
        self._options = options
        self._scope = scope
        self._iterator: Iterator[bytes] | None = None

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        try:
            if self._iterator is None:
                self._iterator = self._context.run(iter, self._body)
            return self._context.run(next, self._iterator)
        except StopIteration:
            raise
        except BaseException as exc:
            self._context.run(self._options.capture, self._scope.instances, exc)
            raise

    def close(self) -> None:
        close = getattr(self._body, "close", None)
        if close is not None:
            self._context.run(close)
