"""`Config`: every option of an instance, validated once at `start()` and frozen afterwards.

Validation lives here so that a typo or a wrong type fails loudly at boot (ConfigError naming
the option and the expected form) instead of silently changing behaviour later.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

from phactor.errors import ConfigError

__all__ = ["DEFAULT_HOST", "Config"]

DEFAULT_HOST = "https://us.i.posthog.com"

_LEVELS = {"DEBUG": 10, "INFO": 20, "WARNING": 30, "ERROR": 40, "CRITICAL": 50}


@dataclasses.dataclass(frozen=True, slots=True, repr=False)
class Config:
    """The frozen configuration of one phactor instance (see docs/configuration.md)."""

    api_key: str | None = None
    host: str = DEFAULT_HOST
    personal_api_key: str | None = None
    # batching
    flush_at: int = 100
    flush_interval: float = 5.0
    max_queue_size: int = 10_000
    max_batch_bytes: int = 5 * 1024 * 1024
    max_event_bytes: int = 900 * 1024
    # delivery
    senders: int = 2
    request_timeout: float = 10.0
    gzip: bool = True
    max_retries: int = 5
    retry_base_delay: float = 0.5
    retry_max_delay: float = 30.0
    verify: bool | str = True
    # events
    global_properties: Mapping[str, Any] = dataclasses.field(
        default_factory=lambda: MappingProxyType({})
    )
    before_send: Callable[[dict[str, Any]], dict[str, Any] | None] | None = None
    on_error: Callable[..., Any] | None = None
    # modes
    test_mode: bool = False
    disabled: bool = False
    sync_mode: bool = False
    debug: bool = False
    # supervision
    max_restarts: int = 3
    max_seconds: float = 5.0
    shutdown_timeout: float = 10.0
    # process end
    handle_sigterm: bool = True
    # feature flags
    poll_interval: float = 30.0
    flags_request_timeout: float = 3.0
    flags: Mapping[str, Any] | str | None = None
    feature_flag_called_cache_size: int = 50_000
    # error tracking
    enable_error_tracking: bool = True
    capture_level: int = logging.ERROR
    in_app_modules: tuple[str, ...] = ()
    capture_messages: bool = False
    exception_rate_limit_burst: int = 50
    exception_rate_limit_per_second: float = 1.0
    exception_backlog: int = 1000

    @classmethod
    def build(cls, **options: Any) -> Config:
        """Validate keyword options (plus env fallbacks) and return a frozen Config.

        Raises ConfigError naming the first bad or unknown option.
        """
        known = {f.name for f in dataclasses.fields(cls)}
        for name in options:
            if name not in known:
                raise ConfigError(
                    name, f"one of the known options ({', '.join(sorted(known))})", "unknown option"
                )
        values = dict(options)
        if values.get("api_key") is None:
            values["api_key"] = os.environ.get("POSTHOG_API_KEY") or None
        if values.get("host") is None:
            values["host"] = os.environ.get("POSTHOG_HOST") or DEFAULT_HOST
        for name, check in _CHECKS.items():
            if name in values:
                values[name] = check(name, values[name])
        config = cls(**values)
        if not (config.test_mode or config.disabled) and not config.api_key:
            raise ConfigError(
                "api_key", "a project api key string (or env POSTHOG_API_KEY)", missing=True
            )
        return config

    def __repr__(self) -> str:
        parts = []
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.name in ("api_key", "personal_api_key"):
                value = mask(value)
            parts.append(f"{field.name}={value!r}")
        return f"Config({', '.join(parts)})"

    def masked_api_key(self) -> str:
        """The api key reduced to a prefix, safe for logs."""
        return mask(self.api_key)


def mask(secret: str | None) -> str:
    """Mask all of a secret but a short prefix, so logs can identify it without leaking it."""
    if not secret:
        return "<none>"
    return secret[:7] + "***" if len(secret) > 10 else "***"


# --- validators: each returns the normalised value or raises ConfigError -------------------


def _str_or_none(name: str, value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(name, "a non-empty string", value)
    return value.strip()


def _host(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value.startswith(("http://", "https://")):
        raise ConfigError(name, "an http:// or https:// URL", value)
    return value.rstrip("/")


def _bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(name, "True or False", value)
    return value


def _int_at_least(minimum: int) -> Callable[[str, Any], int]:
    def check(name: str, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ConfigError(name, f"an int >= {minimum}", value)
        return value

    return check


def _seconds(allow_zero: bool) -> Callable[[str, Any], float]:
    def check(name: str, value: Any) -> float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        if not ok or value != value or value < 0 or (value == 0 and not allow_zero):
            form = "a number of seconds >= 0" if allow_zero else "a number of seconds > 0"
            raise ConfigError(name, form, value)
        return float(value)

    return check


def _callable_or_none(name: str, value: Any) -> Any:
    if value is not None and not callable(value):
        raise ConfigError(name, "a callable or None", value)
    return value


def _mapping(name: str, value: Any) -> Mapping[str, Any]:
    if value is None:
        return MappingProxyType({})
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise ConfigError(name, "a mapping with str keys", value)
    return MappingProxyType(dict(value))


def _verify(name: str, value: Any) -> bool | str:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value:
        return value
    raise ConfigError(name, "True, False or a path to a CA bundle", value)


def _flags(name: str, value: Any) -> Mapping[str, Any] | str | None:
    if value is None:
        return None
    if isinstance(value, str | os.PathLike):
        return os.fspath(value)
    if isinstance(value, Mapping) and all(isinstance(k, str) for k in value):
        return MappingProxyType(dict(value))
    raise ConfigError(name, "a mapping of flag key -> value, or a path to a JSON file", value)


def _level(name: str, value: Any) -> int:
    if isinstance(value, str) and value.upper() in _LEVELS:
        return _LEVELS[value.upper()]
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    raise ConfigError(name, "a logging level (int or 'ERROR', 'WARNING', ...)", value)


def _modules(name: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = (value,)
    try:
        items = tuple(value)
    except TypeError:
        raise ConfigError(name, "a list of module name prefixes", value) from None
    if not all(isinstance(m, str) and m for m in items):
        raise ConfigError(name, "a list of module name prefixes", value)
    return items


_CHECKS: dict[str, Callable[[str, Any], Any]] = {
    "api_key": _str_or_none,
    "host": _host,
    "personal_api_key": _str_or_none,
    "flush_at": _int_at_least(1),
    "flush_interval": _seconds(allow_zero=False),
    "max_queue_size": _int_at_least(1),
    "max_batch_bytes": _int_at_least(1024),
    "max_event_bytes": _int_at_least(256),
    "senders": _int_at_least(1),
    "request_timeout": _seconds(allow_zero=False),
    "gzip": _bool,
    "max_retries": _int_at_least(0),
    "retry_base_delay": _seconds(allow_zero=True),
    "retry_max_delay": _seconds(allow_zero=True),
    "verify": _verify,
    "global_properties": _mapping,
    "before_send": _callable_or_none,
    "on_error": _callable_or_none,
    "test_mode": _bool,
    "disabled": _bool,
    "sync_mode": _bool,
    "debug": _bool,
    "max_restarts": _int_at_least(0),
    "max_seconds": _seconds(allow_zero=False),
    "shutdown_timeout": _seconds(allow_zero=True),
    "handle_sigterm": _bool,
    "poll_interval": _seconds(allow_zero=False),
    "flags_request_timeout": _seconds(allow_zero=False),
    "flags": _flags,
    "feature_flag_called_cache_size": _int_at_least(0),
    "enable_error_tracking": _bool,
    "capture_level": _level,
    "in_app_modules": _modules,
    "capture_messages": _bool,
    "exception_rate_limit_burst": _int_at_least(1),
    "exception_rate_limit_per_second": _seconds(allow_zero=True),
    "exception_backlog": _int_at_least(1),
}
