"""LLM analytics through `phactor.compat`: the posthog package's OpenAI wrapper, given one of our
`Posthog` clients, delivers `$ai_generation` events through phactor.

A fake OpenAI chat-completions endpoint runs on loopback (pytest-httpserver); the events go to a
DevServer. The same call through the posthog package's own client is the reference: the two
`$ai_generation` events must agree field by field, ignoring uuid, timestamp, `$lib`/
`$lib_version` and what differs per call (`$ai_latency`, a generated `$ai_trace_id`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import posthog
import pytest
from pytest_httpserver import HTTPServer

from phactor.compat import Posthog
from phactor.devserver import DevServer

openai_wrapper = pytest.importorskip("posthog.ai.openai")

COMPLETION = {
    "id": "chatcmpl-test",
    "object": "chat.completion",
    "created": 1_700_000_000,
    "model": "gpt-test-mini",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hello from the fake model."},
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18},
}
# `$context_tags` lists the property names that came from the posthog package's own context
# (`posthog.tag`): its client adds it, phactor's context is its own.
PER_CALL = {"$ai_latency", "$ai_trace_id", "$lib", "$lib_version", "$context_tags"}


@pytest.fixture
def fake_openai(httpserver: HTTPServer) -> Iterator[HTTPServer]:
    httpserver.expect_request("/v1/chat/completions", method="POST").respond_with_json(COMPLETION)
    yield httpserver


def generation(client: Any, openai_server: HTTPServer, **call: Any) -> Any:
    llm = openai_wrapper.OpenAI(
        posthog_client=client, api_key="sk-test", base_url=openai_server.url_for("/v1")
    )
    return llm.chat.completions.create(
        model="gpt-test-mini", messages=[{"role": "user", "content": "Say hello"}], **call
    )


def ai_events(server: DevServer, client: Any) -> list[dict[str, Any]]:
    client.flush()
    assert server.wait_for(1)
    return [e["raw"] for e in server.events(event="$ai_generation")]


@pytest.mark.parametrize(
    "call",
    [
        {"posthog_distinct_id": "user-7", "posthog_properties": {"feature": "chat"}},
        {"posthog_groups": {"company": "acme"}, "posthog_trace_id": "trace-1"},
    ],
    ids=["identified", "personless-with-groups"],
)
def test_openai_wrapper_delivers_ai_generation_through_phactor(
    fake_openai: HTTPServer, devserver: DevServer, call: dict[str, Any]
) -> None:
    reference = posthog.Posthog("phc_llm", host=devserver.url, sync_mode=True)
    try:
        answer = generation(reference, fake_openai, **call)
        (theirs,) = ai_events(devserver, reference)
    finally:
        reference.shutdown()
    devserver.clear()

    ours_client = Posthog("phc_llm", host=devserver.url, sync_mode=True)
    try:
        answer_ours = generation(ours_client, fake_openai, **call)
        (ours,) = ai_events(devserver, ours_client)
    finally:
        ours_client.shutdown()

    assert answer_ours.choices[0].message.content == answer.choices[0].message.content
    props = ours["properties"]
    assert ours["event"] == "$ai_generation"
    assert props["$ai_model"] == "gpt-test-mini"
    assert props["$ai_input_tokens"] == 11 and props["$ai_output_tokens"] == 7
    assert props["$ai_output_choices"][0]["content"][0]["text"] == "Hello from the fake model."

    if "posthog_distinct_id" in call:
        assert ours["distinct_id"] == theirs["distinct_id"] == "user-7"
    else:  # personless: a fresh uuid in each
        assert props["$process_person_profile"] is False
    if "posthog_trace_id" in call:
        assert props["$ai_trace_id"] == theirs["properties"]["$ai_trace_id"] == "trace-1"
    theirs_props = theirs["properties"]
    differ = {
        key: (props.get(key, "<missing>"), theirs_props.get(key, "<missing>"))
        for key in set(props) | set(theirs_props)
        if key not in PER_CALL and props.get(key, "<missing>") != theirs_props.get(key, "<missing>")
    }
    assert differ == {}
