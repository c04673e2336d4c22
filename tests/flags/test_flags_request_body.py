"""What every `/flags` request body says (issue 12 #2, #3 and device_id): `"evaluation_runtime":
"server"` (PostHog otherwise guesses the runtime from the User-Agent and may leave server-only
flags out), the `evaluation_environments` tags when configured, `geoip_disable` from the option
or the call, and `device_id` when the caller passes one."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import StartInstance
from hypothesis import given
from hypothesis import strategies as st

from phactor.devserver import DevServer

KEY = "phc_flags_body"

CALLS: dict[str, Any] = {
    "evaluate_flags": lambda i, kw: i.evaluate_flags("u1", **kw),
    "feature_enabled": lambda i, kw: i.feature_enabled("f", "u1", **kw),
    "get_feature_flag": lambda i, kw: i.get_feature_flag("f", "u1", **kw),
    "get_feature_flag_payload": lambda i, kw: i.get_feature_flag_payload("f", "u1", **kw),
    "get_feature_flag_result": lambda i, kw: i.get_feature_flag_result("f", "u1", **kw),
    "get_all_flags": lambda i, kw: i.get_all_flags("u1", **kw),
    "get_all_flags_and_payloads": lambda i, kw: i.get_all_flags_and_payloads("u1", **kw),
}


def _bodies(server: DevServer) -> list[dict[str, Any]]:
    return [r.body for r in server.requests if r.endpoint == "flags"]


@pytest.mark.parametrize("environments", [None, ["production", "api"]])
@pytest.mark.parametrize("disable_geoip", [True, False])
def test_every_flags_body_names_the_server_runtime(
    devserver: DevServer,
    start_instance: StartInstance,
    environments: list[str] | None,
    disable_geoip: bool,
) -> None:
    devserver.set_flags({"f": True})
    options: dict[str, Any] = {"disable_geoip": disable_geoip}
    if environments is not None:
        options["evaluation_environments"] = environments
    inst = start_instance(api_key=KEY, host=devserver.url, enable_error_tracking=False, **options)

    @given(
        call=st.sampled_from(sorted(CALLS)),
        per_call_geoip=st.sampled_from([None, True, False]),
        device_id=st.none() | st.text(min_size=1, max_size=12),
    )
    def run(call: str, per_call_geoip: bool | None, device_id: str | None) -> None:
        devserver.clear()
        kw: dict[str, Any] = {"disable_geoip": per_call_geoip, "device_id": device_id}
        CALLS[call](inst, kw)
        (body,) = _bodies(devserver)
        assert body["evaluation_runtime"] == "server"
        if environments is None:
            assert "evaluation_environments" not in body
            assert "evaluation_contexts" not in body
        else:
            assert body["evaluation_environments"] == environments
            assert body["evaluation_contexts"] == environments
        expected_geoip = disable_geoip if per_call_geoip is None else per_call_geoip
        assert body["geoip_disable"] is expected_geoip
        if device_id is None:
            assert body.get("device_id") is None
        else:
            assert body["device_id"] == device_id

    run()


def test_capture_send_feature_flags_asks_for_the_server_runtime(
    devserver: DevServer, start_instance: StartInstance
) -> None:
    devserver.set_flags({"f": "v"})
    inst = start_instance(api_key=KEY, host=devserver.url, enable_error_tracking=False)
    inst.capture("e", "u1", send_feature_flags=True, disable_geoip=False)
    assert inst.flush(timeout=5)
    (body,) = _bodies(devserver)
    assert body["evaluation_runtime"] == "server"
    assert body["geoip_disable"] is False
    (event,) = devserver.events()
    assert event["raw"]["properties"]["$feature/f"] == "v"


@pytest.mark.parametrize("value", ["production", [""], [1], {"a": 1}])
def test_bad_evaluation_environments_are_refused(
    start_test_mode: StartInstance, value: Any
) -> None:
    import phactor

    with pytest.raises(phactor.ConfigError, match="evaluation_environments"):
        start_test_mode(evaluation_environments=value)


def test_enable_local_evaluation_false_never_polls_definitions(
    devserver: DevServer, start_instance: StartInstance
) -> None:
    devserver.set_flags({"f": True})
    devserver.set_flag_definitions(
        [{"key": "f", "active": True, "filters": {"groups": [{"rollout_percentage": 100}]}}]
    )
    inst = start_instance(
        api_key=KEY,
        host=devserver.url,
        personal_api_key="phx_personal_key_for_tests",
        enable_local_evaluation=False,
        enable_error_tracking=False,
    )
    assert inst.reload_feature_flags() is False
    assert inst.get_feature_flag("f", "u1") is True
    assert devserver.request_count("definitions") == 0
    assert devserver.request_count("flags") == 1
    assert "flags" not in inst.children()
