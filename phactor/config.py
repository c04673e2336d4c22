"""`Config`: every option of an instance, validated once at `start()` and frozen afterwards.

Validation lives here so that a typo or a wrong type fails loudly at boot (ConfigError naming
the option and the expected form) instead of silently changing behaviour later.
"""

from __future__ import annotations

import dataclasses
import logging
import numbers
import os
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

from phactor.errors import ConfigError

__all__ = ["DEFAULT_HOST", "Config"]

DEFAULT_HOST = "https://us.i.posthog.com"

#: Options read from the environment when not given (or given as None).
_ENV = {"api_key": "POSTHOG_API_KEY", "host": "POSTHOG_HOST"}

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
    on_drop: Callable[[str, int], Any] | None = None
    # modes
    test_mode: bool = False
    disabled: bool = False
    sync_mode: bool = False
    debug: bool = False
    # supervision
    max_restarts: int = 3
    max_seconds: float = 5.0
    shutdown_timeout: float = 10.0
    watchdog_interval: float = 300.0
    # process end
    handle_sigterm: bool = True
    # durable spool (docs/durability.md)
    spool_dir: str | None = None
    spool_sync: str = "batch"
    spool_interval: float = 0.2
    spool_max_bytes: int = 512 * 1024 * 1024
    # feature flags
    poll_interval: float = 30.0
    flags_request_timeout: float = 3.0
    flags: Mapping[str, Any] | str | None = None
    feature_flag_called_cache_size: int = 50_000
    flags_cache_size: int = 10_000
    flags_cache_ttl: float = 3600.0
    strict_local: bool = False
    enable_local_evaluation: bool = True
    evaluation_environments: tuple[str, ...] = ()
    # geoip
    disable_geoip: bool = True
    # error tracking
    enable_error_tracking: bool = True
    capture_level: int = logging.ERROR
    in_app_modules: tuple[str, ...] = ()
    capture_messages: bool = False
    exception_rate_limit_burst: int = 50
    exception_rate_limit_per_second: float = 1.0
    exception_backlog: int = 1000
    error_tracking_loggers: tuple[str, ...] = ()

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
        from_env: dict[str, str] = {}
        for name, variable in _ENV.items():
            if values.get(name) is None and os.environ.get(variable):
                values[name] = os.environ[variable]
                from_env[name] = variable
        if values.get("host") is None:
            values["host"] = DEFAULT_HOST
        for name, check in _CHECKS.items():
            if name in values:
                try:
                    values[name] = check(name, values[name])
                except ConfigError as error:
                    if name not in from_env:
                        raise
                    # The same check as an argument; the message says where the value came from.
                    raise ConfigError(
                        name,
                        f"{error.expected} (from env {from_env[name]})",
                        values[name],
                        secret=name in _SECRETS,
                    ) from None
        config = cls(**values)
        if not (config.test_mode or config.disabled) and not config.api_key:
            # A setup slip must not take the app down: the instance starts disabled (`start()`
            # says so once: this module is below the logging one).
            config = dataclasses.replace(config, disabled=True)
        return config

    def __repr__(self) -> str:
        parts = []
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.name in _SECRETS:
                value = mask(value)
            elif field.name == "host":
                value = _without_password(value)
            parts.append(f"{field.name}={value!r}")
        return f"Config({', '.join(parts)})"

    def masked_api_key(self) -> str:
        """The api key reduced to a prefix, safe for logs."""
        return mask(self.api_key)

    def masked_host(self) -> str:
        """The host with the password of a `user:password@` URL masked, safe for logs."""
        return _without_password(self.host)


def mask(secret: str | None) -> str:
    """Mask all of a secret but a short prefix, so logs can identify it without leaking it."""
    if not secret:
        return "<none>"
    return secret[:7] + "***" if len(secret) > 10 else "***"


# --- validators: each returns the normalised value or raises ConfigError -------------------
#
# Every option has a documented range (docs/configuration.md): a value outside it is a slip
# (seconds given as milliseconds, inf/nan from a parsed env var, a missing file) that would
# otherwise change behaviour silently, or break a thread (an infinite timer, a request that
# never times out, a million sender threads).

#: Options whose value may be a credential: a ConfigError never shows any of their characters.
_SECRETS = frozenset({"api_key", "personal_api_key"})
_DAY = 86_400.0
_MIB = 1024 * 1024
_MAX_KEY_CHARS = 1024
_MAX_HOST_CHARS = 2048
_MAX_MODULES = 1000


def _key_or_none(name: str, value: Any) -> str | None:
    if value is None:
        return None
    form = f"a non-empty key string (at most {_MAX_KEY_CHARS} characters, no whitespace inside)"
    if not isinstance(value, str):
        raise ConfigError(name, form, value, secret=True)
    key = value.strip()
    if not key or len(key) > _MAX_KEY_CHARS or not key.isprintable() or _has_space(key):
        raise ConfigError(name, form, value, secret=True)
    return key


def _has_space(text: str) -> bool:
    return any(c.isspace() for c in text)


def _host(name: str, value: Any) -> str:
    form = (
        "an http:// or https:// URL with a host name and an optional port and path "
        f"(at most {_MAX_HOST_CHARS} characters, no whitespace, query or fragment)"
    )
    if not isinstance(value, str):
        raise ConfigError(name, form, value)
    host = value.strip().rstrip("/")
    try:
        parts = urlsplit(host)
        port_ok = parts.port is None or parts.port > 0
    except ValueError:  # an unclosed "[", a port that is not a number or over 65535
        parts, port_ok = None, False
    if (
        parts is None
        or not port_ok
        or parts.scheme not in ("http", "https")
        or not parts.hostname
        or "?" in host
        or "#" in host
        or len(host) > _MAX_HOST_CHARS
        or not host.isprintable()
        or _has_space(host)
    ):
        raise ConfigError(name, form, _without_password(value))
    return host


def _without_password(url: str) -> str:
    """The URL with the password of any `user:password@` masked, for an error message."""
    scheme, sep, rest = url.partition("://")
    authority, slash, path = rest.partition("/")
    user, at, hostport = authority.rpartition("@")
    if not at or ":" not in user:
        return url
    return f"{scheme}{sep}{user.split(':', 1)[0]}:***@{hostport}{slash}{path}"


def _bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(name, "True or False", value)
    return value


def _count(low: int, high: int) -> Callable[[str, Any], int]:
    """An int option in [low, high]; any integral number (numpy's too), never a bool."""

    def check(name: str, value: Any) -> int:
        if isinstance(value, numbers.Integral) and not isinstance(value, bool):
            number = int(value)
            if low <= number <= high:
                return number
        raise ConfigError(name, f"an int from {low} to {high}", value)

    return check


def _real(low: float, high: float, unit: str) -> Callable[[str, Any], float]:
    """A finite real number in [low, high] (inf and nan are refused by the range), never a bool."""

    def check(name: str, value: Any) -> float:
        real = isinstance(value, numbers.Real) and not isinstance(value, bool)
        if real:
            try:
                # Compared before float(): an int too large for a float is refused, no Overflow.
                if low <= value <= high:
                    return float(value)
            except Exception:  # a Real whose comparison or conversion raises
                pass
        raise ConfigError(name, f"a finite number {unit} from {low:g} to {high:g}", value)

    return check


def _seconds(low: float, high: float) -> Callable[[str, Any], float]:
    return _real(low, high, "of seconds")


def _rate(low: float, high: float) -> Callable[[str, Any], float]:
    return _real(low, high, "per second")


def _callable_or_none(name: str, value: Any) -> Any:
    if value is not None and not callable(value):
        raise ConfigError(name, "a callable or None", value)
    return value


def _copy_mapping(name: str, value: Any, form: str) -> Mapping[str, Any]:
    try:
        copy = dict(value)
    except Exception:  # a Mapping whose iteration or item access raises
        raise ConfigError(name, form, value) from None
    if not all(isinstance(k, str) for k in copy):
        raise ConfigError(name, form, value)
    return MappingProxyType(copy)


def _mapping(name: str, value: Any) -> Mapping[str, Any]:
    if value is None:
        return MappingProxyType({})
    form = "a mapping with str keys"
    if not isinstance(value, Mapping):
        raise ConfigError(name, form, value)
    return _copy_mapping(name, value, form)


def _existing_path(value: Any, *, dir_ok: bool) -> str | None:
    """`value` as a str path when it names an existing file (or directory); else None."""
    if not isinstance(value, str | os.PathLike):
        return None
    try:
        path = os.fspath(value)
        if not isinstance(path, str) or not path or "\0" in path:
            return None
        found = os.path.isfile(path) or (dir_ok and os.path.isdir(path))
    except (OSError, ValueError, TypeError):
        return None
    return path if found else None


def _verify(name: str, value: Any) -> bool | str:
    if isinstance(value, bool):
        return value
    path = _existing_path(value, dir_ok=True)
    if path is None:
        raise ConfigError(
            name, "True, False or the path of an existing CA bundle file or directory", value
        )
    return path


def _flags(name: str, value: Any) -> Mapping[str, Any] | str | None:
    if value is None:
        return None
    form = "a mapping of flag key -> value, or the path of an existing JSON file"
    if isinstance(value, Mapping):
        return _copy_mapping(name, value, form)
    path = _existing_path(value, dir_ok=False)
    if path is None:
        raise ConfigError(name, form, value)
    return path


def _level(name: str, value: Any) -> int:
    if isinstance(value, str) and value.upper() in _LEVELS:
        return _LEVELS[value.upper()]
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        level = int(value)
        if 0 <= level <= 100:
            return level
    raise ConfigError(name, "a logging level ('ERROR', 'WARNING', ... or an int 0 to 100)", value)


def _modules(name: str, value: Any) -> tuple[str, ...]:
    form = f"a module name prefix or a list of at most {_MAX_MODULES} of them"
    if isinstance(value, str):
        value = (value,)
    if not isinstance(value, list | tuple | set | frozenset) or len(value) > _MAX_MODULES:
        raise ConfigError(name, form, value)
    items = tuple(value)
    if not all(isinstance(m, str) and m and not _has_space(m) for m in items):
        raise ConfigError(name, form, value)
    return items


def _loggers(name: str, value: Any) -> tuple[str, ...]:
    form = f"a logger name or a list of at most {_MAX_MODULES} non-empty logger names"
    if isinstance(value, str):
        value = (value,)
    if not isinstance(value, list | tuple | set | frozenset) or len(value) > _MAX_MODULES:
        raise ConfigError(name, form, value)
    items = tuple(value)
    if not all(isinstance(n, str) and n and n.isprintable() for n in items):
        raise ConfigError(name, form, value)
    return tuple(dict.fromkeys(items))


def _spool_dir(name: str, value: Any) -> str | None:
    if value is None:
        return None
    form = "None or a directory path (created if missing)"
    if not isinstance(value, str | os.PathLike):
        raise ConfigError(name, form, value)
    path = os.fspath(value)
    if not isinstance(path, str) or not path or "\0" in path or os.path.isfile(path):
        raise ConfigError(name, form, value)
    return os.path.abspath(path)


def _spool_sync(name: str, value: Any) -> str:
    if not isinstance(value, str) or value not in ("batch", "always", "off"):
        raise ConfigError(name, "'batch', 'always' or 'off'", value)
    return str(value)


def _environments(name: str, value: Any) -> tuple[str, ...]:
    form = f"a list of at most {_MAX_MODULES} non-empty environment tag strings"
    if value is None:
        return ()
    if not isinstance(value, list | tuple | set | frozenset) or len(value) > _MAX_MODULES:
        raise ConfigError(name, form, value)
    items = tuple(value)
    if not all(isinstance(tag, str) and tag and tag.isprintable() for tag in items):
        raise ConfigError(name, form, value)
    return tuple(dict.fromkeys(items))


_CHECKS: dict[str, Callable[[str, Any], Any]] = {
    "api_key": _key_or_none,
    "host": _host,
    "personal_api_key": _key_or_none,
    "flush_at": _count(1, 100_000),
    "flush_interval": _seconds(0.001, _DAY),
    "max_queue_size": _count(1, 10_000_000),
    "max_batch_bytes": _count(1024, 64 * _MIB),
    "max_event_bytes": _count(256, 64 * _MIB),
    "senders": _count(1, 64),
    "request_timeout": _seconds(0.001, 600.0),
    "gzip": _bool,
    "max_retries": _count(0, 1000),
    "retry_base_delay": _seconds(0.0, 3600.0),
    "retry_max_delay": _seconds(0.0, _DAY),
    "verify": _verify,
    "global_properties": _mapping,
    "before_send": _callable_or_none,
    "on_error": _callable_or_none,
    "on_drop": _callable_or_none,
    "test_mode": _bool,
    "disabled": _bool,
    "sync_mode": _bool,
    "debug": _bool,
    "max_restarts": _count(0, 10_000),
    "max_seconds": _seconds(0.001, _DAY),
    "shutdown_timeout": _seconds(0.0, 3600.0),
    "watchdog_interval": _seconds(0.05, _DAY),
    "handle_sigterm": _bool,
    "spool_dir": _spool_dir,
    "spool_sync": _spool_sync,
    "spool_interval": _seconds(0.001, 60.0),
    "spool_max_bytes": _count(_MIB, 1 << 40),
    "poll_interval": _seconds(0.01, _DAY),
    "flags_request_timeout": _seconds(0.001, 600.0),
    "flags": _flags,
    "feature_flag_called_cache_size": _count(0, 10_000_000),
    "flags_cache_size": _count(0, 10_000_000),
    "flags_cache_ttl": _seconds(0.0, 30 * _DAY),
    "strict_local": _bool,
    "enable_local_evaluation": _bool,
    "evaluation_environments": _environments,
    "disable_geoip": _bool,
    "enable_error_tracking": _bool,
    "capture_level": _level,
    "in_app_modules": _modules,
    "capture_messages": _bool,
    "exception_rate_limit_burst": _count(1, 1_000_000),
    "exception_rate_limit_per_second": _rate(0.0, 1_000_000.0),
    "exception_backlog": _count(1, 1_000_000),
    "error_tracking_loggers": _loggers,
}
