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
from collections.abc import Sequence
from types import FrameType

import orjson

from phactor.devserver import (
    DEFAULT_IDLE_TIMEOUT,
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_EVENTS,
    DEFAULT_MAX_REQUESTS,
    DEFAULT_MAX_STORED_BYTES,
    DEFAULT_READ_TIMEOUT,
    DevServer,
)


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
    parser.add_argument(
        "--max-body-bytes",
        type=_positive,
        default=DEFAULT_MAX_BODY_BYTES,
        help="largest body accepted, on the wire and decompressed; 413 beyond (20 MiB)",
    )
    parser.add_argument(
        "--max-events",
        type=_non_negative,
        default=None,
        help=f"most events kept, the oldest evicted first; 0 for no limit"
        f" (default: {DEFAULT_MAX_EVENTS} in memory, no limit with --db FILE)",
    )
    parser.add_argument(
        "--max-stored-bytes",
        type=_non_negative,
        default=None,
        help=f"most bytes of event JSON kept, the oldest evicted first; 0 for no limit"
        f" (default: {DEFAULT_MAX_STORED_BYTES} in memory, no limit with --db FILE)",
    )
    parser.add_argument(
        "--max-requests",
        type=_positive,
        default=DEFAULT_MAX_REQUESTS,
        help=f"requests kept in the request log ({DEFAULT_MAX_REQUESTS})",
    )
    parser.add_argument(
        "--max-connections",
        type=_positive,
        default=DEFAULT_MAX_CONNECTIONS,
        help=f"connections served at once, 503 beyond ({DEFAULT_MAX_CONNECTIONS})",
    )
    parser.add_argument(
        "--read-timeout",
        type=_positive_seconds,
        default=DEFAULT_READ_TIMEOUT,
        help=f"seconds for a request to arrive in full, 408 beyond ({DEFAULT_READ_TIMEOUT:g})",
    )
    parser.add_argument(
        "--idle-timeout",
        type=_seconds,
        default=DEFAULT_IDLE_TIMEOUT,
        help=f"seconds a kept-alive connection may idle; 0 for no limit ({DEFAULT_IDLE_TIMEOUT:g})",
    )
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
        max_events = DEFAULT_MAX_EVENTS if in_memory else None
    else:
        max_events = args.max_events or None
    if args.max_stored_bytes is None:
        max_stored_bytes = DEFAULT_MAX_STORED_BYTES if in_memory else None
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
        f"phactor devserver: POST {server.url}/batch/ ; list at {server.url}/api/events ;"
        " Ctrl-C to stop",
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
