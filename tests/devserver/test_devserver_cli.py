"""python -m phactor.devserver: serving, stopping on SIGTERM, options and their checks."""

from __future__ import annotations

import signal
import socket
import time
from pathlib import Path

import requests
from devserver_client import batch, cli_refuses, cli_server, event, post_head, read_response

from phactor.devserver import DevServer


def test_cli_serves_and_stops_on_sigterm(tmp_path: Path) -> None:
    db = tmp_path / "cli.sqlite"
    with cli_server("--db", str(db)) as (process, url):
        assert url.startswith("http://127.0.0.1:")
        assert requests.post(url + "/batch/", json=batch(event("cli")), timeout=5).ok
        listing = requests.get(url + "/api/events", params={"event": "cli"}, timeout=5).json()
        assert listing["count"] == 1
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
    with DevServer(db=db) as reopened:
        assert [e["event"] for e in reopened.events()] == ["cli"]


def test_cli_rejects_bad_flags_json() -> None:
    assert "--flags" in cli_refuses("--flags", "{nope").stderr


LIMITS = ("--max-body-bytes", "2048", "--max-events", "2", "--max-stored-bytes", "100000")


def test_cli_limits_options() -> None:
    with cli_server(*LIMITS) as (process, url):
        big = batch(event(pad="x" * 4000))
        assert requests.post(url + "/batch/", json=big, timeout=5).status_code == 413
        three = batch(event("a"), event("b"), event("c"))
        assert requests.post(url + "/batch/", json=three, timeout=5).ok
        status = requests.get(url + "/", timeout=5).json()
        assert (status["events"], status["evicted"]) == (2, 1)
        assert 0 < status["stored_bytes"] <= 100_000
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
    assert "--max-events" in cli_refuses("--max-events", "-1").stderr


TIMEOUTS = ("--read-timeout", "0.5", "--idle-timeout", "0", "--max-connections", "8")


def test_cli_timeouts_and_connection_options() -> None:
    with cli_server(*TIMEOUTS) as (process, url):
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(post_head(Content_Length="100") + b"{")
            started = time.monotonic()
            assert read_response(sock)[0] == 408
            assert time.monotonic() - started < 5
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
    for bad in ("nan", "0", "-1"):
        assert "--read-timeout" in cli_refuses("--read-timeout", bad).stderr
