"""The ASGI middleware: a plain ASGI app driven as a server's connection tasks would, and real
Starlette (TestClient); events posted to the loopback devserver."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from integration_checks import (
    LEAK_REQUESTS,
    LEAK_WORKERS,
    headers_for,
    leak_violations,
    sets_context,
)

import phactor
from phactor.integrations.asgi import PhactorASGIMiddleware


def plain_app(name: str) -> Any:
    """A bare ASGI app: /r/<i> is the leak test's view, /boom raises, /stream streams."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        path = scope["path"]
        if path == "/boom":
            raise ValueError("app failed")
        await send({"type": "http.response.start", "status": 200, "headers": []})
        if path == "/stream":
            phactor.set_context({"streamed": True}, instance=name)
            for chunk in (b"a", b"b"):
                await asyncio.sleep(0)
                phactor.capture("chunk", instance=name)
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
            return
        i = int(path.rsplit("/", 1)[1])
        if sets_context(i):
            phactor.set_context({"req_tag": i}, instance=name)
        await asyncio.sleep(0)  # let the other connections' requests interleave
        distinct_id = phactor.get_context(instance=name).get("distinct_id") or f"anon-{i}"
        phactor.capture("viewed", distinct_id, {"i": i}, instance=name)
        await send({"type": "http.response.body", "body": b"ok"})

    return app


def http_scope(path: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "https",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"shop.example")]
        + [(k.lower().encode(), v.encode("latin-1")) for k, v in (headers or {}).items()],
        "client": ("192.0.2.7", 50000),
        "server": ("10.0.0.1", 443),
    }


async def call(app: Any, scope: dict[str, Any]) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


def serve_on_connection_tasks(app: Any) -> None:
    """LEAK_WORKERS tasks, each serving its share of the requests one after the other (as a
    server's keep-alive connection does), all of them at once."""

    async def connection(worker: int) -> None:
        for i in range(worker, LEAK_REQUESTS, LEAK_WORKERS):
            await call(app, http_scope(f"/r/{i}", headers_for(i)))

    async def main() -> None:
        await asyncio.gather(*(connection(w) for w in range(LEAK_WORKERS)))

    asyncio.run(main())


@pytest.fixture
def inst(devserver: Any, start_instance: Any) -> phactor.Instance:
    return start_instance(api_key="phc_test", host=devserver.url, flush_interval=60)


def events_of(inst: phactor.Instance, devserver: Any) -> list[dict[str, Any]]:
    assert inst.flush(10)
    return devserver.events()


def test_without_the_middleware_context_leaks_between_requests_of_one_task(
    inst: phactor.Instance, devserver: Any
) -> None:
    serve_on_connection_tasks(plain_app(inst.name))
    assert leak_violations(events_of(inst, devserver))


def test_each_request_event_carries_only_its_own_user_and_context(
    inst: phactor.Instance, devserver: Any
) -> None:
    serve_on_connection_tasks(PhactorASGIMiddleware(plain_app(inst.name), inst.name))
    events = events_of(inst, devserver)
    assert leak_violations(events) == []
    props = next(e for e in events if e["properties"]["i"] == 4)["properties"]
    assert props["$current_url"] == "https://shop.example/r/4"
    assert props["$host"] == "shop.example"
    assert props["$request_method"] == "GET"
    assert props["$ip"] == "192.0.2.7"


def test_an_escaping_exception_is_captured_once_and_re_raised_unchanged(
    inst: phactor.Instance, devserver: Any
) -> None:
    app = PhactorASGIMiddleware(plain_app(inst.name), inst.name)
    scope = http_scope("/boom", {"X-POSTHOG-DISTINCT-ID": "u-1", "X-POSTHOG-SESSION-ID": "s-1"})
    with pytest.raises(ValueError, match="app failed"):
        asyncio.run(call(app, scope))
    (event,) = events_of(inst, devserver)
    assert event["event"] == "$exception"
    assert event["distinct_id"] == "u-1"
    assert event["properties"]["$session_id"] == "s-1"
    assert event["properties"]["$current_url"] == "https://shop.example/boom"


def test_a_streaming_response_is_sent_inside_the_request_context(
    inst: phactor.Instance, devserver: Any
) -> None:
    app = PhactorASGIMiddleware(plain_app(inst.name), inst.name)

    async def main() -> list[dict[str, Any]]:
        sent = await call(app, http_scope("/stream", {"X-POSTHOG-DISTINCT-ID": "streamer"}))
        assert phactor.get_context(instance=inst.name) == {}  # ended with the response
        return sent

    sent = asyncio.run(main())
    assert b"".join(m.get("body", b"") for m in sent) == b"ab"
    chunks = events_of(inst, devserver)
    assert [(e["event"], e["distinct_id"]) for e in chunks] == [("chunk", "streamer")] * 2
    assert all(e["properties"]["streamed"] for e in chunks)


def test_an_async_distinct_id_callback_wins_over_the_header(
    inst: phactor.Instance, devserver: Any
) -> None:
    async def who(scope: dict[str, Any]) -> str:
        await asyncio.sleep(0)
        return "from-session"

    app = PhactorASGIMiddleware(plain_app(inst.name), inst.name, distinct_id=who)
    asyncio.run(call(app, http_scope("/r/0", headers_for(0))))
    (event,) = events_of(inst, devserver)
    assert event["distinct_id"] == "from-session"


def test_a_raising_distinct_id_callback_never_breaks_the_request(
    inst: phactor.Instance, devserver: Any
) -> None:
    def hostile(scope: dict[str, Any]) -> str:
        raise RuntimeError("callback bug")

    app = PhactorASGIMiddleware(plain_app(inst.name), inst.name, distinct_id=hostile)
    sent = asyncio.run(call(app, http_scope("/r/0", headers_for(0))))
    assert sent[0]["status"] == 200
    (event,) = events_of(inst, devserver)
    assert event["distinct_id"] == "user-0"


def test_lifespan_and_websocket_scopes_pass_through_untouched(inst: phactor.Instance) -> None:
    seen: list[dict[str, Any]] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen.append(scope)
        assert phactor.get_context(instance=inst.name) == {}

    middleware = PhactorASGIMiddleware(app, inst.name)
    lifespan = {"type": "lifespan", "asgi": {"version": "3.0"}}
    websocket = {**http_scope("/ws"), "type": "websocket"}
    asyncio.run(middleware(lifespan, None, None))  # type: ignore[arg-type]
    asyncio.run(middleware(websocket, None, None))  # type: ignore[arg-type]
    assert seen == [lifespan, websocket]
    assert seen[0] is lifespan and seen[1] is websocket


# -- Starlette ------------------------------------------------------------------------------


def starlette_app(name: str, **options: Any) -> Any:
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.responses import PlainTextResponse, StreamingResponse
    from starlette.routing import Route, WebSocketRoute

    async def viewed(request: Any) -> Any:
        i = int(request.path_params["i"])
        if sets_context(i):
            phactor.set_context({"req_tag": i}, instance=name)
        distinct_id = phactor.get_context(instance=name).get("distinct_id") or f"anon-{i}"
        phactor.capture("viewed", distinct_id, {"i": i}, instance=name)
        return PlainTextResponse("ok")

    async def boom(request: Any) -> Any:
        raise ValueError("endpoint failed")

    async def missing(request: Any) -> Any:
        raise HTTPException(status_code=404)

    async def stream(request: Any) -> Any:
        async def body() -> Any:
            for chunk in ("a", "b"):
                phactor.capture("chunk", instance=name)
                yield chunk

        return StreamingResponse(body())

    async def socket(websocket: Any) -> None:
        await websocket.accept()
        phactor.capture("ws", "ws-user", instance=name)
        await websocket.send_text("hi")
        await websocket.close()

    app = Starlette(
        routes=[
            Route("/r/{i}", viewed),
            Route("/boom", boom),
            Route("/missing", missing),
            Route("/stream", stream),
            WebSocketRoute("/ws", socket),
        ]
    )
    app.add_middleware(PhactorASGIMiddleware, instance=name, **options)
    return app


def test_starlette_requests_get_their_own_context(inst: phactor.Instance, devserver: Any) -> None:
    testclient = pytest.importorskip("starlette.testclient")
    with testclient.TestClient(starlette_app(inst.name)) as client:  # runs the lifespan too
        for i in range(20):
            assert client.get(f"/r/{i}", headers=headers_for(i)).status_code == 200
        assert client.get("/stream", headers={"X-POSTHOG-DISTINCT-ID": "s"}).text == "ab"
        with client.websocket_connect("/ws") as ws:
            assert ws.receive_text() == "hi"
    events = events_of(inst, devserver)
    assert leak_violations([e for e in events if e["event"] == "viewed"], 20) == []
    assert [e["distinct_id"] for e in events if e["event"] == "chunk"] == ["s", "s"]
    (ws_event,) = [e for e in events if e["event"] == "ws"]
    assert "$pathname" not in ws_event["properties"]  # the websocket scope is not touched
    event = next(e for e in events if e["event"] == "viewed")
    assert event["properties"]["$current_url"] == "http://testserver/r/0"


def test_starlette_endpoint_exceptions_are_captured_once_http_exceptions_not(
    inst: phactor.Instance, devserver: Any
) -> None:
    testclient = pytest.importorskip("starlette.testclient")
    client = testclient.TestClient(starlette_app(inst.name), raise_server_exceptions=False)
    assert client.get("/missing").status_code == 404
    response = client.get("/boom", headers={"X-POSTHOG-DISTINCT-ID": "u-5"})
    assert response.status_code == 500  # Starlette's own error handling is untouched
    events = events_of(inst, devserver)
    assert [(e["event"], e["distinct_id"]) for e in events] == [("$exception", "u-5")]
    with pytest.raises(ValueError, match="endpoint failed"):
        testclient.TestClient(starlette_app(inst.name)).get("/boom")


def test_one_request_two_projects(devserver: Any, start_instance: Any) -> None:
    first = start_instance(api_key="phc_one", host=devserver.url)
    second = start_instance(api_key="phc_two", host=devserver.url)

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        first.capture("one")
        second.capture("two")
        raise KeyError("both")

    middleware = PhactorASGIMiddleware(app, [first.name, second.name])
    with pytest.raises(KeyError):
        asyncio.run(call(middleware, http_scope("/x", headers_for(0))))
    assert first.flush(10) and second.flush(10)
    by_key = {
        key: sorted(e["event"] for e in devserver.events(api_key=key))
        for key in ("phc_one", "phc_two")
    }
    assert by_key == {"phc_one": ["$exception", "one"], "phc_two": ["$exception", "two"]}
    assert {e["distinct_id"] for e in devserver.events()} == {"user-0"}


header_names = st.sampled_from(
    [
        b"x-posthog-distinct-id",
        b"x-posthog-session-id",
        b"x-posthog-window-id",
        b"host",
        b"user-agent",
        b"x-forwarded-for",
        b"cookie",
    ]
)
header_items = st.one_of(
    st.tuples(header_names, st.binary(max_size=1200)),
    st.tuples(header_names, st.text(max_size=20)),  # not bytes: a broken server
    st.just((b"only-one",)),
    st.none(),
)


def test_any_headers_give_a_normal_response_and_clean_context(start_test_mode: Any) -> None:
    inst = start_test_mode()
    allowed = {
        "$current_url",
        "$host",
        "$pathname",
        "$request_method",
        "$ip",
        "$user_agent",
        "distinct_id",
        "$session_id",
        "$window_id",
    }

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        scope["seen"] = phactor.get_context(instance=inst.name)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    middleware = PhactorASGIMiddleware(app, inst.name, trusted_proxies=["::/0", "0.0.0.0/0"])

    @given(
        headers=st.lists(header_items, max_size=8),
        client=st.one_of(st.none(), st.tuples(st.text(max_size=50), st.integers())),
    )
    def check(headers: list[Any], client: Any) -> None:
        scope = {**http_scope("/p"), "headers": headers, "client": client}
        sent = asyncio.run(call(middleware, scope))
        assert sent[0]["status"] == 200
        context = scope["seen"]
        assert set(context) <= allowed
        for value in context.values():
            assert isinstance(value, str) and value == value.strip() and len(value) <= 2100
            assert not any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in value)

    check()
