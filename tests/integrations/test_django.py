"""The Django middleware against real Django (test clients, sync and async views), events posted
to the loopback devserver."""

from __future__ import annotations

import asyncio
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

django = pytest.importorskip("django")

from django.conf import settings  # noqa: E402

if not settings.configured:
    settings.configure(
        DEBUG=False,
        SECRET_KEY="phactor-tests",
        ALLOWED_HOSTS=["*"],
        ROOT_URLCONF=__name__,
        MIDDLEWARE=["phactor.integrations.django.PhactorMiddleware"],
        INSTALLED_APPS=[],
        PHACTOR_MIDDLEWARE={},
        USE_TZ=True,
    )
    django.setup()

from django.core.exceptions import PermissionDenied  # noqa: E402
from django.http import Http404, HttpResponse, StreamingHttpResponse  # noqa: E402
from django.test import AsyncClient, Client, override_settings  # noqa: E402
from django.urls import path  # noqa: E402

import phactor  # noqa: E402

STATE: dict[str, str] = {}


def leak_view(request: Any, i: int) -> HttpResponse:
    view(i, STATE["instance"])
    return HttpResponse("ok")


def boom(request: Any) -> HttpResponse:
    raise ValueError("view failed")


async def aboom(request: Any) -> HttpResponse:
    raise ValueError("async view failed")


async def aview(request: Any, i: int) -> HttpResponse:
    view(i, STATE["instance"])
    return HttpResponse("ok")


def missing(request: Any) -> HttpResponse:
    raise Http404("no such thing")


def forbidden(request: Any) -> HttpResponse:
    raise PermissionDenied()


def stream(request: Any) -> StreamingHttpResponse:
    name = STATE["instance"]
    phactor.set_context({"streamed": True}, instance=name)

    def body() -> Any:
        phactor.capture("chunk", instance=name)
        yield b"a"
        phactor.capture("chunk", instance=name)
        yield b"b"

    return StreamingHttpResponse(body())


async def astream(request: Any) -> StreamingHttpResponse:
    name = STATE["instance"]
    phactor.set_context({"streamed": True}, instance=name)

    async def body() -> Any:
        phactor.capture("chunk", instance=name)
        yield b"a"
        phactor.capture("chunk", instance=name)
        yield b"b"

    return StreamingHttpResponse(body())


urlpatterns = [
    path("astream", astream),
    path("r/<int:i>", leak_view),
    path("a/<int:i>", aview),
    path("boom", boom),
    path("aboom", aboom),
    path("missing", missing),
    path("forbidden", forbidden),
    path("stream", stream),
]


@pytest.fixture
def inst(devserver: Any, start_instance: Any) -> Any:
    instance = start_instance(api_key="phc_test", host=devserver.url, flush_interval=60)
    STATE["instance"] = instance.name
    with override_settings(PHACTOR_MIDDLEWARE={"instance": instance.name}):
        yield instance


def events_of(inst: phactor.Instance, devserver: Any) -> list[dict[str, Any]]:
    assert inst.flush(10)
    return devserver.events()


def client() -> Client:
    return Client(raise_request_exception=False)


def run_leak_requests() -> None:
    def one(i: int) -> None:
        assert client().get(f"/r/{i}", headers=headers_for(i)).status_code == 200

    with ThreadPoolExecutor(LEAK_WORKERS) as pool:
        list(pool.map(one, range(LEAK_REQUESTS)))


def test_without_the_middleware_context_leaks_between_requests_on_pooled_threads(
    inst: phactor.Instance, devserver: Any
) -> None:
    with override_settings(MIDDLEWARE=[]):
        run_leak_requests()
    assert leak_violations(events_of(inst, devserver))


def test_each_request_event_carries_only_its_own_user_and_context(
    inst: phactor.Instance, devserver: Any
) -> None:
    run_leak_requests()
    events = events_of(inst, devserver)
    assert leak_violations(events) == []
    props = next(e for e in events if e["properties"]["i"] == 4)["properties"]
    assert props["$pathname"] == "/r/4"
    assert props["$current_url"] == "http://testserver/r/4"
    assert props["$host"] == "testserver"
    assert props["$request_method"] == "GET"
    assert props["$ip"] == "127.0.0.1"


def test_async_views_get_the_request_context_and_nothing_leaks_between_tasks(
    inst: phactor.Instance, devserver: Any
) -> None:
    async def main() -> None:
        async def one(i: int) -> None:
            response = await AsyncClient().get(f"/a/{i}", headers=headers_for(i))
            assert response.status_code == 200

        for start in range(0, 40, 8):
            await asyncio.gather(*(one(i) for i in range(start, start + 8)))

    asyncio.run(main())
    assert leak_violations(events_of(inst, devserver), 40, prefix="/a/") == []


def test_a_view_exception_becomes_one_exception_event_with_the_request_context(
    inst: phactor.Instance, devserver: Any
) -> None:
    response = client().get(
        "/boom", headers={"X-POSTHOG-DISTINCT-ID": "user-9", "X-POSTHOG-SESSION-ID": "s-9"}
    )
    assert response.status_code == 500  # Django's own error handling is untouched
    events = events_of(inst, devserver)
    # django.request logs the same exception: it is not sent a second time.
    assert [e["event"] for e in events] == ["$exception"]
    (exc,) = events
    assert exc["distinct_id"] == "user-9"
    assert exc["properties"]["$session_id"] == "s-9"
    assert exc["properties"]["$current_url"] == "http://testserver/boom"
    assert exc["properties"]["$exception_list"][0]["type"] == "ValueError"


def test_an_async_view_exception_is_captured_once_with_the_request_context(
    inst: phactor.Instance, devserver: Any
) -> None:
    async def main() -> int:
        response = await AsyncClient(raise_request_exception=False).get(
            "/aboom", headers={"X-POSTHOG-DISTINCT-ID": "user-a"}
        )
        return int(response.status_code)

    assert asyncio.run(main()) == 500
    events = events_of(inst, devserver)
    assert [(e["event"], e["distinct_id"]) for e in events] == [("$exception", "user-a")]


def test_the_exception_reaches_the_test_client_unchanged(inst: phactor.Instance) -> None:
    with pytest.raises(ValueError, match="view failed"):
        Client().get("/boom")


def test_http404_and_permission_denied_are_not_captured(
    inst: phactor.Instance, devserver: Any
) -> None:
    assert client().get("/missing").status_code == 404
    assert client().get("/forbidden").status_code == 403
    assert client().get("/r/0").status_code == 200
    assert [e["event"] for e in events_of(inst, devserver)] == ["viewed"]


def test_a_streamed_response_runs_in_the_request_context_which_ends_with_it(
    inst: phactor.Instance, devserver: Any
) -> None:
    response = client().get("/stream", headers={"X-POSTHOG-DISTINCT-ID": "streamer"})
    assert b"".join(response.streaming_content) == b"ab"
    chunks = events_of(inst, devserver)
    assert [e["event"] for e in chunks] == ["chunk", "chunk"]
    assert all(e["distinct_id"] == "streamer" and e["properties"]["streamed"] for e in chunks)
    assert phactor.get_context(instance=inst.name) == {}


def test_a_raising_distinct_id_callback_never_breaks_the_request(
    inst: phactor.Instance, devserver: Any
) -> None:
    def hostile(request: Any) -> str:
        raise RuntimeError("callback bug")

    with override_settings(PHACTOR_MIDDLEWARE={"instance": inst.name, "distinct_id": hostile}):
        response = client().get("/r/0", headers={"X-POSTHOG-DISTINCT-ID": "user-0"})
    assert response.status_code == 200
    (event,) = events_of(inst, devserver)
    assert event["distinct_id"] == "user-0"


class LoggedInUser:
    is_authenticated = True
    pk = 42


def attach_user_middleware(get_response: Any) -> Any:
    """Stands in for AuthenticationMiddleware (no database in these tests)."""

    def middleware(request: Any) -> Any:
        request.user = LoggedInUser()
        return get_response(request)

    return middleware


def test_the_user_callback_wins_over_the_header(inst: phactor.Instance, devserver: Any) -> None:
    options = {"instance": inst.name, "distinct_id": "phactor.integrations.django.user_id"}
    with override_settings(
        PHACTOR_MIDDLEWARE=options,
        MIDDLEWARE=[f"{__name__}.attach_user_middleware", *settings.MIDDLEWARE],
    ):
        client().get("/r/0", headers={"X-POSTHOG-DISTINCT-ID": "user-0"})
    (event,) = events_of(inst, devserver)
    assert event["distinct_id"] == "42"


def test_a_bad_option_names_itself(inst: phactor.Instance) -> None:
    with (
        override_settings(PHACTOR_MIDDLEWARE={"instanse": "x"}),
        pytest.raises(phactor.ConfigError, match="PHACTOR_MIDDLEWARE"),
    ):
        Client().get("/r/0")


def test_view_exceptions_are_captured_by_the_middleware_not_only_by_logging(
    devserver: Any, start_instance: Any
) -> None:
    # Error tracking off: no logging handler; the middleware's own capture is what sends it.
    instance = start_instance(api_key="phc_test", host=devserver.url, enable_error_tracking=False)
    STATE["instance"] = instance.name
    with override_settings(PHACTOR_MIDDLEWARE={"instance": instance.name}):
        assert client().get("/boom", headers={"X-POSTHOG-DISTINCT-ID": "u"}).status_code == 500
    assert [(e["event"], e["distinct_id"]) for e in events_of(instance, devserver)] == [
        ("$exception", "u")
    ]
    assert phactor.get_context(instance=instance.name) == {}  # the scope ended with the request


def test_an_async_streamed_response_runs_in_the_request_context(
    inst: phactor.Instance, devserver: Any
) -> None:
    async def main() -> bytes:
        response = await AsyncClient().get("/astream", headers={"X-POSTHOG-DISTINCT-ID": "as"})
        body = b"".join([chunk async for chunk in response.streaming_content])
        assert phactor.get_context(instance=inst.name) == {}
        return body

    assert asyncio.run(main()) == b"ab"
    chunks = events_of(inst, devserver)
    assert [(e["event"], e["distinct_id"]) for e in chunks] == [("chunk", "as")] * 2
    assert all(e["properties"]["streamed"] for e in chunks)
