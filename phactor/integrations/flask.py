"""Flask extension: per-request phactor context and unhandled view exceptions.

    from phactor.integrations.flask import PhactorFlask
    phactor_ext = PhactorFlask(app, instance="default",
                               distinct_id=lambda request: current_user.get_id())
    # or, with an application factory:
    phactor_ext = PhactorFlask(instance="default"); phactor_ext.init_app(app)

`init_app` wraps `app.wsgi_app` in `PhactorWSGIMiddleware` (so the context covers the whole
request, a streamed body included), calls the `distinct_id` callback with Flask's `request` at
the start of each request (it wins over the `X-POSTHOG-DISTINCT-ID` header), and captures the
exceptions Flask treats as unhandled (`got_request_exception`: the ones it turns into a 500)
once per instance, with the request's context. Exceptions an error handler of the app handles,
and `HTTPException`s (`abort(404)`), are not captured; Flask's logging of the exception is not
captured a second time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from phactor._log import get_logger
from phactor.integrations._scope import Options
from phactor.integrations.wsgi import PhactorWSGIMiddleware

__all__ = ["PhactorFlask"]

_log = get_logger("integrations")
_EXTENSION = "phactor"


class PhactorFlask:
    """The Flask extension; options as `PhactorWSGIMiddleware`'s (the `distinct_id` callback
    gets Flask's `request`)."""

    def __init__(
        self,
        app: Any = None,
        instance: str | Iterable[str] = "default",
        *,
        distinct_id: Callable[[Any], Any] | None = None,
        trusted_proxies: Iterable[str] | None = None,
        capture_exceptions: bool = True,
        tracing_headers: bool = True,
    ):
        self.options = Options(
            instance,
            distinct_id=distinct_id,
            trusted_proxies=trusted_proxies,
            capture_exceptions=capture_exceptions,
            tracing_headers=tracing_headers,
        )
        # Parsed once (a generator given here must not be read twice).
        trusted = self.options.trusted
        self._trusted_proxies = None if trusted is None else list(trusted.networks)
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Any) -> None:
        """Install on `app` (once per app)."""
        from flask import got_request_exception

        if _EXTENSION in app.extensions:
            raise RuntimeError("phactor is already installed on this Flask app")
        app.extensions[_EXTENSION] = self
        options = self.options
        # The WSGI half has no distinct_id callback: it gets the environ, the app's callback
        # gets Flask's request (called in before_request, inside the WSGI half's scope).
        app.wsgi_app = PhactorWSGIMiddleware(
            app.wsgi_app,
            options.names,
            trusted_proxies=self._trusted_proxies,
            capture_exceptions=options.capture_exceptions,
            tracing_headers=options.tracing_headers,
        )
        if options.distinct_id is not None:
            app.before_request(self._before_request)
        got_request_exception.connect(self._on_exception, app, weak=False)

    def _before_request(self) -> None:
        from flask import request

        distinct_id = self.options.callback_distinct_id(request)
        if distinct_id is None:
            return
        try:
            # Inside the WSGI middleware's scope: undone when the request ends.
            for inst in self.options.instances():
                inst.set_context({"distinct_id": distinct_id})
        except Exception as error:
            _log.warning("request_context_failed", error=repr(error))

    def _on_exception(self, sender: Any, exception: BaseException, **_: Any) -> None:
        self.options.capture(self.options.instances(), exception)
