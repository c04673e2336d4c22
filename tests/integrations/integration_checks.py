"""Shared by the framework integration tests: the request plan of the leak test and its check.

Request i of the leak test: users alternate (even i sends `X-POSTHOG-DISTINCT-ID: user-i`, odd i
sends no header: the view falls back to `anon-i`, as an app does for a visitor); every third request's view calls `set_context({"req_tag": i})`
itself, without a scope — what leaked to the next request on a pooled thread before the
integrations. Every event must carry only its own request's values.
"""

from __future__ import annotations

from typing import Any

LEAK_REQUESTS = 200
LEAK_WORKERS = 4


def headers_for(i: int) -> dict[str, str]:
    return {"X-POSTHOG-DISTINCT-ID": f"user-{i}"} if i % 2 == 0 else {}


def sets_context(i: int) -> bool:
    return i % 3 == 0


def view(i: int, instance: str) -> None:
    """What the view of leak-test request i does (sync frameworks; ASGI apps inline it)."""
    import phactor

    if sets_context(i):
        phactor.set_context({"req_tag": i}, instance=instance)
    distinct_id = phactor.get_context(instance=instance).get("distinct_id") or f"anon-{i}"
    phactor.capture("viewed", distinct_id, {"i": i}, instance=instance)


def leak_violations(
    events: list[dict[str, Any]], n: int = LEAK_REQUESTS, prefix: str = "/r/"
) -> list[str]:
    """What is wrong with the `viewed` events of the leak test (empty: each event carries its
    own request's user, tag and path, and there is exactly one per request)."""
    problems: list[str] = []
    seen: dict[int, int] = {}
    for event in events:
        if event["event"] != "viewed":
            continue
        props = event["properties"]
        i = props["i"]
        seen[i] = seen.get(i, 0) + 1
        if i % 2 == 0:
            if event["distinct_id"] != f"user-{i}":
                problems.append(f"request {i}: distinct_id {event['distinct_id']!r}")
        elif event["distinct_id"] != f"anon-{i}":
            problems.append(f"request {i}: distinct_id {event['distinct_id']!r}, not anon-{i}")
        if props.get("req_tag") != (i if sets_context(i) else None):
            problems.append(f"request {i}: req_tag {props.get('req_tag')!r}")
        if props.get("$pathname", f"{prefix}{i}") != f"{prefix}{i}":
            problems.append(f"request {i}: $pathname {props.get('$pathname')!r}")
    missing = [i for i in range(n) if seen.get(i) != 1]
    if missing:
        problems.append(f"requests without exactly one event: {missing[:10]}")
    return problems
