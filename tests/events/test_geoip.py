"""`$geoip_disable` (issue 12 #3): from the `disable_geoip` option (default True, as the posthog
package for servers) or the per-call `disable_geoip=`; a caller's own `$geoip_disable` property
is never overwritten."""

from __future__ import annotations

from typing import Any

import posthog
import pytest
from conftest import StartInstance
from hypothesis import given
from hypothesis import strategies as st

import phactor
from phactor.devserver import DevServer

_ABSENT = object()


@given(
    option=st.booleans(),
    per_call=st.sampled_from([None, True, False]),
    caller=st.sampled_from([_ABSENT, True, False, "yes"]),
    call=st.sampled_from(["capture", "bare_capture", "set", "identify", "alias", "group"]),
)
def test_geoip_disable_follows_caller_then_call_then_option(
    option: bool, per_call: bool | None, caller: Any, call: str
) -> None:
    name = "geoip-fuzz"
    inst = phactor.start(name, test_mode=True, enable_error_tracking=False, disable_geoip=option)
    try:
        props = {} if caller is _ABSENT else {"$geoip_disable": caller}
        kw: dict[str, Any] = {"disable_geoip": per_call}
        if call in ("capture", "bare_capture"):
            getattr(inst, call)("e", "u1", props, **kw)
        elif call == "set":
            inst.set("u1", {"a": 1}, **kw)
            caller = _ABSENT  # set() takes person properties, not event properties
        elif call == "identify":
            inst.identify("u1", {"a": 1}, **kw)
            caller = _ABSENT
        elif call == "alias":
            inst.alias("u1", "u2", **kw)
            caller = _ABSENT
        else:
            inst.group_identify("company", "acme", {"a": 1}, "u1", **kw)
            caller = _ABSENT
        (event,) = phactor.testing.events(name)
        effective = option if per_call is None else per_call
        got = event["properties"].get("$geoip_disable", _ABSENT)
        if caller is not _ABSENT:
            assert got == caller
        elif effective:
            assert got is True
        else:
            assert got is _ABSENT
    finally:
        inst.stop(1.0)


@pytest.mark.parametrize("value", [1, "no", 0.0])
def test_disable_geoip_of_a_wrong_type_is_refused(
    start_test_mode: StartInstance, value: Any
) -> None:
    with pytest.raises(phactor.ConfigError, match="disable_geoip"):
        start_test_mode(disable_geoip=value)
    inst = start_test_mode(enable_error_tracking=False)
    with pytest.raises(TypeError, match="disable_geoip"):
        inst.capture("e", "u1", disable_geoip=value)
    assert inst.stats()["captured"] == 0


@pytest.mark.parametrize("disable_geoip", [True, False])
def test_same_geoip_property_as_posthog(
    devserver: DevServer, start_instance: StartInstance, disable_geoip: bool
) -> None:
    with DevServer() as reference:
        client = posthog.Client(
            "phc_reference", host=reference.url, sync_mode=True, disable_geoip=disable_geoip
        )
        try:
            client.capture("e", distinct_id="u1")
        finally:
            client.shutdown()
        (expected,) = reference.events()
    inst = start_instance(
        api_key="phc_geoip", host=devserver.url, sync_mode=True, disable_geoip=disable_geoip
    )
    inst.capture("e", "u1")
    (ours,) = devserver.events()
    assert ours["raw"]["properties"].get("$geoip_disable") == expected["raw"]["properties"].get(
        "$geoip_disable"
    )
