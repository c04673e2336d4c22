"""Which issue-12 core pieces `phactor.compat` relies on are in this build (tests xfail without).

The compat layer is built against shared/API.md; the core pieces land on another branch. Each
probe uses the public API only; `missing()` names what is not there yet.
"""

from __future__ import annotations

import inspect

import phactor
import phactor.testing


def _behaviour() -> list[str]:
    name = "compat-core-probe"
    inst = phactor.start(name, test_mode=True, enable_error_tracking=False)
    try:
        absent = []
        try:
            inst.capture("probe")
        except TypeError:
            pass
        events = phactor.testing.events(name)
        if not events or events[0]["properties"].get("$process_person_profile") is not False:
            absent.append("personless events (capture without a distinct_id)")
        props = events[0]["properties"] if events else {}
        if "$python_version" not in props or "$is_server" not in props:
            absent.append("runtime properties ($is_server, $python_version, $os ...)")
        return absent
    finally:
        inst.stop()


def missing_for_events() -> list[str]:
    """The event pieces of the core not in this build, named as in shared/API.md."""
    capture = inspect.signature(phactor.Instance.capture).parameters
    absent = [f"capture({k}=)" for k in ("flags", "disable_geoip") if k not in capture]
    return absent + _behaviour()


def missing_for_flags() -> list[str]:
    """The flag pieces of the core not in this build, named as in shared/API.md."""
    absent = []
    for method in ("get_feature_flag_result", "get_all_flags_and_payloads"):
        if not hasattr(phactor.Instance, method):
            absent.append(f"Instance.{method}")
    if "match_value" not in inspect.signature(phactor.Instance.get_feature_flag_payload).parameters:
        absent.append("get_feature_flag_payload(match_value=)")
    if "device_id" not in inspect.signature(phactor.Instance.get_feature_flag).parameters:
        absent.append("device_id= on flag calls")
    if not hasattr(phactor.FlagEvaluations, "is_enabled"):
        absent.append("FlagEvaluations.is_enabled")
    return absent


def _reason(absent: list[str]) -> str:
    return "issue-12 core (branch h/p12core) not in this build: " + "; ".join(absent)


EVENTS_MISSING = missing_for_events()
MISSING = EVENTS_MISSING + missing_for_flags()
#: For tests of events only (capture and the LLM wrappers).
EVENTS_REASON = _reason(EVENTS_MISSING)
#: For tests that also call the flag methods.
REASON = _reason(MISSING)
