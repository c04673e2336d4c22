"""ASGI middleware: each HTTP request runs inside its own phactor context (FastAPI, Starlette,
Litestar, Quart, or a plain ASGI app); no framework is imported.

    from phactor.integrations.asgi import PhactorASGIMiddleware
    app.add_middleware(PhactorASGIMiddleware, instance="default")   # Starlette / FastAPI
    app = PhactorASGIMiddleware(app)                                 # any ASGI app

Per `http` scope, in one `context()` scope of each chosen instance: the request properties of
`phactor.integrations._request` and the `distinct_id` callback's answer (it gets the ASGI scope;
it may be `async def`; it wins over the `X-POSTHOG-DISTINCT-ID` header). The context ends when
the app's call returns — a streaming response included, since it is sent inside that call — so
nothing set during the request outlives it, even when a server serves several requests from one
task. `websocket` and `lifespan` scopes pass through untouched. An exception escaping the app is
captured once per instance with the request's context and re-raised unchanged (a Starlette
`HTTPException` below 500 is not captured).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

from phactor._log import get_logger
from phactor.integrations._request import asgi_properties
from phactor.integrations._scope import Options, RequestScope

__all__ = ["PhactorASGIMiddleware"]

_log = get_logger("integrations")

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class PhactorASGIMiddleware:
    """Wrap an ASGI app: per-request phactor context and exception capture.

    Options as `PhactorWSGIMiddleware`'s: `instance`, `distinct_id` (takes the ASGI scope; sync
    or async), `trusted_proxies`, `capture_exceptions`, `tracing_headers`.
    """

    def __init__(
        self,
        app: ASGIApp,
        instance: str | Iterable[str] = "default",
        *,
        distinct_id: Callable[[Scope], Any] | None = None,
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

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("type") != "http":
            await self.app(scope, receive, send)
            return
        request = await self.open_scope(scope)
        if request is None:
            await self.app(scope, receive, send)
            return
        request.enter()
        try:
            await self.app(scope, receive, send)
        except BaseException as exc:
            self.options.capture(request.instances, exc)
            raise
        finally:
            request.exit()

    async def open_scope(self, scope: Scope) -> RequestScope | None:
        """The request's scope (not entered yet), or None when no instance is running or the
        request could not be read (logged; the request goes on without context)."""
        options = self.options
        try:
            instances = options.instances()
            if not instances:
                return None
            props = asgi_properties(scope, options.trusted, options.tracing_headers)
            if options.distinct_id is not None:
                distinct_id = await options.acallback_distinct_id(scope)
                if distinct_id is not None:
                    props["distinct_id"] = distinct_id
            return RequestScope(instances, props)
        except Exception as error:
            _log.warning("request_context_failed", error=repr(error))
            return None
