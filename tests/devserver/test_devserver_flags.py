"""phactor.devserver flag fixtures: the /flags/ answer, definitions with ETag and auth."""

from __future__ import annotations

import json

import pytest
import requests
from devserver_client import KEY

from phactor.devserver import DevServer

# -- flags ----------------------------------------------------------------------------------


def test_flags_v4_shape() -> None:
    flags: dict[str, bool | str] = {"beta": True, "exp": "variant-a", "off": False}
    with DevServer(flags=flags, flag_payloads={"beta": {"color": "red"}}) as server:
        body = {"api_key": KEY, "distinct_id": "u1", "person_properties": {"plan": "pro"}}
        response = requests.post(server.url + "/flags/?v=4", json=body, timeout=5)
        assert response.status_code == 200
        answer = response.json()
        assert set(answer["flags"]) == {"beta", "exp", "off"}
        beta, exp, off = (answer["flags"][k] for k in ("beta", "exp", "off"))
        assert (beta["enabled"], beta["variant"]) == (True, None)
        assert json.loads(beta["metadata"]["payload"]) == {"color": "red"}
        assert (exp["enabled"], exp["variant"]) == (True, "variant-a")
        assert (off["enabled"], off["reason"]["code"]) == (False, "no_condition_match")
        assert answer["errorsWhileComputingFlags"] is False
        assert answer["requestId"]
        assert server.requests[-1].body["person_properties"] == {"plan": "pro"}

        only = requests.post(
            server.url + "/flags/?v=4",
            json={**body, "flag_keys_to_evaluate": ["exp"]},
            timeout=5,
        ).json()
        assert set(only["flags"]) == {"exp"}
        no_key = requests.post(server.url + "/flags/", json={"distinct_id": "u"}, timeout=5)
        assert no_key.status_code == 401


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_posthog_reference_client_reads_flags_and_definitions() -> None:
    import posthog  # the reference SDK, a dev dependency: proves the shapes match PostHog's

    definitions = [
        {
            "id": 1,
            "key": "local-flag",
            "active": True,
            "filters": {"groups": [{"properties": [], "rollout_percentage": 100}]},
        }
    ]
    with DevServer(
        flags={"remote-flag": "variant-b"},
        flag_definitions=definitions,
        personal_api_key="phx_personal",
    ) as server:
        client = posthog.Posthog(
            KEY,
            host=server.url,
            secret_key="phx_personal",
            sync_mode=True,
        )
        try:
            client.load_feature_flags()
            assert (
                client.get_feature_flag(
                    "local-flag", "u1", only_evaluate_locally=True, send_feature_flag_events=False
                )
                is True
            )
            assert (
                client.get_feature_flag("remote-flag", "u1", send_feature_flag_events=False)
                == "variant-b"
            )
            client.capture("from_posthog", distinct_id="u1", properties={"n": 1})
        finally:
            client.shutdown()
        [stored] = server.events(event="from_posthog")
        assert stored["properties"]["n"] == 1
        assert stored["api_key"] == KEY


def test_definitions_etag_and_auth() -> None:
    with DevServer(flag_definitions={"flags": [{"key": "a"}]}, personal_api_key="phx") as server:
        url = server.url + "/flags/definitions?token=" + KEY + "&send_cohorts"
        auth = {"Authorization": "Bearer phx"}
        first = requests.get(url, headers=auth, timeout=5)
        assert first.status_code == 200
        assert first.json() == {"flags": [{"key": "a"}], "group_type_mapping": {}, "cohorts": {}}
        etag = first.headers["ETag"]
        again = requests.get(url, headers={**auth, "If-None-Match": etag}, timeout=5)
        assert (again.status_code, again.headers["ETag"], again.content) == (304, etag, b"")
        server.set_flag_definitions([{"key": "b"}])
        changed = requests.get(url, headers={**auth, "If-None-Match": etag}, timeout=5)
        assert changed.status_code == 200
        assert changed.headers["ETag"] != etag
        assert requests.get(url, timeout=5).status_code == 401
        wrong = requests.get(url, headers={"Authorization": "Bearer nope"}, timeout=5)
        assert wrong.status_code == 401
        assert server.request_count("definitions") == 5
