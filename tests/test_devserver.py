"""phactor.devserver over real HTTP: paths, encodings, listing, flags, faults, concurrency, CLI."""

from __future__ import annotations

import base64
import contextlib
import gzip
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import tracemalloc
import uuid
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import requests
from hypothesis import given
from hypothesis import strategies as st

import phactor.devserver as devserver_module
from phactor.devserver import CAPTURE_PATHS, DevServer

KEY = "phc_devserver_test"


def event(name: str = "clicked", distinct_id: str = "user-1", **props: Any) -> dict[str, Any]:
    return {
        "event": name,
        "distinct_id": distinct_id,
        "uuid": str(uuid.uuid4()),
        "timestamp": "2026-01-01T00:00:00.000Z",
        "properties": props,
    }


def batch(*events: dict[str, Any], api_key: str = KEY) -> dict[str, Any]:
    return {"api_key": api_key, "batch": list(events), "sent_at": "2026-01-01T00:00:01.000Z"}


@pytest.fixture
def server() -> Iterator[DevServer]:
    with DevServer() as running:
        yield running


@pytest.fixture
def session() -> Iterator[requests.Session]:
    with requests.Session() as http:
        yield http


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


# -- fault injection ------------------------------------------------------------------------


def test_fail_next_answers_the_status_then_recovers(
    server: DevServer, session: requests.Session
) -> None:
    server.fail_next(2, 503, headers={"Retry-After": "7"}, body=b"busy")
    sent = event()
    statuses = []
    for _ in range(3):
        response = session.post(server.url + "/batch/", json=batch(sent), timeout=5)
        statuses.append(response.status_code)
    assert statuses == [503, 503, 200]
    assert response.json() == {"status": 1}
    assert server.requests[0].fault == "fail"
    assert server.uuid_counts()[sent["uuid"]] == 3
    assert server.count() == 1


def test_faults_queue_in_order_and_only_hit_their_endpoint(
    server: DevServer, session: requests.Session
) -> None:
    server.fail_next(1, 429, headers={"Retry-After": "1"})
    server.fail_next(1, 502, endpoint="flags")
    server.fail_next(1, 500)
    flags = session.post(server.url + "/flags/", json={"api_key": KEY, "distinct_id": "u"})
    first = session.post(server.url + "/batch/", json=batch(event()), timeout=5)
    second = session.post(server.url + "/batch/", json=batch(event()), timeout=5)
    third = session.post(server.url + "/batch/", json=batch(event()), timeout=5)
    assert flags.status_code == 502
    assert (first.status_code, first.headers["Retry-After"]) == (429, "1")
    assert (second.status_code, third.status_code) == (500, 200)
    assert (server.request_count("capture"), server.request_count("flags")) == (3, 1)
    assert server.request_count("any") == 4


def test_drop_next_closes_without_response(server: DevServer, session: requests.Session) -> None:
    server.drop_next(1)
    with pytest.raises(requests.ConnectionError):
        session.post(server.url + "/batch/", json=batch(event()), timeout=5)
    assert session.post(server.url + "/batch/", json=batch(event()), timeout=5).ok
    assert [r.status for r in server.requests] == [None, 200]
    assert server.requests[0].fault == "drop"


def test_drop_next_with_reset_sends_rst(server: DevServer) -> None:
    server.drop_next(1, reset=True)
    with pytest.raises(requests.ConnectionError) as failure:
        requests.post(server.url + "/batch/", json=batch(event()), timeout=5)
    assert "reset" in str(failure.value).lower()
    assert server.requests[0].fault == "reset"


def test_store_then_lose_the_answer_shows_the_duplicate(server: DevServer) -> None:
    server.drop_next(1, store=True)
    sent = event()
    with pytest.raises(requests.ConnectionError):
        requests.post(server.url + "/batch/", json=batch(sent), timeout=5)
    assert server.count() == 1
    requests.post(server.url + "/batch/", json=batch(sent), timeout=5)
    assert server.uuid_counts()[sent["uuid"]] == 2
    assert [e["uuid"] for e in server.events()] == [sent["uuid"], sent["uuid"]]


def test_modes_down_reset_error_up(server: DevServer) -> None:
    server.set_mode("down")
    with pytest.raises(requests.ConnectionError):
        requests.post(server.url + "/batch/", json=batch(event()), timeout=5)
    with pytest.raises(requests.ConnectionError):
        requests.post(server.url + "/flags/", json={"api_key": KEY}, timeout=5)
    server.set_mode("reset")
    with pytest.raises(requests.ConnectionError):
        requests.post(server.url + "/batch/", json=batch(event()), timeout=5)
    server.set_mode("error", status=502)
    assert requests.post(server.url + "/batch/", json=batch(event()), timeout=5).status_code == 502
    assert server.count() == 0
    server.set_mode("up")
    assert requests.post(server.url + "/batch/", json=batch(event()), timeout=5).ok
    assert [r.fault for r in server.requests] == [
        "mode:down",
        "mode:down",
        "mode:reset",
        "mode:error",
        None,
    ]
    with pytest.raises(ValueError):
        server.set_mode("sideways")  # type: ignore[arg-type]


def test_delay_makes_the_client_time_out(server: DevServer) -> None:
    server.delay(30)
    with pytest.raises(requests.Timeout):
        requests.post(server.url + "/batch/", json=batch(event()), timeout=0.2)
    server.delay(0)
    assert requests.post(server.url + "/batch/", json=batch(event()), timeout=5).ok


def test_stop_ends_a_hanging_request() -> None:
    server = DevServer().start()
    server.delay(60)
    failures: list[BaseException] = []

    def post() -> None:
        try:
            requests.post(server.url + "/batch/", json=batch(event()), timeout=30)
        except requests.RequestException as exc:
            failures.append(exc)

    poster = threading.Thread(target=post)
    poster.start()
    # The request must be inside the server (held by the delay) before stop(), or a stop that
    # wins the race would fail the POST at connect and prove nothing about cutting it short.
    assert server.wait_for_arrivals(1, timeout=10)
    server.stop()
    poster.join(timeout=20)
    assert not poster.is_alive()
    assert len(failures) == 1


def test_reject_larger_than_413(server: DevServer) -> None:
    server.reject_larger_than(500)
    small = requests.post(server.url + "/batch/", json=batch(event()), timeout=5)
    big = requests.post(server.url + "/batch/", json=batch(event(pad="x" * 1000)), timeout=5)
    assert (small.status_code, big.status_code) == (200, 413)
    server.reset_faults()
    again = requests.post(server.url + "/batch/", json=batch(event(pad="x" * 1000)), timeout=5)
    assert again.status_code == 200
    assert server.count() == 2


def test_bad_fault_arguments_raise(server: DevServer) -> None:
    with pytest.raises(ValueError):
        server.fail_next(0)
    with pytest.raises(ValueError):
        server.fail_next(1, endpoint="batch")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        server.fail_next(1, status=99)
    with pytest.raises(TypeError):
        server.reject_larger_than(-1)


# -- concurrency and waiting ----------------------------------------------------------------


def test_concurrent_senders_exact_count(server: DevServer) -> None:
    threads, batches, per_batch = 8, 25, 40
    sent: list[str] = []
    sent_lock = threading.Lock()

    def send() -> None:
        with requests.Session() as http:
            for _ in range(batches):
                events = [event(distinct_id=f"t{threading.get_ident()}") for _ in range(per_batch)]
                with sent_lock:
                    sent.extend(e["uuid"] for e in events)
                assert http.post(server.url + "/batch/", json=batch(*events), timeout=10).ok

    workers = [threading.Thread(target=send) for _ in range(threads)]
    for worker in workers:
        worker.start()
    total = threads * batches * per_batch
    assert server.wait_for(total, timeout=60)
    for worker in workers:
        worker.join()
    assert server.count() == total
    assert server.request_count() == threads * batches
    counts = server.uuid_counts()
    assert sorted(counts) == sorted(sent)
    assert set(counts.values()) == {1}
    assert sorted(e["uuid"] for e in server.events()) == sorted(sent)


def test_wait_for_wakes_on_arrival_and_times_out(server: DevServer) -> None:
    assert server.wait_for(1, timeout=0.05) is False
    poster = threading.Thread(
        target=requests.post,
        args=(server.url + "/batch/",),
        kwargs={"json": batch(event(), event()), "timeout": 5},
    )
    poster.start()
    assert server.wait_for(2, timeout=10)
    assert server.wait_for_requests(1, timeout=10)
    poster.join()


def test_keep_alive_reuses_one_connection(server: DevServer, session: requests.Session) -> None:
    first = session.post(server.url + "/batch/", json=batch(event()), timeout=5)
    second = session.post(server.url + "/batch/", json=batch(event()), timeout=5)
    assert first.headers["Content-Length"] == str(len(first.content))
    assert first.raw.version == 11 and second.ok
    # the same client port on both requests: one TCP connection served them
    assert len({r.peer for r in server.requests}) == 1
    fresh = requests.post(server.url + "/batch/", json=batch(event()), timeout=5)
    assert fresh.ok and len({r.peer for r in server.requests}) == 2


def test_stop_closes_keep_alive_connections(session: requests.Session) -> None:
    server = DevServer().start()
    url = server.url
    assert session.post(url + "/batch/", json=batch(event()), timeout=5).ok
    server.stop()
    with pytest.raises(requests.ConnectionError):
        session.post(url + "/batch/", json=batch(event()), timeout=5)
    assert server.count() == 1  # still readable after stop
    with pytest.raises(RuntimeError):
        _ = server.port


def test_constructor_checks_types() -> None:
    with pytest.raises(TypeError):
        DevServer(port="8010")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        DevServer(flags={"a": 1})  # type: ignore[dict-item]
    with pytest.raises(TypeError):
        DevServer(flag_definitions=42)  # type: ignore[arg-type]


# -- CLI ------------------------------------------------------------------------------------


def test_cli_serves_and_stops_on_sigterm(tmp_path: Path) -> None:
    db = tmp_path / "cli.sqlite"
    process = subprocess.Popen(
        [sys.executable, "-m", "phactor.devserver", "--port", "0", "--db", str(db)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        assert requests.post(url + "/batch/", json=batch(event("cli")), timeout=5).ok
        listing = requests.get(url + "/api/events", params={"event": "cli"}, timeout=5).json()
        assert listing["count"] == 1
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()
    with DevServer(db=db) as reopened:
        assert [e["event"] for e in reopened.events()] == ["cli"]


def test_cli_rejects_bad_flags_json() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "phactor.devserver", "--port", "0", "--flags", "{nope"],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert result.returncode == 2
    assert "--flags" in result.stderr


# -- memory bounds (issue 10: #16) ----------------------------------------------------------


def gzip_of_zeros(mebibytes: int) -> bytes:
    """A gzip body inflating to ``mebibytes`` MiB, built without holding the inflated bytes."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    block = bytes(1024 * 1024)
    return b"".join([*(compressor.compress(block) for _ in range(mebibytes)), compressor.flush()])


def test_a_gzip_bomb_is_413_without_inflating_it(server: DevServer) -> None:
    bomb = gzip_of_zeros(256)  # ~250 KiB on the wire, 256 MiB inflated
    assert len(bomb) < 1024 * 1024
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        response = requests.post(
            server.url + "/batch/", data=bomb, headers={"Content-Encoding": "gzip"}, timeout=30
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert response.status_code == 413
    assert response.json()["code"] == "payload_too_large"
    # the default cap is 20 MiB decompressed: the peak stays near it, far below 256 MiB
    assert peak < 64 * 1024 * 1024
    assert server.requests[-1].status == 413
    assert requests.post(server.url + "/batch/", json=batch(event()), timeout=5).ok


def test_decompressed_and_raw_body_caps_are_options(session: requests.Session) -> None:
    payload = json.dumps(batch(event(pad="x" * 4000))).encode()  # ~4.2 KB, gzip far smaller
    with DevServer(max_body_bytes=2048) as server:
        inflated = session.post(
            server.url + "/batch/",
            data=gzip.compress(payload),
            headers={"Content-Encoding": "gzip"},
            timeout=5,
        )
        plain = session.post(server.url + "/batch/", data=payload, timeout=5)
        fits = session.post(server.url + "/batch/", json=batch(event()), timeout=5)
        assert (inflated.status_code, plain.status_code) == (413, 413)
        assert fits.status_code == 200
        assert server.count() == 1
    with pytest.raises(TypeError):
        DevServer(max_body_bytes=0)
    with pytest.raises(TypeError):
        DevServer(max_body_bytes="1")  # type: ignore[arg-type]


def test_multi_member_gzip_is_one_body(server: DevServer) -> None:
    text = json.dumps(batch(event("members"))).encode()
    body = gzip.compress(text[:10]) + gzip.compress(text[10:])
    response = requests.post(
        server.url + "/batch/", data=body, headers={"Content-Encoding": "gzip"}, timeout=5
    )
    assert response.status_code == 200
    assert [e["event"] for e in server.events()] == ["members"]


def test_truncated_gzip_is_400(server: DevServer) -> None:
    body = gzip.compress(json.dumps(batch(event())).encode())[:-12]
    response = requests.post(
        server.url + "/batch/", data=body, headers={"Content-Encoding": "gzip"}, timeout=5
    )
    assert response.status_code == 400
    assert "gzip" in response.json()["detail"]


def test_stored_events_are_capped_oldest_evicted_first() -> None:
    with DevServer(max_events=5) as server:
        sent = [event(f"e{i}") for i in range(12)]
        for chunk in (sent[:3], sent[3:4], sent[4:12]):
            assert requests.post(server.url + "/batch/", json=batch(*chunk), timeout=5).ok
        assert [e["event"] for e in server.events()] == [f"e{i}" for i in range(7, 12)]
        assert (server.count(), server.evicted) == (5, 7)
        # every event that arrived counts for wait_for, evicted or not
        assert server.wait_for(12, timeout=0)
        status = requests.get(server.url + "/", timeout=5).json()
        assert (status["events"], status["evicted"]) == (5, 7)
        server.clear()
        assert (server.count(), server.evicted) == (0, 0)
    assert DevServer().max_events == 100_000
    assert DevServer(max_events=None).max_events is None
    with pytest.raises(TypeError):
        DevServer(max_events=0)


LIMITS = ("--max-body-bytes", "2048", "--max-events", "2", "--max-stored-bytes", "100000")


def test_cli_limits_options() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "phactor.devserver", "--port", "0", *LIMITS],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip()
        big = batch(event(pad="x" * 4000))
        assert requests.post(url + "/batch/", json=big, timeout=5).status_code == 413
        three = batch(event("a"), event("b"), event("c"))
        assert requests.post(url + "/batch/", json=three, timeout=5).ok
        status = requests.get(url + "/", timeout=5).json()
        assert (status["events"], status["evicted"]) == (2, 1)
        assert 0 < status["stored_bytes"] <= 100_000
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()
    result = subprocess.run(
        [sys.executable, "-m", "phactor.devserver", "--port", "0", "--max-events", "-1"],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert result.returncode == 2
    assert "--max-events" in result.stderr


# -- hostile clients: framing, slow and lying peers, odd bodies -----------------------------


def exchange(server: DevServer, payload: bytes, *, timeout: float = 10.0) -> tuple[int, bytes]:
    """Send raw bytes on a fresh connection; the status and body of the first response.

    Raises TimeoutError when the server neither answers nor closes within ``timeout``.
    """
    with socket.create_connection(("127.0.0.1", server.port), timeout=timeout) as sock:
        sock.sendall(payload)
        return read_response(sock)


def read_response(sock: socket.socket) -> tuple[int, bytes]:
    """The status and body of the next response on ``sock``; status 0 if it closed first."""
    received = b""
    while b"\r\n\r\n" not in received:
        chunk = sock.recv(65536)
        if not chunk:
            return 0, received  # closed without a response
        received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    length = int(
        next(
            (
                line.split(b":")[1]
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            ),
            b"0",
        )
    )
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(head.split(b" ")[1]), body


def post_head(path: str = "/batch/", **headers: str) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: localhost"]
    lines += [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def still_serving(server: DevServer) -> bool:
    return requests.post(server.url + "/batch/", json=batch(event()), timeout=5).ok


@pytest.mark.parametrize("length", ["abc", "+5", "-5", "1e3", "5, 6"])
def test_malformed_content_length_is_400(server: DevServer, length: str) -> None:
    status, body = exchange(server, post_head(Content_Length=length) + b"hello")
    assert status == 400
    assert b"Content-Length" in body
    assert still_serving(server)


@pytest.mark.parametrize("size_line", [b"-1", b"zz", b"", b"0x10", b"1" * 5000])
def test_malformed_chunk_size_is_400_without_reading_to_eof(
    server: DevServer, size_line: bytes
) -> None:
    # the client keeps its side open: reading "to the end" would hang until the client gives up
    head = post_head(Transfer_Encoding="chunked")
    status, _ = exchange(server, head + size_line + b"\r\n{}\r\n", timeout=10)
    assert status == 400
    assert still_serving(server)


def test_chunked_body_is_accepted(server: DevServer) -> None:
    text = json.dumps(batch(event("chunked"))).encode()
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (text[:7], text[7:]))
    status, _ = exchange(server, post_head(Transfer_Encoding="chunked") + chunks + b"0\r\n\r\n")
    assert status == 200
    assert [e["event"] for e in server.events()] == ["chunked"]


def test_a_lying_content_length_gets_408_promptly() -> None:
    with DevServer(read_timeout=0.5) as server:
        started = time.monotonic()
        status, body = exchange(server, post_head(Content_Length="1000") + b'{"api_key"')
        assert status == 408
        assert time.monotonic() - started < 5
        assert b"request_timeout" in body
        assert still_serving(server)


def test_a_dripping_body_gets_408_at_the_request_deadline() -> None:
    with DevServer(read_timeout=1.0) as server:
        results: list[tuple[int, bytes]] = []
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(post_head(Content_Length="200"))

            def drip() -> None:  # one byte every 50 ms: never idle long, done only after 10 s
                with contextlib.suppress(OSError):
                    for _ in range(200):
                        sock.sendall(b" ")
                        time.sleep(0.05)

            dripper = threading.Thread(target=drip, daemon=True)
            started = time.monotonic()
            dripper.start()
            response = b""
            while chunk := sock.recv(65536):
                response += chunk
                if b"\r\n\r\n" in response:
                    break
            elapsed = time.monotonic() - started
            results.append((int(response.split(b" ")[1]) if response else 0, response))
        dripper.join(timeout=20)
        assert results[0][0] == 408
        assert elapsed < 5
        assert still_serving(server)


def test_an_idle_connection_is_closed_after_idle_timeout() -> None:
    with DevServer(idle_timeout=0.3) as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            assert sock.recv(1) == b""  # closed by the server, not by our 10 s timeout
        assert still_serving(server)


def test_timeouts_are_checked() -> None:
    for bad in (0, -1, float("nan"), float("inf"), "5", True):
        with pytest.raises(TypeError):
            DevServer(read_timeout=bad)  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            DevServer(idle_timeout=bad)  # type: ignore[arg-type]
    assert DevServer(idle_timeout=None) is not None


def test_a_get_body_does_not_poison_the_next_request(server: DevServer) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        first = b"GET /api/events HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nxxxxx"
        sock.sendall(first + b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    assert received.count(b"HTTP/1.1 200") == 2


def test_form_body_with_a_flood_of_fields_is_400(server: DevServer) -> None:
    flood = b"a=&" * 700_000  # 2 MiB: 700,000 fields, ~40 MiB once split into strings
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        response = requests.post(
            server.url + "/e/",
            data=flood,
            headers={"Content-Type": "application/x-www-form-urlencoded"},
            timeout=10,
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 20 * 1024 * 1024
    assert response.status_code == 400
    assert "form" in response.json()["detail"]


def test_flags_body_with_odd_flag_keys_is_400(server: DevServer) -> None:
    server.set_flags({"beta": True})
    body = {"api_key": KEY, "distinct_id": "u", "flag_keys_to_evaluate": [["beta"], {"a": 1}]}
    response = requests.post(server.url + "/flags/?v=2", json=body, timeout=5)
    assert response.status_code == 400
    assert "flag_keys_to_evaluate" in response.json()["detail"]
    assert server.requests[-1].status == 400


@pytest.mark.parametrize(
    "params",
    [{"limit": "99999999999999999999"}, {"offset": "-1"}, {"limit": "-3"}, {"limit": "x"}],
)
def test_listing_with_absurd_limit_or_offset_is_400(
    server: DevServer, params: dict[str, str]
) -> None:
    response = requests.get(server.url + "/api/events", params=params, timeout=5)
    assert response.status_code == 400


JSON_LEAVES = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
    | st.just(str(uuid.uuid4()))
)
JSON_VALUES = st.recursive(
    JSON_LEAVES,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
EVENT_LIKE = st.fixed_dictionaries(
    {},
    optional={
        "event": st.just("clicked") | JSON_VALUES,
        "distinct_id": st.just("u1") | JSON_VALUES,
        "uuid": st.just(str(uuid.uuid4())) | JSON_VALUES,
        "properties": st.dictionaries(st.text(max_size=8), JSON_VALUES, max_size=3) | JSON_VALUES,
        "timestamp": JSON_VALUES,
        "api_key": st.just(KEY) | JSON_VALUES,
    },
)
BODIES = st.one_of(
    JSON_VALUES,
    EVENT_LIKE,
    st.lists(EVENT_LIKE | JSON_VALUES, max_size=4),
    st.fixed_dictionaries(
        {"batch": st.lists(EVENT_LIKE | JSON_VALUES, max_size=4) | JSON_VALUES},
        optional={"api_key": st.just(KEY) | JSON_VALUES, "flag_keys_to_evaluate": JSON_VALUES},
    ),
)
BODY_BYTES = st.one_of(
    st.binary(max_size=512),
    BODIES.map(orjson.dumps),
    BODIES.map(lambda v: gzip.compress(orjson.dumps(v))),
    BODIES.map(lambda v: gzip.compress(orjson.dumps(v))[: len(orjson.dumps(v)) // 2]),
    st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")),
    BODIES.map(lambda v: b"data=" + base64.b64encode(orjson.dumps(v))),
)


def test_random_bodies_get_a_2xx_or_4xx_and_the_server_keeps_serving() -> None:
    with DevServer(max_events=1000) as server, requests.Session() as http:

        @given(
            body=BODY_BYTES,
            path=st.sampled_from(["/batch/", "/e/", "/i/v0/e/?compression=gzip-js", "/flags/"]),
            content_type=st.sampled_from(
                ["application/json", "application/x-www-form-urlencoded", "text/plain"]
            ),
            gzip_header=st.booleans(),
        )
        def check(body: bytes, path: str, content_type: str, gzip_header: bool) -> None:
            headers = {"Content-Type": content_type}
            if gzip_header:
                headers["Content-Encoding"] = "gzip"
            response = http.post(server.url + path, data=body, headers=headers, timeout=10)
            assert 200 <= response.status_code < 500, response.text
            assert response.headers["Content-Type"] == "application/json"

        check()
        assert still_serving(server)


FRAMING_HEADERS = st.dictionaries(
    st.sampled_from(["Content-Length", "Transfer-Encoding", "Content-Encoding", "Content-Type"]),
    st.sampled_from(["0", "5", "-1", "99999999999", "chunked", "gzip", "x", "5, 5", "1e3"])
    | st.text(st.characters(min_codepoint=33, max_codepoint=126), max_size=12),
)


def test_random_framing_is_answered_or_closed_and_the_server_keeps_serving() -> None:
    with DevServer(read_timeout=2.0) as server:

        @given(
            request=st.binary(max_size=300)
            | st.builds(
                lambda headers, body: post_head(**headers) + body,
                FRAMING_HEADERS,
                st.binary(max_size=64) | st.sampled_from([b"5\r\nhello\r\n0\r\n\r\n", b"{}"]),
            )
        )
        def check(request: bytes) -> None:
            with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
                sock.sendall(request)
                sock.shutdown(socket.SHUT_WR)  # EOF: the server must not wait for more
                received = b""
                while chunk := sock.recv(65536):
                    received += chunk
            statuses = [
                int(line.split(b" ")[1])
                for line in received.split(b"\r\n")
                if line.startswith(b"HTTP/1.") and line[9:12].isdigit()
            ]
            assert all(status < 500 or status in (501, 505) for status in statuses), received

        check()
        assert still_serving(server)


def test_the_request_log_is_bounded_and_counts_stay_exact(session: requests.Session) -> None:
    with DevServer(max_requests=3) as server:
        sent = [event(f"r{i}") for i in range(5)]
        for one in sent:
            assert session.post(server.url + "/batch/", json=batch(one), timeout=5).ok
        assert session.post(server.url + "/flags/", json={"api_key": KEY}, timeout=5).ok
        # the log keeps the newest requests; the counts cover every request
        assert [r.endpoint for r in server.requests] == ["capture", "capture", "flags"]
        assert server.requests[0].uuids == (sent[3]["uuid"],)
        assert server.request_count() == 5
        assert server.request_count("any") == 6
        assert server.wait_for_requests(5, timeout=0)
        assert requests.get(server.url + "/", timeout=5).json()["requests"] == 6
        server.clear()
        assert (server.request_count("any"), server.requests) == (0, [])
    with pytest.raises(TypeError):
        DevServer(max_requests=0)


def test_a_flood_of_big_headers_does_not_grow_the_log_without_bound(
    session: requests.Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(devserver_module, "_MAX_LOG_BYTES", 4 * 1024 * 1024)  # 64 MiB by default
    headers = {f"X-Pad-{i}": "p" * 60_000 for i in range(16)}  # ~1 MB of headers a request
    with DevServer() as server:
        tracemalloc.start()
        try:
            for _ in range(24):  # ~23 MB of headers in all
                response = session.post(
                    server.url + "/flags/", json={"api_key": KEY}, headers=headers, timeout=10
                )
                assert response.ok
            current, _ = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert server.request_count("flags") == 24
        assert 3 <= len(server.requests) <= 5
    assert current < 12 * 1024 * 1024


@pytest.mark.parametrize("unit", [b"{}", b"[]", b'"a"', b"1.5"])
def test_a_body_of_millions_of_tiny_values_is_413_before_parsing(unit: bytes) -> None:
    # 4 MiB of tiny JSON values would be ~1.4 million Python objects (~100+ MiB)
    count = 4 * 1024 * 1024 // (len(unit) + 1)
    body = b'{"api_key": "k", "batch": [' + b",".join([unit] * count) + b"]}"
    with DevServer(max_body_bytes=len(body) + 1) as server:
        tracemalloc.start()
        try:
            tracemalloc.reset_peak()
            response = requests.post(server.url + "/batch/", data=body, timeout=30)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert response.status_code == 413
        assert "JSON values" in response.json()["detail"]
        assert peak < 32 * 1024 * 1024
        assert still_serving(server)


def test_a_batch_of_ordinary_events_near_the_cap_is_accepted() -> None:
    props = {"$lib": "phactor", "$lib_version": "0.1.0", "plan": "pro", "n": 3, "ok": False}
    events = [event("clicked", f"u{i}", **props) for i in range(12_000)]
    body = json.dumps(batch(*events), separators=(",", ":")).encode()  # ~3 MB, densest form
    with DevServer(max_body_bytes=len(body) + 1) as server:
        response = requests.post(server.url + "/batch/", data=body, timeout=30)
        assert response.status_code == 200, response.text
        assert server.count() == len(events)


def test_stored_events_are_capped_by_bytes_too() -> None:
    with DevServer(max_stored_bytes=10_000) as server:
        sent = [event(f"big{i}", pad="x" * 1500) for i in range(6)]  # ~3.2 KB stored each
        for one in sent:
            assert requests.post(server.url + "/batch/", json=batch(one), timeout=5).ok
        kept = [e["event"] for e in server.events()]
        assert kept == [f"big{i}" for i in range(6 - len(kept), 6)]  # the newest, in order
        assert 2 <= len(kept) <= 3
        assert server.stored_bytes <= 10_000
        assert server.evicted == 6 - len(kept)
        huge = event("huge", pad="x" * 20_000)  # alone over the budget: evicted on arrival
        assert requests.post(server.url + "/batch/", json=batch(huge), timeout=5).ok
        assert [e["event"] for e in server.events()][-1] != "huge"
        assert server.evicted == 7 - len(kept)
        server.clear()
        assert server.stored_bytes == 0
    assert DevServer().max_stored_bytes == 256 * 1024 * 1024
    with pytest.raises(TypeError):
        DevServer(max_stored_bytes=0)


def test_connections_beyond_max_connections_get_503_and_the_server_recovers() -> None:
    with DevServer(max_connections=2) as server:
        held = [socket.create_connection(("127.0.0.1", server.port), timeout=10) for _ in "ab"]
        try:
            for sock in held:  # answered: each is accepted and kept alive by a handler thread
                sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                assert read_response(sock)[0] == 200
            status, body = exchange(server, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert status == 503
            assert b"too_many_connections" in body
        finally:
            for sock in held:
                sock.close()
        # the held connections' threads end on EOF; new connections are served again
        deadline = time.monotonic() + 5
        while exchange(server, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")[0] != 200:
            assert time.monotonic() < deadline
    with pytest.raises(TypeError):
        DevServer(max_connections=0)


TIMEOUTS = ("--read-timeout", "0.5", "--idle-timeout", "0", "--max-connections", "8")


def test_cli_timeouts_and_connection_options() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "phactor.devserver", "--port", "0", *TIMEOUTS],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip()
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(post_head(Content_Length="100") + b"{")
            started = time.monotonic()
            assert read_response(sock)[0] == 408
            assert time.monotonic() - started < 5
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()
    for bad in ("nan", "0", "-1"):
        result = subprocess.run(
            [sys.executable, "-m", "phactor.devserver", "--port", "0", "--read-timeout", bad],
            capture_output=True,
            text=True,
            timeout=20,
        )
        assert result.returncode == 2
        assert "--read-timeout" in result.stderr


def test_large_bodies_are_processed_a_few_at_a_time() -> None:
    # 6 concurrent 4 MiB bodies, each held (parsed) for 0.5 s by delay(): before, all six were
    # in memory at once; now at most two large bodies are read and parsed at a time.
    body = orjson.dumps(batch(*(event(f"big{i}", pad="x" * 4000) for i in range(1000))))
    assert len(body) > 4_000_000
    statuses: list[int] = []
    with DevServer() as server:
        server.delay(0.5, endpoint="capture")

        def post() -> None:
            response = requests.post(server.url + "/batch/", data=body, timeout=30)
            statuses.append(response.status_code)

        tracemalloc.start()
        try:
            tracemalloc.reset_peak()
            posters = [threading.Thread(target=post) for _ in range(6)]
            for poster in posters:
                poster.start()
            for poster in posters:
                poster.join(timeout=30)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert statuses == [200] * 6
        assert server.count() == 6000
    # before: ~420 MB (six bodies, their parses and their rows' spare capacity); now ~75 MB
    assert peak < 200 * 1024 * 1024


def test_content_length_with_surrounding_whitespace_is_accepted(server: DevServer) -> None:
    body = json.dumps(batch(event("spaced"))).encode()
    status, _ = exchange(server, post_head(Content_Length=f" {len(body)}  ") + body)
    assert status == 200
    assert [e["event"] for e in server.events()] == ["spaced"]
