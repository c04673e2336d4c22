"""The devserver's JSON API for the viewer, over real HTTP: paging, filters, cursors, counters,
fault switching, flag calls, and how the page and its API are served."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from devserver_client import KEY, batch, event, server_fixture, session_fixture  # noqa: F401  (fixtures)
from hypothesis import given
from hypothesis import strategies as st

from phactor.devserver import DevServer


def listing(server: DevServer, **params: Any) -> dict[str, Any]:
    response = requests.get(server.url + "/api/events", params=params, timeout=5)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == "application/json"
    return response.json()


def post(server: DevServer, body: Any, **kwargs: Any) -> requests.Response:
    return requests.post(server.url + "/batch/", json=body, timeout=5, **kwargs)


# -- paging and filters ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def shared_server() -> Iterator[DevServer]:
    with DevServer() as running:
        yield running


STORED = st.lists(
    st.tuples(
        st.sampled_from(["signed_up", "clicked", "$pageview"]),
        st.sampled_from(["u1", "u2", "ü3"]),
        st.sampled_from(["phc_one", "phc_two"]),
        st.text(max_size=6),
    ),
    max_size=25,
)
FILTERS = st.fixed_dictionaries(
    {},
    optional={
        "event": st.sampled_from(["signed_up", "clicked"]),
        "distinct_id": st.sampled_from(["u1", "ü3"]),
        "project": st.sampled_from(["phc_one", "phc_two"]),
        "q": st.text(min_size=1, max_size=2),
    },
)


@given(stored=STORED, filters=FILTERS, page_size=st.integers(1, 7))
def test_walking_newest_first_pages_returns_exactly_the_matching_events(
    shared_server: DevServer,
    stored: list[tuple[str, str, str, str]],
    filters: dict[str, str],
    page_size: int,
) -> None:
    server = shared_server
    server.clear()
    for name, distinct_id, key, note in stored:
        assert post(server, batch(event(name, distinct_id, note=note), api_key=key)).ok
    everything = server.events()

    def matches(e: dict[str, Any]) -> bool:
        raw = json.dumps(e["raw"], ensure_ascii=False, separators=(",", ":")).lower()
        return (
            e["event"] == filters.get("event", e["event"])
            and e["distinct_id"] == filters.get("distinct_id", e["distinct_id"])
            and e["api_key"] == filters.get("project", e["api_key"])
            and ("q" not in filters or filters["q"].lower() in raw)
        )

    expected = [e["id"] for e in reversed(everything) if matches(e)]
    walked: list[int] = []
    cursor: dict[str, Any] = {}
    while True:
        page = listing(server, order="desc", limit=page_size, **filters, **cursor)
        ids = [e["id"] for e in page["results"]]
        assert page["count"] == len(expected) - len(walked)  # what is left from the cursor on
        walked += ids
        if len(ids) < page_size:
            break
        cursor = {"before": ids[-1]}
    assert walked == expected
    # polling from a cursor: only what came after it, oldest first or newest first
    if everything:
        middle = everything[len(everything) // 2]["id"]
        after = [e["id"] for e in everything if e["id"] > middle and matches(e)]
        assert [e["id"] for e in listing(server, after=middle, **filters)["results"]] == after
        newest = listing(server, after=middle, order="desc", **filters)["results"]
        assert [e["id"] for e in newest] == after[::-1]


def test_the_ascii_case_of_q_does_not_matter_and_like_wildcards_are_literal(
    server: DevServer,
) -> None:
    assert post(server, batch(event("a", note="50% Off_Today"), event("b", note="50 off"))).ok
    assert [e["event"] for e in listing(server, q="off_today")["results"]] == ["a"]
    assert [e["event"] for e in listing(server, q="50%")["results"]] == ["a"]
    assert [e["event"] for e in listing(server, q="OFF", order="desc")["results"]] == ["b", "a"]
    assert listing(server, q="%")["count"] == 1


@pytest.mark.parametrize(
    "params",
    [
        {"order": "sideways"},
        {"after": "-1"},
        {"before": "x"},
        {"after": "1e3"},
        {"project": "phc_a", "api_key": "phc_b"},
    ],
)
def test_bad_listing_parameters_are_400_naming_the_parameter(
    server: DevServer, params: dict[str, str]
) -> None:
    response = requests.get(server.url + "/api/events", params=params, timeout=5)
    assert response.status_code == 400
    assert response.headers["Content-Type"] == "application/json"
    detail = response.json()["detail"]
    assert any(name in detail for name in params), detail


def test_viewer_parameters_cap_a_page_while_the_plain_listing_keeps_everything(
    server: DevServer,
) -> None:
    assert post(server, batch(*[event(f"e{i}") for i in range(1005)])).ok
    assert len(listing(server)["results"]) == 1005  # as before: no limit, everything
    page = listing(server, order="desc")
    assert (len(page["results"]), page["count"]) == (1000, 1005)
    assert page["results"][0]["event"] == "e1004"


def test_status_gives_the_cursor_to_poll_from(server: DevServer) -> None:
    assert requests.get(server.url + "/api/status", timeout=5).json()["latest_id"] == 0
    assert post(server, batch(event("a"), event("b"))).ok
    status = requests.get(server.url + "/api/status", timeout=5).json()
    assert (status["events"], status["latest_id"]) == (2, server.events()[-1]["id"])
    assert listing(server, after=status["latest_id"])["results"] == []


# -- per-project counters -------------------------------------------------------------------


def test_project_counters_count_batches_gzip_and_rejections_by_reason(
    server: DevServer,
) -> None:
    assert post(server, batch(event("plain"), event("plain"))).ok
    body = gzip.compress(json.dumps(batch(event("zipped"))).encode())
    headers = {"Content-Encoding": "gzip", "Content-Type": "application/json"}
    assert requests.post(server.url + "/batch/", data=body, headers=headers, timeout=5).ok
    assert post(server, batch(event("other"), api_key="phc_other")).ok
    assert post(server, batch({"event": "no id"})).status_code == 400
    server.fail_next(status=503)
    assert post(server, batch(event("failed"))).status_code == 503
    assert post(server, {"batch": [event("keyless")]}).status_code == 401

    projects = requests.get(server.url + "/api/projects", timeout=5)
    assert projects.headers["Content-Type"] == "application/json"
    by_key = {p["api_key"]: p for p in projects.json()["projects"]}
    assert set(by_key) == {KEY, "phc_other", None}
    mine = by_key[KEY]
    assert (mine["events"], mine["batches"], mine["gzip_batches"]) == (3, 2, 1)
    assert mine["gzip_share"] == 0.5
    assert mine["rejected"] == {"invalid_payload": 1, "fail:503": 1}
    assert (by_key["phc_other"]["events"], by_key["phc_other"]["gzip_share"]) == (1, 0.0)
    assert by_key[None]["rejected"] == {"invalid_api_key": 1}
    assert by_key[None]["events"] == 0


def test_project_event_counts_follow_evictions_and_clear() -> None:
    with DevServer(max_events=3) as server:
        assert post(server, batch(event(), event(), api_key="phc_old")).ok
        assert post(server, batch(event(), event(), api_key="phc_new")).ok

        def counts() -> dict[str, int]:
            projects = requests.get(server.url + "/api/projects", timeout=5).json()["projects"]
            return {p["api_key"]: p["events"] for p in projects}

        assert counts() == {"phc_old": 1, "phc_new": 2}
        assert sum(counts().values()) == server.count()
        server.clear()
        assert counts() == {}


# -- fault switching ------------------------------------------------------------------------


def switch(server: DevServer, body: Any, **kwargs: Any) -> requests.Response:
    return requests.post(server.url + "/api/faults", json=body, timeout=5, **kwargs)


def test_the_fault_buttons_switch_what_capture_requests_get(server: DevServer) -> None:
    assert switch(server, {"action": "down"}).json()["mode"] == "down"
    with pytest.raises(requests.ConnectionError):
        post(server, batch(event()))
    # the viewer and its API keep answering while the capture endpoints are down
    assert requests.get(server.url + "/api/faults", timeout=5).json()["mode"] == "down"
    assert requests.get(server.url + "/", headers={"Accept": "text/html"}, timeout=5).ok

    state = switch(server, {"action": "error", "status": 500}).json()
    assert (state["mode"], state["status"]) == ("error", 500)
    assert post(server, batch(event())).status_code == 500

    state = switch(server, {"action": "slow", "seconds": 0.2}).json()
    assert state["delay"] == {"seconds": 0.2, "endpoint": "any"}

    assert switch(server, {"action": "reset"}).json()["mode"] == "reset"
    with pytest.raises(requests.ConnectionError):
        post(server, batch(event()))

    state = switch(server, {"action": "up"}).json()
    assert (state["mode"], state["delay"]["seconds"]) == ("up", 0.0)
    assert post(server, batch(event())).ok
    # the same plan the tests drive from Python
    server.set_mode("error", status=502)
    assert requests.get(server.url + "/api/faults", timeout=5).json()["status"] == 502
    server.fail_next(2, endpoint="flags")
    queued = requests.get(server.url + "/api/faults", timeout=5).json()["queued"]
    assert queued == [{"kind": "fail", "remaining": 2, "endpoint": "flags"}]


@pytest.mark.parametrize(
    "body",
    [
        {"action": "explode"},
        {"action": "error", "status": 200},
        {"action": "error", "status": True},
        {"action": "slow", "seconds": -1},
        {"action": "slow", "seconds": "2"},
        ["down"],
        "down",
        0,
    ],
)
def test_a_bad_fault_switch_is_400_and_changes_nothing(server: DevServer, body: Any) -> None:
    response = switch(server, body)
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_input"
    assert requests.get(server.url + "/api/faults", timeout=5).json()["mode"] == "up"


def test_a_fault_switch_must_be_json_so_no_other_site_can_post_it(server: DevServer) -> None:
    # a cross-site <form> can only send form/text bodies; those are refused
    for content_type in ("application/x-www-form-urlencoded", "text/plain"):
        response = requests.post(
            server.url + "/api/faults",
            data='{"action": "down"}',
            headers={"Content-Type": content_type},
            timeout=5,
        )
        assert response.status_code == 415
    bad = requests.post(
        server.url + "/api/faults",
        data="{nope",
        headers={"Content-Type": "application/json"},
        timeout=5,
    )
    assert bad.status_code == 400
    assert requests.get(server.url + "/api/faults", timeout=5).json()["mode"] == "up"


# -- flag calls -----------------------------------------------------------------------------


def flag_called(distinct_id: str, flag: Any, response: Any) -> dict[str, Any]:
    return event(
        "$feature_flag_called",
        distinct_id,
        **{"$feature_flag": flag, "$feature_flag_response": response},
    )


def test_flag_calls_are_grouped_per_flag_and_response(server: DevServer) -> None:
    calls = [
        flag_called("u1", "beta", True),
        flag_called("u1", "beta", True),
        flag_called("u2", "beta", False),
        flag_called("u1", "exp", "control"),
        flag_called("u2", "exp", "test"),
        flag_called("u3", "exp", "test"),
        event("clicked", "u9", **{"$feature_flag": "beta"}),
    ]
    assert post(server, batch(*calls)).ok
    assert post(server, batch(flag_called("u4", "beta", 1), api_key="phc_other")).ok
    flags = requests.get(server.url + "/api/flag_calls", params={"project": KEY}, timeout=5)
    assert flags.headers["Content-Type"] == "application/json"
    by_flag = {f["flag"]: f for f in flags.json()["flags"]}
    assert set(by_flag) == {"beta", "exp"}
    beta = {json.dumps(v["response"]): v for v in by_flag["beta"]["variants"]}
    assert set(beta) == {"true", "false"}  # booleans stay booleans, not 1/0
    assert (beta["true"]["events"], beta["true"]["users"], beta["true"]["sample"]) == (
        2,
        1,
        ["u1"],
    )
    exp = by_flag["exp"]["variants"]
    assert [(v["response"], v["users"]) for v in exp] == [("test", 2), ("control", 1)]
    everything = requests.get(server.url + "/api/flag_calls", timeout=5).json()["flags"]
    all_beta = {
        json.dumps(v["response"]) for f in everything if f["flag"] == "beta" for v in f["variants"]
    }
    assert all_beta == {"true", "false", "1"}


# -- the page and its files ------------------------------------------------------------------


def test_root_is_the_page_for_a_browser_and_the_status_for_scripts(server: DevServer) -> None:
    page = requests.get(server.url + "/", headers={"Accept": "text/html,*/*;q=0.8"}, timeout=5)
    assert page.status_code == 200
    assert page.headers["Content-Type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["Content-Security-Policy"]
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    assert "<script" in page.text and "viewer.js" in page.text
    status = requests.get(server.url + "/", timeout=5)  # requests sends Accept: */*
    assert status.headers["Content-Type"] == "application/json"
    assert status.json()["status"] == "ok"
    for path, kind in (("/viewer.js", "text/javascript"), ("/viewer.css", "text/css")):
        response = requests.get(server.url + path, timeout=5)
        assert response.headers["Content-Type"].startswith(kind)
        assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert requests.get(server.url + "/viewer.py", timeout=5).status_code == 404
    assert requests.get(server.url + "/../server.py", timeout=5).status_code == 404


def test_the_page_uses_no_inline_script_style_or_remote_resource(server: DevServer) -> None:
    html = requests.get(server.url + "/", headers={"Accept": "text/html"}, timeout=5).text
    js = requests.get(server.url + "/viewer.js", timeout=5).text
    assert "http://" not in html + js and "https://" not in html + js
    assert " on" not in html.replace("\n", " ").split("<body", 1)[1].split(">", 1)[0]
    assert "style=" not in html and "<style" not in html
    # the script never parses data as HTML
    assert "innerHTML" not in js and "outerHTML" not in js and "insertAdjacentHTML" not in js
    assert "document.write" not in js and "eval(" not in js


def test_the_devserver_binds_loopback_by_default() -> None:
    with DevServer() as server:
        assert server.url.startswith("http://127.0.0.1:")
