"""What the devserver tests share: event builders, fixtures, raw-socket and CLI helpers.

Import from it like from conftest (``from devserver_client import ...``); pytest puts this folder
on the path for its test files.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from phactor.devserver import DevServer

KEY = "phc_devserver_test"


def event(name: str = "clicked", distinct_id: str = "user-1", **props: Any) -> dict[str, Any]:
    return {
        "event": name,
        "distinct_id": distinct_id,
        "uuid": str(uuid.uuid4()),
        "timestamp": "2026-01-01T00:00:00.000Z",
        "properties": props,
    }


def batch(*events: dict[str, Any], api_key: str = KEY) -> dict[str, Any]:
    return {"api_key": api_key, "batch": list(events), "sent_at": "2026-01-01T00:00:01.000Z"}


@pytest.fixture(name="server")
def server_fixture() -> Iterator[DevServer]:
    """A started DevServer with default options (``server`` in a test's arguments)."""
    with DevServer() as running:
        yield running


@pytest.fixture(name="session")
def session_fixture() -> Iterator[requests.Session]:
    """A requests.Session, closed after the test (``session`` in a test's arguments)."""
    with requests.Session() as http:
        yield http


def still_serving(server: DevServer) -> bool:
    return requests.post(server.url + "/batch/", json=batch(event()), timeout=5).ok


# -- raw sockets ----------------------------------------------------------------------------


def exchange(server: DevServer, payload: bytes, *, timeout: float = 10.0) -> tuple[int, bytes]:
    """Send raw bytes on a fresh connection; the status and body of the first response.

    Raises TimeoutError when the server neither answers nor closes within ``timeout``.
    """
    with socket.create_connection(("127.0.0.1", server.port), timeout=timeout) as sock:
        sock.sendall(payload)
        return read_response(sock)


def exchange_all(port: int, payload: bytes, *, half_close: bool = False) -> bytes:
    """Send raw bytes on a fresh connection and read until the server closes it.

    With ``half_close`` the client sends EOF after the payload, so the server must not wait for
    more. Raises TimeoutError when the server holds the connection open for 10 s.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(payload)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    return received


def read_response(sock: socket.socket) -> tuple[int, bytes]:
    """The status and body of the next response on ``sock``; status 0 if it closed first."""
    received = b""
    while b"\r\n\r\n" not in received:
        chunk = sock.recv(65536)
        if not chunk:
            return 0, received  # closed without a response
        received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    length = int(
        next(
            (
                line.split(b":")[1]
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            ),
            b"0",
        )
    )
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(head.split(b" ")[1]), body


def post_head(path: str = "/batch/", **headers: str) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: localhost"]
    lines += [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


# -- the CLI --------------------------------------------------------------------------------


@contextlib.contextmanager
def spawned(*argv: str) -> Iterator[subprocess.Popen[str]]:
    """``python *argv`` running unbuffered with text pipes; killed if still running after the
    block (the test ends it itself, e.g. SIGTERM, and checks the exit status), pipes closed."""
    process = subprocess.Popen(
        [sys.executable, *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()


@contextlib.contextmanager
def cli_server(*args: str) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """``python -m phactor.devserver --port 0 *args`` running: the process and its URL."""
    with spawned("-m", "phactor.devserver", "--port", "0", *args) as process:
        assert process.stdout is not None
        yield process, process.stdout.readline().strip()


def cli_refuses(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the CLI with arguments it must refuse; the finished process (exit status 2)."""
    result = subprocess.run(
        [sys.executable, "-m", "phactor.devserver", "--port", "0", *args],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert result.returncode == 2, result.stderr
    return result
