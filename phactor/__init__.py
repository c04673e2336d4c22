"""phactor: a PostHog client for Python, built as a supervised actor runtime on pykka.

Start a named instance at boot, then capture through it::

    import phactor
    phactor.start(api_key="phc_...")
    phactor.capture("signed_up", distinct_id="user-1", properties={"plan": "pro"})
"""

from typing import TYPE_CHECKING

from phactor._lazy import lazy_exports
from phactor._version import __version__
from phactor.api import (
    alias,
    bare_capture,
    capture,
    capture_exception,
    config,
    context,
    evaluate_flags,
    feature_enabled,
    flush,
    get_all_flags,
    get_all_flags_and_payloads,
    get_context,
    get_event_context,
    get_feature_flag,
    get_feature_flag_payload,
    get_feature_flag_result,
    group_identify,
    identify,
    instance,
    instances,
    queue_length,
    reload_feature_flags,
    set,
    set_context,
    set_event_context,
    set_once,
    start,
    stats,
    stop,
)
from phactor.config import Config
from phactor.errors import AlreadyStarted, ConfigError, DeliveryError, NotStarted, PhactorError
from phactor.instance import Instance

if TYPE_CHECKING:
    from phactor.flags.evaluations import FlagEvaluations


# `FlagEvaluations` lives with the flag core, which loads on first use (keeps import cheap).
__getattr__ = lazy_exports(__name__, {"FlagEvaluations": "flags.evaluations"}, globals())


__all__ = [
    "AlreadyStarted",
    "Config",
    "ConfigError",
    "DeliveryError",
    "FlagEvaluations",
    "Instance",
    "NotStarted",
    "PhactorError",
    "__version__",
    "alias",
    "bare_capture",
    "capture",
    "capture_exception",
    "config",
    "context",
    "evaluate_flags",
    "feature_enabled",
    "flush",
    "get_all_flags",
    "get_all_flags_and_payloads",
    "get_context",
    "get_event_context",
    "get_feature_flag",
    "get_feature_flag_payload",
    "get_feature_flag_result",
    "group_identify",
    "identify",
    "instance",
    "instances",
    "queue_length",
    "reload_feature_flags",
    "set",
    "set_context",
    "set_event_context",
    "set_once",
    "start",
    "stats",
    "stop",
]
