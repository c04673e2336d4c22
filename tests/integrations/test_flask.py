"""The Flask extension against real Flask (test client), events posted to the loopback devserver."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from integration_checks import (
    LEAK_REQUESTS,
    LEAK_WORKERS,
    headers_for,
    leak_violations,
    view,
)

flask = pytest.importorskip("flask")
werkzeug_exceptions = pytest.importorskip("werkzeug.exceptions")

import phactor  # noqa: E402
from phactor.integrations.flask import PhactorFlask  # noqa: E402


def make_app(name: str, *, install: bool = True, **options: Any) -> Any:
    app = flask.Flask(__name__)

    @app.route("/r/<int:i>")
    def leak_view(i: int) -> str:
        view(i, name)
        return "ok"

    @app.route("/boom")
    def boom() -> str:
        raise ValueError("view failed")

    @app.route("/missing")
    def missing() -> str:
        flask.abort(404)

    class Handled(Exception):
        pass

    @app.errorhandler(Handled)
    def handled(error: Exception) -> tuple[str, int]:
        return "handled", 409

    @app.route("/handled")
    def raises_handled() -> str:
        raise Handled()

    @app.route("/stream")
    def stream() -> Any:
        phactor.set_context({"streamed": True}, instance=name)

        def body() -> Any:
            phactor.capture("chunk", instance=name)
            yield "a"
            phactor.capture("chunk", instance=name)
            yield "b"

        return flask.Response(body())

    if install:
        PhactorFlask(app, name, **options)
    return app


@pytest.fixture
def inst(devserver: Any, start_instance: Any) -> phactor.Instance:
    return start_instance(api_key="phc_test", host=devserver.url, flush_interval=60)


def events_of(inst: phactor.Instance, devserver: Any) -> list[dict[str, Any]]:
    assert inst.flush(10)
    return devserver.events()


def run_leak_requests(app: Any) -> None:
    def one(i: int) -> None:
        response = app.test_client().get(f"/r/{i}", headers=headers_for(i))
        assert response.status_code == 200

    with ThreadPoolExecutor(LEAK_WORKERS) as pool:
        list(pool.map(one, range(LEAK_REQUESTS)))


def test_without_the_extension_context_leaks_between_requests_on_pooled_threads(
    inst: phactor.Instance, devserver: Any
) -> None:
    # The problem the extension solves: set_context() in a view stays on the worker thread.
    run_leak_requests(make_app(inst.name, install=False))
    assert leak_violations(events_of(inst, devserver))


def test_each_request_event_carries_only_its_own_user_and_context(
    inst: phactor.Instance, devserver: Any
) -> None:
    run_leak_requests(make_app(inst.name))
    events = events_of(inst, devserver)
    assert leak_violations(events) == []
    event = next(e for e in events if e["properties"]["i"] == 4)
    props = event["properties"]
    assert props["$pathname"] == "/r/4"
    assert props["$current_url"] == "http://localhost/r/4"
    assert props["$host"] == "localhost"
    assert props["$request_method"] == "GET"
    assert props["$ip"] == "127.0.0.1"


def test_only_the_listed_request_properties_reach_events(
    inst: phactor.Instance, devserver: Any
) -> None:
    app = make_app(inst.name)
    app.test_client().get(
        "/r/0?token=secret",
        headers={
            "X-POSTHOG-DISTINCT-ID": "user-0",
            "X-POSTHOG-SESSION-ID": " sess-1\x00\x07\t ",
            "X-POSTHOG-WINDOW-ID": "win-1",
            "User-Agent": "agent/1.0",
            "Authorization": "Bearer secret",
            "Cookie": "sessionid=secret",
            "X-Other": "secret",
            "X-Forwarded-For": "6.6.6.6",
        },
    )
    (event,) = events_of(inst, devserver)
    props = event["properties"]
    assert props["$session_id"] == "sess-1"
    assert props["$window_id"] == "win-1"
    assert props["$user_agent"] == "agent/1.0"
    assert props["$ip"] == "127.0.0.1"  # no trusted proxies: X-Forwarded-For is not believed
    assert "secret" not in str(event)  # no query string, cookie, Authorization, other header


def test_forwarded_for_is_believed_only_from_a_trusted_proxy(
    inst: phactor.Instance, devserver: Any
) -> None:
    app = make_app(inst.name, trusted_proxies=(net for net in ["127.0.0.0/8"]))  # read once
    app.test_client().get("/r/0", headers={"X-Forwarded-For": "203.0.113.9, 127.0.0.5"})
    (event,) = events_of(inst, devserver)
    assert event["properties"]["$ip"] == "203.0.113.9"


def test_a_view_exception_becomes_one_exception_event_with_the_request_context(
    inst: phactor.Instance, devserver: Any
) -> None:
    app = make_app(inst.name)
    response = app.test_client().get(
        "/boom", headers={"X-POSTHOG-DISTINCT-ID": "user-9", "X-POSTHOG-SESSION-ID": "s-9"}
    )
    assert response.status_code == 500  # Flask's own error handling is untouched
    events = events_of(inst, devserver)
    exceptions = [e for e in events if e["event"] == "$exception"]
    assert len(exceptions) == 1, [e["event"] for e in events]  # not again from app.logger
    (exc,) = exceptions
    assert exc["distinct_id"] == "user-9"
    assert exc["properties"]["$session_id"] == "s-9"
    assert exc["properties"]["$current_url"] == "http://localhost/boom"
    assert exc["properties"]["$exception_list"][0]["type"] == "ValueError"


def test_the_exception_is_re_raised_unchanged_when_flask_propagates_it(
    inst: phactor.Instance, devserver: Any
) -> None:
    app = make_app(inst.name)
    app.testing = True  # PROPAGATE_EXCEPTIONS: the test client sees the view's exception
    with pytest.raises(ValueError, match="view failed"):
        app.test_client().get("/boom")
    events = events_of(inst, devserver)
    assert [e["event"] for e in events].count("$exception") == 1


def test_http_errors_and_handled_exceptions_are_not_captured(
    inst: phactor.Instance, devserver: Any
) -> None:
    client = make_app(inst.name).test_client()
    assert client.get("/missing").status_code == 404
    assert client.get("/handled").status_code == 409
    assert client.get("/r/0").status_code == 200
    assert [e["event"] for e in events_of(inst, devserver)] == ["viewed"]


def test_a_streamed_body_runs_in_the_request_context_which_ends_with_it(
    inst: phactor.Instance, devserver: Any
) -> None:
    client = make_app(inst.name).test_client()
    response = client.get("/stream", headers={"X-POSTHOG-DISTINCT-ID": "streamer"})
    assert response.data == b"ab"
    chunks = [e for e in events_of(inst, devserver) if e["event"] == "chunk"]
    assert len(chunks) == 2
    assert all(e["distinct_id"] == "streamer" and e["properties"]["streamed"] for e in chunks)
    assert phactor.get_context(instance=inst.name) == {}


def test_a_raising_distinct_id_callback_never_breaks_the_request(
    inst: phactor.Instance, devserver: Any
) -> None:
    def hostile(request: Any) -> str:
        raise RuntimeError("callback bug")

    client = make_app(inst.name, distinct_id=hostile).test_client()
    response = client.get("/r/0", headers={"X-POSTHOG-DISTINCT-ID": "user-0"})
    assert response.status_code == 200
    (event,) = events_of(inst, devserver)
    assert event["distinct_id"] == "user-0"  # the header still applies


def test_the_distinct_id_callback_wins_over_the_header(
    inst: phactor.Instance, devserver: Any
) -> None:
    seen: list[bool] = []

    def from_query(request: Any) -> Any:
        seen.append(isinstance(request, flask.Request))
        return request.args.get("as")

    client = make_app(inst.name, distinct_id=from_query).test_client()
    client.get("/r/0?as=logged-in", headers={"X-POSTHOG-DISTINCT-ID": "user-0"})
    client.get("/r/2", headers={"X-POSTHOG-DISTINCT-ID": "user-2"})  # callback: None
    assert [e["distinct_id"] for e in events_of(inst, devserver)] == ["logged-in", "user-2"]
    # Called once per request, with Flask's request (never with the WSGI environ).
    assert seen == [True, True]


def test_one_request_two_projects(devserver: Any, start_instance: Any) -> None:
    first = start_instance(api_key="phc_one", host=devserver.url)
    second = start_instance(api_key="phc_two", host=devserver.url)
    app = flask.Flask(__name__)

    @app.route("/both")
    def both() -> str:
        first.capture("one")
        second.capture("two")
        raise KeyError("both")

    PhactorFlask(app, [first.name, second.name])
    assert app.test_client().get("/both", headers=headers_for(0)).status_code == 500
    assert first.flush(10) and second.flush(10)
    by_key = {
        key: sorted(e["event"] for e in devserver.events(api_key=key))
        for key in ("phc_one", "phc_two")
    }
    assert by_key == {"phc_one": ["$exception", "one"], "phc_two": ["$exception", "two"]}
    assert {e["distinct_id"] for e in devserver.events()} == {"user-0"}


def test_installing_twice_on_one_app_is_refused(inst: phactor.Instance) -> None:
    app = make_app(inst.name)
    with pytest.raises(RuntimeError, match="already installed"):
        PhactorFlask(app, inst.name)


def test_the_scope_ends_with_a_failed_request_and_the_extension_captures_it_itself(
    devserver: Any, start_instance: Any
) -> None:
    # Error tracking off: no logging handler; the extension's own capture is what sends it.
    instance = start_instance(api_key="phc_test", host=devserver.url, enable_error_tracking=False)
    client = make_app(instance.name).test_client()
    assert client.get("/boom", headers={"X-POSTHOG-DISTINCT-ID": "u"}).status_code == 500
    assert phactor.get_context(instance=instance.name) == {}
    assert [(e["event"], e["distinct_id"]) for e in events_of(instance, devserver)] == [
        ("$exception", "u")
    ]
