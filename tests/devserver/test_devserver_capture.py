"""phactor.devserver over real HTTP: capture paths and body forms, rejected bodies, the listing."""

from __future__ import annotations

import base64
import gzip
import json
from pathlib import Path
from typing import Any

import pytest
import requests
from devserver_client import (
    KEY,
    batch,
    event,
    server_fixture,  # noqa: F401  (fixtures)
)

from phactor.devserver import CAPTURE_PATHS, DevServer

# -- capture paths and body forms -----------------------------------------------------------


@pytest.mark.parametrize("path", [*CAPTURE_PATHS, "/batch", "/i/v0/e"])
def test_every_capture_path_stores_the_batch(server: DevServer, path: str) -> None:
    sent = event("path_test", plan="pro")
    response = requests.post(server.url + path, json=batch(sent), timeout=5)
    assert response.status_code == 200
    assert response.json() == {"status": 1}
    [stored] = server.events()
    assert stored["uuid"] == sent["uuid"]
    assert stored["event"] == "path_test"
    assert stored["distinct_id"] == "user-1"
    assert stored["api_key"] == KEY
    assert stored["timestamp"] == sent["timestamp"]
    assert stored["properties"] == {"plan": "pro"}
    assert stored["raw"] == sent
    assert stored["received_at"].endswith("Z")


def test_single_event_body_and_bare_list(server: DevServer) -> None:
    single = {"api_key": KEY, **event("single")}
    assert requests.post(server.url + "/capture/", json=single, timeout=5).status_code == 200
    bare = [{**event("bare", "u2"), "api_key": "phc_other"}, {**event("bare2"), "token": KEY}]
    assert requests.post(server.url + "/e/", json=bare, timeout=5).status_code == 200
    stored = server.events()
    assert [(e["event"], e["api_key"]) for e in stored] == [
        ("single", KEY),
        ("bare", "phc_other"),
        ("bare2", KEY),
    ]


def test_posthog_js_style_token_in_properties_and_distinct_id_in_properties(
    server: DevServer,
) -> None:
    js_event = {"event": "$pageview", "properties": {"token": KEY, "distinct_id": "anon-7"}}
    assert requests.post(server.url + "/e/", json=js_event, timeout=5).status_code == 200
    [stored] = server.events()
    assert (stored["api_key"], stored["distinct_id"], stored["uuid"]) == (KEY, "anon-7", None)


def test_gzip_by_header_and_by_query(server: DevServer) -> None:
    body = gzip.compress(json.dumps(batch(event("gz1"))).encode())
    by_header = requests.post(
        server.url + "/batch/",
        data=body,
        headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
        timeout=5,
    )
    by_query = requests.post(
        server.url + "/e/?compression=gzip-js",
        data=gzip.compress(json.dumps([{**event("gz2"), "api_key": KEY}]).encode()),
        headers={"Content-Type": "text/plain"},
        timeout=5,
    )
    assert (by_header.status_code, by_query.status_code) == (200, 200)
    assert [e["event"] for e in server.events()] == ["gz1", "gz2"]
    assert server.requests[0].headers["content-encoding"] == "gzip"


def test_form_encoded_base64_data(server: DevServer) -> None:
    encoded = base64.b64encode(json.dumps(batch(event("form"))).encode()).decode()
    response = requests.post(server.url + "/e/", data={"data": encoded}, timeout=5)
    assert response.status_code == 200
    assert [e["event"] for e in server.events()] == ["form"]


# -- rejected bodies ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "content_encoding", "detail"),
    [
        (b"{not json", None, "malformed JSON"),
        (b"", None, "empty body"),
        (b"not gzip at all", "gzip", "invalid gzip"),
        (json.dumps({"api_key": KEY, "batch": {"a": 1}}).encode(), None, "batch must be a list"),
        (json.dumps(batch({"distinct_id": "x"})).encode(), None, "no event name"),
        (json.dumps(batch({"event": "x"})).encode(), None, "no usable distinct_id"),
        (
            json.dumps(batch({**event(), "uuid": "not-a-uuid"})).encode(),
            None,
            "invalid uuid",
        ),
        (json.dumps(batch({**event(), "properties": [1]})).encode(), None, "not an object"),
    ],
)
def test_bad_bodies_get_400_with_a_message_and_store_nothing(
    server: DevServer, body: bytes, content_encoding: str | None, detail: str
) -> None:
    headers = {"Content-Type": "application/json"}
    if content_encoding:
        headers["Content-Encoding"] = content_encoding
    response = requests.post(server.url + "/batch/", data=body, headers=headers, timeout=5)
    assert response.status_code == 400
    assert detail in response.json()["detail"]
    assert server.count() == 0
    assert server.requests[-1].status == 400


def test_a_bad_event_rejects_the_whole_batch(server: DevServer) -> None:
    good = event("good")
    response = requests.post(
        server.url + "/batch/", json=batch(good, {"distinct_id": "x"}), timeout=5
    )
    assert response.status_code == 400
    assert server.count() == 0
    # the uuids are still logged: a test can tell the batch reached the wire
    assert server.uuid_counts()[good["uuid"]] == 1


def test_missing_api_key_is_401(server: DevServer) -> None:
    response = requests.post(server.url + "/batch/", json={"batch": [event()]}, timeout=5)
    assert response.status_code == 401
    assert response.json()["type"] == "authentication_error"
    assert server.count() == 0


def test_unknown_path_is_404(server: DevServer) -> None:
    assert requests.post(server.url + "/nope/", json={}, timeout=5).status_code == 404
    assert requests.get(server.url + "/batch/", timeout=5).status_code == 404


# -- listing --------------------------------------------------------------------------------


def test_listing_filters_limit_and_order(server: DevServer) -> None:
    events = [event("a", "u1"), event("b", "u1"), event("a", "u2"), event("a", "u1")]
    requests.post(server.url + "/batch/", json=batch(*events[:3]), timeout=5)
    requests.post(server.url + "/batch/", json=batch(events[3], api_key="phc_two"), timeout=5)

    def listing(**params: Any) -> dict[str, Any]:
        response = requests.get(server.url + "/api/events", params=params, timeout=5)
        assert response.status_code == 200
        return response.json()

    everything = listing()
    assert everything["count"] == 4
    assert [e["uuid"] for e in everything["results"]] == [e["uuid"] for e in events]
    only_a = listing(event="a")
    assert [e["uuid"] for e in only_a["results"]] == [events[i]["uuid"] for i in (0, 2, 3)]
    a_u1 = listing(event="a", distinct_id="u1")
    assert [e["uuid"] for e in a_u1["results"]] == [events[0]["uuid"], events[3]["uuid"]]
    limited = listing(event="a", limit=1)
    assert limited["count"] == 3
    assert [e["uuid"] for e in limited["results"]] == [events[0]["uuid"]]
    assert listing(api_key="phc_two")["count"] == 1
    assert requests.get(server.url + "/api/events?limit=x", timeout=5).status_code == 400

    assert server.count(event="a") == 3
    assert [e["uuid"] for e in server.events(limit=2, event="a", distinct_id="u1")] == [
        events[0]["uuid"],
        events[3]["uuid"],
    ]
    assert requests.delete(server.url + "/api/events", timeout=5).status_code == 200
    assert server.count() == 0


def test_clear_forgets_events_and_requests(server: DevServer) -> None:
    requests.post(server.url + "/batch/", json=batch(event()), timeout=5)
    server.clear()
    assert (server.count(), server.events(), server.request_count()) == (0, [], 0)


def test_file_database_keeps_events_across_servers(tmp_path: Path) -> None:
    db = tmp_path / "events.sqlite"
    with DevServer(db=db) as first:
        requests.post(first.url + "/batch/", json=batch(event("kept")), timeout=5)
    with DevServer(db=str(db)) as second:
        assert second.count() == 1
        assert second.events()[0]["event"] == "kept"
