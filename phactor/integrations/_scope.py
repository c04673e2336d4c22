"""What every framework integration shares: the instances it serves, the per-request context
scope, the app's distinct_id callback, and exception capture that never breaks a request.

A request's context is entered with each chosen instance's public `Instance.context()` and
left when the request ends, so whatever the request (or the app's view) put in the context —
`set_context()` included — is gone before the thread or task serves the next request.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from phactor import api
from phactor._log import get_logger
from phactor.errors import ConfigError, NotStarted
from phactor.integrations._request import (
    TrustedProxies,
    clean_distinct_id,
    is_expected_http_error,
)

if TYPE_CHECKING:
    from phactor.instance import Instance

__all__ = ["Options", "RequestScope"]

_log = get_logger("integrations")


class Options:
    """The options every request integration takes (validated once, at setup)."""

    __slots__ = (
        "_missing_warned",
        "capture_exceptions",
        "distinct_id",
        "names",
        "tracing_headers",
        "trusted",
    )

    def __init__(
        self,
        instance: str | Iterable[str] = "default",
        *,
        distinct_id: Callable[[Any], Any] | None = None,
        trusted_proxies: Iterable[str] | None = None,
        capture_exceptions: bool = True,
        tracing_headers: bool = True,
    ):
        self.names = instance_names(instance)
        if distinct_id is not None and not callable(distinct_id):
            raise ConfigError("distinct_id", "a callable taking the request, or None", distinct_id)
        self.distinct_id = distinct_id
        self.trusted = None if trusted_proxies is None else TrustedProxies(trusted_proxies)
        if not isinstance(capture_exceptions, bool):
            raise ConfigError("capture_exceptions", "True or False", capture_exceptions)
        if not isinstance(tracing_headers, bool):
            raise ConfigError("tracing_headers", "True or False", tracing_headers)
        self.capture_exceptions = capture_exceptions
        self.tracing_headers = tracing_headers
        self._missing_warned: set[str] = set()

    def instances(self) -> list[Instance]:
        """The running instances among the chosen names (looked up per request: an instance
        may be started after the app is built, or restarted)."""
        found = []
        for name in self.names:
            try:
                found.append(api.instance(name))
            except NotStarted:
                if name not in self._missing_warned:
                    self._missing_warned.add(name)
                    _log.warning("integration_instance_not_started", instance=name)
        return found

    def callback_distinct_id(self, request: Any) -> str | None:
        """The app's distinct_id for `request` (sync callback); None on any failure."""
        callback = self.distinct_id
        if callback is None:
            return None
        try:
            return checked_distinct_id(callback(request))
        except Exception as error:
            _log.warning("distinct_id_callback_failed", error=repr(error))
            return None

    async def acallback_distinct_id(self, request: Any) -> str | None:
        """The app's distinct_id for `request`; the callback may be `async def`."""
        callback = self.distinct_id
        if callback is None:
            return None
        try:
            value = callback(request)
            if inspect.isawaitable(value):
                value = await value
            return checked_distinct_id(value)
        except Exception as error:
            _log.warning("distinct_id_callback_failed", error=repr(error))
            return None

    def capture(self, instances: Iterable[Instance], exc: BaseException, **props: Any) -> None:
        """Send `exc` to each instance once (never raises); HTTP errors raised on purpose and
        exceptions an instance already captured are skipped."""
        if not self.capture_exceptions or not isinstance(exc, Exception):
            return
        try:
            if is_expected_http_error(exc):
                return
        except Exception:  # pragma: no cover - a broken __mro__ / getattr
            return
        for inst in instances:
            try:
                inst.capture_exception(exc, properties=props or None)
            except Exception as error:
                _log.warning("capture_exception_failed", instance=inst.name, error=repr(error))


def instance_names(instance: Any) -> tuple[str, ...]:
    """`instance=` of an integration: one name or a list of names (the multi-project case)."""
    names = (instance,) if isinstance(instance, str) else instance
    try:
        names = tuple(names)
    except TypeError:
        raise ConfigError("instance", "an instance name or a list of names", instance) from None
    if not names or any(not isinstance(n, str) or not n for n in names):
        raise ConfigError("instance", "an instance name or a list of names", instance)
    return tuple(dict.fromkeys(names))


def checked_distinct_id(value: Any) -> str | None:
    if value is None:
        return None
    checked = clean_distinct_id(value)
    if checked is None:
        _log.warning("distinct_id_callback_bad_value", value_type=type(value).__name__)
    return checked


class RequestScope:
    """The context of one request in each instance: `enter()` at the start, `exit()` at the end
    (on the same thread or task)."""

    __slots__ = ("_entered", "instances", "props")

    def __init__(self, instances: list[Instance], props: dict[str, Any]):
        self.instances = instances
        self.props = props
        self._entered: list[AbstractContextManager[None]] = []

    def enter(self) -> None:
        """Enter the request's context in every instance; never raises (a failure is logged
        and the request goes on with the contexts entered so far)."""
        entered = self._entered
        try:
            for inst in self.instances:
                scope = inst.context(self.props)
                scope.__enter__()
                entered.append(scope)
        except Exception as error:
            _log.warning("request_context_failed", error=repr(error))

    def exit(self) -> None:
        entered, self._entered = self._entered, []
        for scope in reversed(entered):
            try:
                scope.__exit__(None, None, None)
            except Exception as error:  # pragma: no cover - token from another context
                _log.warning("context_exit_failed", error=repr(error))
