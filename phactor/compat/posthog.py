"""The posthog package's module-level API over phactor: `import phactor.compat.posthog as posthog`.

Set options as module attributes (`posthog.api_key = "phc_..."`, `posthog.host = ...`), then
call the functions (`posthog.capture("signed_up", distinct_id="u1")`). The first call creates
`default_client`, a `phactor.compat.Posthog` on the phactor instance named "posthog", from the
module attributes as they are then (later changes to them do not apply to it); `shutdown()`
stops it, and the next call creates a new one.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from phactor.compat.client import FeatureFlagResult, Posthog
from phactor.compat.options import OPTIONS

__all__ = [
    "FeatureFlagResult",
    "Posthog",
    "alias",
    "capture",
    "capture_exception",
    "evaluate_flags",
    "feature_enabled",
    "flush",
    "get_all_flags",
    "get_all_flags_and_payloads",
    "get_feature_flag",
    "get_feature_flag_payload",
    "get_feature_flag_result",
    "group_identify",
    "join",
    "load_feature_flags",
    "set",
    "set_once",
    "setup",
    "shutdown",
]

#: The phactor instance the module-level client runs as.
INSTANCE_NAME = "posthog"

# posthog's module settings (each one of the constructor's options, same default).
api_key: str | None = None
project_api_key: str | None = None
host: str | None = None
on_error: Callable[..., Any] | None = None
debug = False
send = True
sync_mode = False
disabled = False
secret_key: str | None = None
personal_api_key: str | None = None
poll_interval = 30
disable_geoip = True
feature_flags_request_timeout_seconds = 3
super_properties: dict[str, Any] | None = None
enable_exception_autocapture = False
privacy_mode = False
before_send: Callable[..., Any] | None = None
enable_local_evaluation = True
in_app_modules: list[str] | None = None
enable_full_ai_capture = False

default_client: Posthog | None = None
_setup_lock = threading.Lock()


def setup() -> Posthog:
    """The module-level client, created from the module settings on first use."""
    global default_client
    with _setup_lock:
        if default_client is None:
            settings = globals()
            options = {
                option.name: settings[option.name]
                for option in OPTIONS
                if option.name in settings and option.name not in ("api_key", "project_api_key")
            }
            key = (project_api_key or "").strip() or (api_key or "").strip()
            default_client = Posthog._named(INSTANCE_NAME, key, **options)
        return default_client


def capture(event: str, **kwargs: Any) -> str | None:
    """`Posthog.capture` on the module-level client."""
    return setup().capture(event, **kwargs)


def set(**kwargs: Any) -> str | None:
    """`Posthog.set` on the module-level client."""
    return setup().set(**kwargs)


def set_once(**kwargs: Any) -> str | None:
    """`Posthog.set_once` on the module-level client."""
    return setup().set_once(**kwargs)


def group_identify(group_type: str, group_key: Any, *args: Any, **kwargs: Any) -> str | None:
    """`Posthog.group_identify` on the module-level client."""
    return setup().group_identify(group_type, group_key, *args, **kwargs)


def alias(previous_id: Any, distinct_id: Any, *args: Any, **kwargs: Any) -> str | None:
    """`Posthog.alias` on the module-level client."""
    return setup().alias(previous_id, distinct_id, *args, **kwargs)


def capture_exception(exception: Any = None, **kwargs: Any) -> str | None:
    """`Posthog.capture_exception` on the module-level client."""
    return setup().capture_exception(exception, **kwargs)


def feature_enabled(key: str, distinct_id: Any, **kwargs: Any) -> bool | None:
    """`Posthog.feature_enabled` on the module-level client."""
    return setup().feature_enabled(key, distinct_id, **kwargs)


def get_feature_flag(key: str, distinct_id: Any, **kwargs: Any) -> bool | str | None:
    """`Posthog.get_feature_flag` on the module-level client."""
    return setup().get_feature_flag(key, distinct_id, **kwargs)


def get_feature_flag_result(key: str, distinct_id: Any, **kwargs: Any) -> FeatureFlagResult | None:
    """`Posthog.get_feature_flag_result` on the module-level client."""
    return setup().get_feature_flag_result(key, distinct_id, **kwargs)


def get_feature_flag_payload(key: str, distinct_id: Any, **kwargs: Any) -> Any:
    """`Posthog.get_feature_flag_payload` on the module-level client."""
    return setup().get_feature_flag_payload(key, distinct_id, **kwargs)


def get_all_flags(distinct_id: Any, **kwargs: Any) -> dict[str, bool | str] | None:
    """`Posthog.get_all_flags` on the module-level client."""
    return setup().get_all_flags(distinct_id, **kwargs)


def get_all_flags_and_payloads(distinct_id: Any, **kwargs: Any) -> dict[str, dict[str, Any]]:
    """`Posthog.get_all_flags_and_payloads` on the module-level client."""
    return setup().get_all_flags_and_payloads(distinct_id, **kwargs)


def evaluate_flags(distinct_id: Any = None, **kwargs: Any) -> Any:
    """`Posthog.evaluate_flags` on the module-level client."""
    return setup().evaluate_flags(distinct_id, **kwargs)


def load_feature_flags() -> None:
    """`Posthog.load_feature_flags` on the module-level client."""
    setup().load_feature_flags()


def flush(timeout_seconds: float | None = 10) -> None:
    """`Posthog.flush` on the module-level client."""
    setup().flush(timeout_seconds)


def join() -> None:
    """Stop the module-level client (see `shutdown`)."""
    _close("join")


def shutdown() -> None:
    """Deliver what is queued and stop the module-level client; the next call makes a new one."""
    _close("shutdown")


def _close(how: str) -> None:
    global default_client
    with _setup_lock:
        client, default_client = default_client, None
    if client is not None:
        getattr(client, how)()
