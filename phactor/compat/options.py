"""The posthog package's constructor options, each mapped to a phactor option (pure, no IO).

`OPTIONS` is the one table: every keyword `posthog.Client.__init__` takes, in its positional
order, with the posthog default and what it becomes here. An option whose `target` is None is
accepted and has no meaning in phactor (logged once at debug level by the client; listed in
docs/migrating-from-posthog.md). A keyword that is not in the table is a TypeError, as the
posthog constructor raises for it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["OPTIONS", "Option", "bind_options", "phactor_options", "server_host"]

_US = "https://us.i.posthog.com"
_EU = "https://eu.i.posthog.com"


@dataclasses.dataclass(frozen=True, slots=True)
class Option:
    """One posthog constructor keyword."""

    name: str
    default: Any
    #: The phactor option it sets, or None: accepted, no meaning in phactor.
    target: str | None
    #: Turns the posthog value into the phactor value.
    convert: Callable[[Any], Any] | None = None
    #: Also passed when left at posthog's default (posthog's default differs from phactor's).
    always: bool = False
    #: Only a keyword (not one of posthog's positional slots): `api_key`.
    keyword_only: bool = False
    note: str = ""


def server_host(host: Any) -> Any:
    """posthog's host rule: blank -> US ingestion; an app host -> its ingestion host."""
    if host is None or (isinstance(host, str) and not host.strip()):
        return _US
    if not isinstance(host, str):
        return host  # phactor's check names the option and the expected form
    trimmed = host.strip().rstrip("/")
    if trimmed in ("https://app.posthog.com", "https://us.posthog.com"):
        return _US
    if trimmed == "https://eu.posthog.com":
        return _EU
    return host


def _send(value: Any) -> Any:
    # posthog send=False: events are queued but never uploaded. phactor's nearest mode keeps
    # them in memory (phactor.testing.events) and sends nothing.
    return not value


_NO = None  # accepted, no meaning in phactor

OPTIONS: tuple[Option, ...] = (
    Option(
        "project_api_key",
        None,
        "api_key",
        note="blank or missing: the client is disabled (POSTHOG_API_KEY is not read)",
    ),
    Option("host", None, "host", server_host, always=True, note="POSTHOG_HOST is not read"),
    Option("debug", False, "debug"),
    Option("max_queue_size", 10000, "max_queue_size"),
    Option("send", True, "test_mode", _send, note="send=False keeps events in memory"),
    Option("on_error", None, "on_error", note="called as on_error(error, events)"),
    Option("flush_at", 100, "flush_at"),
    Option("flush_interval", 5.0, "flush_interval"),
    Option("gzip", False, "gzip", always=True),
    Option("max_retries", 3, "max_retries", always=True),
    Option("sync_mode", False, "sync_mode"),
    Option("timeout", 15, "request_timeout", float, always=True),
    Option("thread", 1, "senders"),
    Option("poll_interval", 30, "poll_interval"),
    Option("personal_api_key", None, "personal_api_key", note="secret_key wins when both are set"),
    Option("disabled", False, "disabled"),
    Option("disable_geoip", True, "disable_geoip"),
    Option("is_server", True, _NO, note="phactor is a server SDK: $is_server is always true"),
    Option("historical_migration", False, _NO, note="no historical-import endpoint"),
    Option("feature_flags_request_timeout_seconds", 3, "flags_request_timeout"),
    Option(
        "feature_flags_request_max_retries", 1, _NO, note="a failed /flags request is not retried"
    ),
    Option("super_properties", None, "global_properties"),
    Option(
        "enable_exception_autocapture",
        False,
        "enable_error_tracking",
        always=True,
        note="phactor also captures logged exceptions (capture_level)",
    ),
    Option("log_captured_exceptions", False, _NO),
    Option("project_root", None, _NO, note="in-app frames: use in_app_modules"),
    Option("privacy_mode", False, _NO, note="kept as an attribute: posthog.ai wrappers read it"),
    Option("before_send", None, "before_send"),
    Option("flag_fallback_cache_url", None, _NO),
    Option("enable_local_evaluation", True, "enable_local_evaluation"),
    Option("flag_definition_cache_provider", None, _NO),
    Option("capture_exception_code_variables", False, _NO, note="no code variables on frames"),
    Option("code_variables_mask_patterns", None, _NO),
    Option("code_variables_ignore_patterns", None, _NO),
    Option("code_variables_mask_url_credentials", None, _NO),
    Option("code_variables_detect_secrets", None, _NO),
    Option("in_app_modules", None, "in_app_modules", tuple),
    Option(
        "enable_exception_autocapture_rate_limiting",
        False,
        _NO,
        note="phactor always rate-limits exceptions (exception_rate_limit_*)",
    ),
    Option("exception_autocapture_bucket_size", 50, _NO),
    Option("exception_autocapture_refill_rate", 10, _NO),
    Option("exception_autocapture_refill_interval_seconds", 10, _NO),
    Option("capture_mode", None, _NO, note="phactor posts batches to /batch/"),
    Option("capture_compression", None, _NO, note="gzip is the gzip option"),
    Option("secret_key", None, "personal_api_key"),
    Option("metrics", None, _NO),
    Option("enable_full_ai_capture", False, _NO, note="kept as an attribute: posthog.ai reads it"),
    Option("capture_trace_context", False, _NO),
    Option("_use_ai_lane", False, _NO),
    Option("_enable_multimodal_capture", False, _NO),
    Option("traces", None, _NO),
    Option("app_host", None, _NO, note="no emails API"),
    Option("email_request_timeout_seconds", 15, _NO),
    Option("email_request_max_retries", 2, _NO),
    Option("migrated_from", None, _NO),
    Option("api_key", None, "api_key", keyword_only=True, note="another name of project_api_key"),
)

_BY_NAME: Mapping[str, Option] = {option.name: option for option in OPTIONS}
_POSITIONAL: tuple[Option, ...] = tuple(o for o in OPTIONS if not o.keyword_only)


def bind_options(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """posthog's constructor arguments as {posthog name: value}; TypeError as posthog's raises."""
    if len(args) > len(_POSITIONAL):
        raise TypeError(
            f"Posthog() takes at most {len(_POSITIONAL)} positional arguments ({len(args)} given)"
        )
    bound = {option.name: value for option, value in zip(_POSITIONAL, args, strict=False)}
    for name, value in kwargs.items():
        if name not in _BY_NAME:
            raise TypeError(f"Posthog() got an unexpected keyword argument {name!r}")
        if name in bound:
            raise TypeError(f"Posthog() got multiple values for argument {name!r}")
        bound[name] = value
    if "api_key" in bound and "project_api_key" in bound:
        raise TypeError("Posthog() got both project_api_key and api_key: pass one")
    return bound


def phactor_options(bound: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The phactor options for posthog options `bound`, and the ones given with no meaning here.

    An option left at (or given as) posthog's default is not passed unless `always` (posthog's
    default differs from phactor's); phactor's default, the same value, applies.
    """
    options: dict[str, Any] = {}
    ignored: list[str] = []
    for option in OPTIONS:
        given = option.name in bound
        value = bound[option.name] if given else option.default
        if option.target is None:
            if given and not _same(value, option.default):
                ignored.append(option.name)
            continue
        if not option.always and (value is None or _same(value, option.default)):
            continue
        if option.target in options and option.name != "secret_key":
            continue  # personal_api_key after secret_key, api_key after project_api_key
        options[option.target] = value if option.convert is None else option.convert(value)
    key = bound.get("project_api_key", bound.get("api_key"))
    if not isinstance(key, str) or not key.strip():
        # posthog disables a client without a key, silently; phactor logs that it does.
        options.pop("api_key", None)
        options["disabled"] = True
    return options, ignored


def _same(value: Any, default: Any) -> bool:
    try:
        return type(value) is type(default) and bool(value == default)
    except Exception:
        return False
