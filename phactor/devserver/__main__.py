"""Run the dev server from a shell: ``python -m phactor.devserver [--port 8010] [--db FILE]``.

The first line on stdout is the server's URL (with the real port when ``--port 0``), so a script or
test can read it; the server then runs until Ctrl-C or SIGTERM and exits with status 0.
"""

from __future__ import annotations

import argparse
import math
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from types import FrameType
from typing import Any

import orjson

from phactor.devserver import DevServer, limits


def _positive(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive int, got {text}")
    return value


def _seconds(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative number of seconds, got {text}")
    return value


def _positive_seconds(text: str) -> float:
    value = _seconds(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be a positive number of seconds, got 0")
    return value


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative int, got {text}")
    return value


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m phactor.devserver",
        description="A local PostHog-compatible endpoint that stores events in SQLite.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (127.0.0.1)")
    parser.add_argument("--port", type=int, default=8010, help="port, 0 for a free one (8010)")
    parser.add_argument(
        "--db", default=":memory:", help="SQLite file to keep events in (default: in memory)"
    )
    no_limit_with_db = " (default: {} in memory, no limit with --db FILE)"
    # flag, type, default, help: the limits (docs/devserver.md), one line each
    options: list[tuple[str, Callable[[str], Any], Any, str]] = [
        (
            "--max-body-bytes",
            _positive,
            limits.DEFAULT_MAX_BODY_BYTES,
            "largest body accepted, on the wire and decompressed; 413 beyond (20 MiB)",
        ),
        (
            "--max-events",
            _non_negative,
            None,
            "most events kept, the oldest evicted first; 0 for no limit"
            + no_limit_with_db.format(limits.DEFAULT_MAX_EVENTS),
        ),
        (
            "--max-stored-bytes",
            _non_negative,
            None,
            "most bytes of event JSON kept, the oldest evicted first; 0 for no limit"
            + no_limit_with_db.format(limits.DEFAULT_MAX_STORED_BYTES),
        ),
        (
            "--max-requests",
            _positive,
            limits.DEFAULT_MAX_REQUESTS,
            f"requests kept in the request log ({limits.DEFAULT_MAX_REQUESTS})",
        ),
        (
            "--max-connections",
            _positive,
            limits.DEFAULT_MAX_CONNECTIONS,
            f"connections served at once, 503 beyond ({limits.DEFAULT_MAX_CONNECTIONS})",
        ),
        (
            "--read-timeout",
            _positive_seconds,
            limits.DEFAULT_READ_TIMEOUT,
            f"seconds for a request to arrive in full, 408 beyond ({limits.DEFAULT_READ_TIMEOUT:g})",
        ),
        (
            "--idle-timeout",
            _seconds,
            limits.DEFAULT_IDLE_TIMEOUT,
            f"seconds a kept-alive connection may idle; 0 for no limit ({limits.DEFAULT_IDLE_TIMEOUT:g})",
        ),
    ]
    for flag, kind, default, text in options:
        parser.add_argument(flag, type=kind, default=default, help=text)
    parser.add_argument(
        "--flags",
        default=None,
        help='JSON object served by POST /flags/, e.g. \'{"beta": true, "exp": "variant-a"}\'',
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Serve until SIGINT or SIGTERM; returns the process exit status."""
    args = _parse_args(argv)
    flags = None
    if args.flags is not None:
        try:
            flags = orjson.loads(args.flags)
        except orjson.JSONDecodeError as exc:
            print(f"--flags is not JSON: {exc}", file=sys.stderr)
            return 2
        if not isinstance(flags, dict):
            print("--flags must be a JSON object", file=sys.stderr)
            return 2

    in_memory = args.db == ":memory:"
    if args.max_events is None:
        max_events = limits.DEFAULT_MAX_EVENTS if in_memory else None
    else:
        max_events = args.max_events or None
    if args.max_stored_bytes is None:
        max_stored_bytes = limits.DEFAULT_MAX_STORED_BYTES if in_memory else None
    else:
        max_stored_bytes = args.max_stored_bytes or None

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        server = DevServer(
            host=args.host,
            port=args.port,
            db=args.db,
            flags=flags,
            max_body_bytes=args.max_body_bytes,
            max_events=max_events,
            max_stored_bytes=max_stored_bytes,
            max_requests=args.max_requests,
            max_connections=args.max_connections,
            read_timeout=args.read_timeout,
            idle_timeout=args.idle_timeout or None,
        ).start()
    except OSError as exc:
        print(f"cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    print(server.url, flush=True)
    print(
        f"phactor devserver: POST {server.url}/batch/ ; open {server.url}/ in a browser to see"
        " the events live ; Ctrl-C to stop",
        file=sys.stderr,
        flush=True,
    )
    try:
        # A timed wait keeps the main thread responsive to signals on every platform.
        while not stop.wait(0.5):
            pass
    finally:
        server.stop()
    print(
        f"phactor devserver: stopped, {server.count()} events stored, {server.evicted} evicted",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
