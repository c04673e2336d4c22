"""phactor.devserver fault injection: one-shot faults, modes, delays, size limits."""

from __future__ import annotations

import threading

import pytest
import requests
from devserver_client import KEY, batch, event, server_fixture, session_fixture  # noqa: F401  (fixtures)

from phactor.devserver import DevServer

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
