"""Django middleware: per-request phactor context (sync and async views) and view exceptions.

settings.py::

    MIDDLEWARE = [
        ...,
        "django.contrib.auth.middleware.AuthenticationMiddleware",
        "phactor.integrations.django.PhactorMiddleware",   # after auth, to see request.user
        ...,
    ]
    PHACTOR_MIDDLEWARE = {
        "instance": "default",                  # or ["web", "analytics"]
        "distinct_id": "phactor.integrations.django.user_id",   # a callable or its dotted path
        "trusted_proxies": ["10.0.0.0/8"],
        "capture_exceptions": True,
        "tracing_headers": True,
    }

Start the instance in `AppConfig.ready()` (see docs/integrations.md). The request's context is a
`context()` scope of each instance around the rest of the chain; a streaming response's content
is produced inside a copy of the request's context. An exception a view raises (sync or async) is
captured once per instance with the request's context (`process_exception`); Django still turns
it into its 500 page, and the `django.request` log record of it is not captured again. `Http404`,
`PermissionDenied`, `BadRequest` and `SuspiciousOperation` are not captured.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.conf import settings
from django.utils.module_loading import import_string

from phactor._log import get_logger
from phactor.errors import ConfigError
from phactor.integrations._request import MAX_PATH_CHARS, clean, wsgi_properties
from phactor.integrations._scope import Options, RequestScope

__all__ = ["PhactorMiddleware", "auser_id", "user_id"]

_log = get_logger("integrations")
_OPTIONS = ("instance", "distinct_id", "trusted_proxies", "capture_exceptions", "tracing_headers")
_SCOPE_ATTR = "_phactor_scope"


def user_id(request: Any) -> str | None:
    """distinct_id callback: the authenticated user's primary key (sync views)."""
    user = getattr(request, "user", None)
    return _user_pk(user)


async def auser_id(request: Any) -> str | None:
    """distinct_id callback for async views: `await request.auser()`'s primary key."""
    auser = getattr(request, "auser", None)
    return _user_pk(await auser()) if auser is not None else None


def _user_pk(user: Any) -> str | None:
    if user is None or not getattr(user, "is_authenticated", False):
        return None
    pk = getattr(user, "pk", None)
    return None if pk is None else str(pk)


def _options() -> Options:
    given = getattr(settings, "PHACTOR_MIDDLEWARE", None) or {}
    if not isinstance(given, dict):
        raise ConfigError("PHACTOR_MIDDLEWARE", "a dict of middleware options", given)
    unknown = set(given) - set(_OPTIONS)
    if unknown:
        raise ConfigError(
            "PHACTOR_MIDDLEWARE", f"only the keys {', '.join(_OPTIONS)}", sorted(unknown)
        )
    opts = dict(given)
    if isinstance(opts.get("distinct_id"), str):
        opts["distinct_id"] = import_string(opts["distinct_id"])
    return Options(opts.pop("instance", "default"), **opts)


class PhactorMiddleware:
    """Django middleware (sync and async); options from `settings.PHACTOR_MIDDLEWARE`."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[Any], Any]):
        self.get_response = get_response
        self.options = _options()
        self._async = iscoroutinefunction(get_response)
        if self._async:
            markcoroutinefunction(self)

    def __call__(self, request: Any) -> Any:
        if self._async:
            return self.__acall__(request)
        scope = self._open(request, self.options.callback_distinct_id(request))
        if scope is None:
            return self.get_response(request)
        scope.enter()
        try:
            response = self.get_response(request)
            if getattr(response, "streaming", False):
                self._scope_streaming(response)
            return response
        finally:
            scope.exit()

    async def __acall__(self, request: Any) -> Any:
        scope = self._open(request, await self.options.acallback_distinct_id(request))
        if scope is None:
            return await self.get_response(request)
        scope.enter()
        try:
            response = await self.get_response(request)
            if getattr(response, "streaming", False):
                self._scope_streaming(response)
            return response
        finally:
            scope.exit()

    def _open(self, request: Any, distinct_id: str | None) -> RequestScope | None:
        options = self.options
        try:
            instances = options.instances()
            if not instances:
                return None
            props = wsgi_properties(request.META, options.trusted, options.tracing_headers)
            # Django's own view of the path (the ASGI handler fills META too).
            path = clean(request.path, MAX_PATH_CHARS) or "/"
            props["$pathname"] = path
            if "$host" in props:
                props["$current_url"] = f"{request.scheme}://{props['$host']}{path}"
            if distinct_id is not None:
                props["distinct_id"] = distinct_id
            scope = RequestScope(instances, props)
            setattr(request, _SCOPE_ATTR, scope)
            return scope
        except Exception as error:
            _log.warning("request_context_failed", error=repr(error))
            return None

    def process_exception(self, request: Any, exception: Exception) -> None:
        """Capture a view's exception (inside the request's context); Django goes on as usual."""
        scope = getattr(request, _SCOPE_ATTR, None)
        if scope is not None:
            self.options.capture(scope.instances, exception)
        return None

    def _scope_streaming(self, response: Any) -> None:
        try:
            context = contextvars.copy_context()
            content = response.streaming_content
            if getattr(response, "is_async", False):
                response.streaming_content = _async_in_context(content, context)
            else:
                response.streaming_content = _in_context(content, context)
        except Exception as error:
            _log.warning("streaming_context_failed", error=repr(error))


def _in_context(content: Any, context: contextvars.Context) -> Iterator[Any]:
    iterator = context.run(iter, content)
    while True:
        try:
            chunk = context.run(next, iterator)
        except StopIteration:
            return
        yield chunk


async def _async_in_context(content: Any, context: contextvars.Context) -> AsyncIterator[Any]:
    loop = asyncio.get_running_loop()
    iterator = content.__aiter__()

    async def step() -> Any:
        return await iterator.__anext__()

    while True:
        try:
            # Each step runs as a task in the request's context (a copy of it).
            chunk = await loop.create_task(step(), context=context)
        except StopAsyncIteration:
            return
        yield chunk
