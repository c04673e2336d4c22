"""What a framework middleware adds to each request: phactor's vs the `posthog` package's.

    python -m benchmarks.middleware            # ~20 s
    python -m benchmarks.middleware --quick    # a smoke run (CI)

One process, one run: the same trivial view (returns a response, captures nothing) is called
directly and through each middleware, alternating in rounds; the figure is the median per-request
time with the middleware minus the median without, in microseconds. The middlewares are called as
their framework calls them (Django: `middleware(request)` with a RequestFactory request; ASGI:
`await middleware(scope, receive, send)` inside one event loop; WSGI: `middleware(environ,
start_response)` and the body consumed and closed), so the framework's own dispatch, the same with
or without, is not part of the difference. The request carries a user agent, a forwarded-for
header and PostHog's distinct-id and session headers, so both clients do their full extraction.

phactor runs with a started test-mode instance (its context is entered and left per request);
posthog with its default (module-level) client setup and tracing headers on.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

TARGET_US = 25.0
HEADERS = {
    "User-Agent": "Mozilla/5.0 (X11; Linux x86_64) bench/1.0",
    "X-Forwarded-For": "203.0.113.7",
    "X-POSTHOG-DISTINCT-ID": "user-123",
    "X-POSTHOG-SESSION-ID": "0190aaaa-bbbb-7ccc-8ddd-eeeeffff0000",
}


def per_call_us(fn: Callable[[], Any], n: int) -> float:
    start = time.perf_counter_ns()
    for _ in range(n):
        fn()
    return (time.perf_counter_ns() - start) / n / 1000


def compare(cases: dict[str, Callable[[], Any]], n: int, rounds: int) -> dict[str, float]:
    """Median µs per call of each case, the cases alternating within every round."""
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for fn in cases.values():
        per_call_us(fn, max(n // 10, 10))  # warm up
    for _ in range(rounds):
        for name, fn in cases.items():
            samples[name].append(per_call_us(fn, n))
    return {name: statistics.median(values) for name, values in samples.items()}


def django_cases() -> dict[str, Callable[[], Any]]:
    from django.conf import settings

    if not settings.configured:
        settings.configure(
            DEBUG=False,
            SECRET_KEY="bench",
            ALLOWED_HOSTS=["*"],
            ROOT_URLCONF=__name__,
            PHACTOR_MIDDLEWARE={"instance": "default"},
        )
        import django

        django.setup()
    from django.http import HttpResponse
    from django.test import RequestFactory
    from posthog.integrations.django import PosthogContextMiddleware

    from phactor.integrations.django import PhactorMiddleware

    def view(request: Any) -> Any:
        return HttpResponse(b"ok")

    request = RequestFactory().get("/items/42", headers=HEADERS)
    bare, ours, theirs = view, PhactorMiddleware(view), PosthogContextMiddleware(view)
    return {
        "django_bare": lambda: bare(request),
        "django_phactor": lambda: ours(request),
        "django_posthog": lambda: theirs(request),
    }


def asgi_cases(loop: asyncio.AbstractEventLoop) -> dict[str, Callable[[], Any]]:
    from posthog.integrations.asgi import PosthogASGIMiddleware

    from phactor.integrations.asgi import PhactorASGIMiddleware

    start = {"type": "http.response.start", "status": 200, "headers": []}
    body = {"type": "http.response.body", "body": b"ok"}

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send(start)
        await send(body)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        return None

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "https",
        "path": "/items/42",
        "raw_path": b"/items/42",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"shop.example")]
        + [(k.lower().encode(), v.encode()) for k, v in HEADERS.items()],
        "client": ("10.0.0.2", 50000),
        "server": ("10.0.0.1", 443),
    }

    def runner(asgi_app: Any) -> Callable[[], Any]:
        # n requests per loop entry, so the loop's own cost is not counted per request.
        async def many(n: int) -> None:
            for _ in range(n):
                await asgi_app(scope, receive, send)

        return lambda: loop.run_until_complete(many(100))

    return {
        "asgi_bare": runner(app),
        "asgi_phactor": runner(PhactorASGIMiddleware(app)),
        "asgi_posthog": runner(PosthogASGIMiddleware(app)),
    }


def wsgi_cases() -> dict[str, Callable[[], Any]]:
    from phactor.integrations.wsgi import PhactorWSGIMiddleware

    def app(environ: Any, start_response: Any) -> Any:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return iter([b"ok"])

    environ = {
        "REQUEST_METHOD": "GET",
        "SCRIPT_NAME": "",
        "PATH_INFO": "/items/42",
        "QUERY_STRING": "",
        "SERVER_NAME": "shop.example",
        "SERVER_PORT": "443",
        "REMOTE_ADDR": "10.0.0.2",
        "wsgi.url_scheme": "https",
        "HTTP_HOST": "shop.example",
        **{"HTTP_" + k.upper().replace("-", "_"): v for k, v in HEADERS.items()},
    }

    def start_response(status: str, headers: Any) -> None:
        return None

    def call(wsgi_app: Any) -> Callable[[], Any]:
        def one() -> None:
            body = wsgi_app(environ, start_response)
            for _ in body:
                pass
            close = getattr(body, "close", None)
            if close is not None:
                close()

        return one

    return {"wsgi_bare": call(app), "wsgi_phactor": call(PhactorWSGIMiddleware(app))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.middleware")
    parser.add_argument("--quick", action="store_true", help="a smoke run of a few seconds")
    parser.add_argument("--output", type=Path, help="also write the figures as JSON here")
    args = parser.parse_args(argv)
    n, rounds = (200, 3) if args.quick else (5000, 9)

    import posthog

    import phactor

    posthog.disabled = True  # the module client never sends; its middleware still runs fully
    phactor.start("default", test_mode=True, enable_error_tracking=False)
    loop = asyncio.new_event_loop()
    try:
        medians = compare(django_cases(), n, rounds)
        # ASGI cases run 100 requests per call.
        medians.update(
            {k: v / 100 for k, v in compare(asgi_cases(loop), n // 100 or 1, rounds).items()}
        )
        medians.update(compare(wsgi_cases(), n, rounds))
    finally:
        loop.close()
        phactor.stop("default", timeout=1)

    added = {
        "django_phactor": medians["django_phactor"] - medians["django_bare"],
        "django_posthog": medians["django_posthog"] - medians["django_bare"],
        "asgi_phactor": medians["asgi_phactor"] - medians["asgi_bare"],
        "asgi_posthog": medians["asgi_posthog"] - medians["asgi_bare"],
        "wsgi_phactor": medians["wsgi_phactor"] - medians["wsgi_bare"],
    }
    print("middleware cost per request (µs added to a trivial view, median)")
    print(f"{'framework':<10} {'phactor':>9} {'posthog':>9} {'target':>8}")
    for framework in ("django", "asgi", "wsgi"):
        ours = added[f"{framework}_phactor"]
        theirs = added.get(f"{framework}_posthog")
        shown = f"{theirs:9.2f}" if theirs is not None else f"{'-':>9}"
        print(f"{framework:<10} {ours:9.2f} {shown} {'<= ' + str(int(TARGET_US)):>8}")
    result = {
        "mode": "quick" if args.quick else "full",
        "n": n,
        "rounds": rounds,
        "median_us_per_request": medians,
        "added_us_per_request": added,
        "target_us": TARGET_US,
        "python": sys.version.split()[0],
    }
    if args.output:
        args.output.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
