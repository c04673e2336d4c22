"""Proxy, CA bundle and netrc settings from the environment: read once per session, at start.

requests' ``trust_env`` looks them up on every request (proxies, NO_PROXY, ~/.netrc, the CA
bundle variables: ~10% of a Sender's CPU). phactor reads them when the session is made and
runs with ``trust_env`` off: HTTP(S)_PROXY / ALL_PROXY / NO_PROXY and REQUESTS_CA_BUNDLE /
CURL_CA_BUNDLE still mean what they mean to requests (checked here against requests' own
per-request resolution, and end to end through a real loopback forward proxy), and ~/.netrc
never replaces our Authorization header nor adds one of its own.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from unittest import mock

import orjson
import pytest
import requests
from conftest import StartInstance
from hypothesis import given
from hypothesis import strategies as st
from requests.utils import select_proxy

from phactor._http import environment
from phactor.devserver import DevServer

API_KEY = "phc_environment_project_key_0123456789"
PERSONAL_KEY = "phx_environment_personal_key_0123456789"
PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")
ALL_VARS = (
    *PROXY_VARS,
    *(v.lower() for v in PROXY_VARS),
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "NETRC",
)


class ForwardProxy:
    """A CONNECT-less HTTP forward proxy that answers every request itself (200, as PostHog)
    and records the absolute URL it was asked for."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                proxy.seen.append(("POST", self.path))
                body = b'{"status":1}'
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def proxy() -> Iterator[ForwardProxy]:
    server = ForwardProxy()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ALL_VARS:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_http_proxy_from_the_environment_is_used_and_read_once_at_start(
    clean_env: pytest.MonkeyPatch, proxy: ForwardProxy, start_instance: StartInstance
) -> None:
    clean_env.setenv("HTTP_PROXY", proxy.url)
    # A host nothing resolves: only a proxy can deliver to it.
    inst = start_instance(api_key=API_KEY, host="http://ingest.phactor-proxy.invalid", gzip=False)
    inst.capture("through proxy", "user-1")
    assert inst.flush(5)
    # Read once when the Sender's session was made: unsetting it later changes nothing.
    clean_env.delenv("HTTP_PROXY")
    inst.capture("still through proxy", "user-1")
    assert inst.flush(5)
    assert proxy.seen == [("POST", "http://ingest.phactor-proxy.invalid/batch/")] * 2
    assert inst.stats()["sent"] == 2


def test_no_proxy_is_honoured(
    clean_env: pytest.MonkeyPatch,
    proxy: ForwardProxy,
    devserver: DevServer,
    start_instance: StartInstance,
) -> None:
    clean_env.setenv("HTTP_PROXY", proxy.url)
    clean_env.setenv("NO_PROXY", "localhost,127.0.0.1")
    inst = start_instance(api_key=API_KEY, host=devserver.url, gzip=False)
    inst.capture("direct", "user-1")
    assert inst.flush(5)
    assert devserver.count() == 1
    assert proxy.seen == []


def _netrc(tmp_path: Path) -> str:
    path = tmp_path / "netrc"
    path.write_text("machine 127.0.0.1 login netrc-user password netrc-secret\n")
    path.chmod(0o600)
    return str(path)


def test_netrc_never_overrides_our_authorization_nor_adds_its_own(
    clean_env: pytest.MonkeyPatch, tmp_path: Path, start_instance: StartInstance
) -> None:
    clean_env.setenv("NETRC", _netrc(tmp_path))
    server = DevServer(personal_api_key=PERSONAL_KEY).start()
    try:
        server.set_flag_definitions({"flags": [], "group_type_mapping": {}, "cohorts": {}})
        inst = start_instance(
            api_key=API_KEY, host=server.url, personal_api_key=PERSONAL_KEY, gzip=False
        )
        assert inst.reload_feature_flags(timeout=5)
        inst.capture("with netrc", "user-1")
        assert inst.flush(5)
        inst.get_feature_flag("some-flag", "user-1")  # no local definition: asks /flags
        seen = {r.endpoint: r.headers for r in server.requests}
    finally:
        server.stop()
    assert {"capture", "definitions", "flags"} <= set(seen)
    auth = {endpoint: _header(headers, "Authorization") for endpoint, headers in seen.items()}
    assert auth["definitions"] == f"Bearer {PERSONAL_KEY}"
    assert auth["capture"] is None
    assert auth["flags"] is None


def _header(headers: Any, name: str) -> str | None:
    for key, value in dict(headers).items():
        if key.lower() == name.lower():
            return str(value)
    return None


# --- the same answers as requests' per-request lookups -------------------------------------------

_hosts = st.sampled_from(
    ["http://127.0.0.1:8000", "https://us.i.posthog.com", "https://eu.example.org:8443"]
)
_proxy_urls = st.sampled_from(["http://proxy.local:3128", "http://10.1.2.3:8080", ""])
_no_proxy = st.sampled_from(
    ["", "127.0.0.1", "localhost,127.0.0.1", ".posthog.com", "example.org", "*", "10.0.0.0/8"]
)
_bundles = st.sampled_from(["", "/etc/ssl/certs/bundle.pem", "/opt/ca"])


@given(
    host=_hosts,
    env=st.fixed_dictionaries(
        {},
        optional={
            "HTTP_PROXY": _proxy_urls,
            "https_proxy": _proxy_urls,
            "ALL_PROXY": _proxy_urls,
            "NO_PROXY": _no_proxy,
            "no_proxy": _no_proxy,
            "REQUESTS_CA_BUNDLE": _bundles,
            "CURL_CA_BUNDLE": _bundles,
        },
    ),
    verify=st.sampled_from([True, False, "/etc/custom-ca.pem"]),
)
def test_settings_read_at_start_match_what_requests_reads_per_request(
    host: str, env: dict[str, str], verify: bool | str
) -> None:
    url = f"{host}/batch/"
    clean = {k: v for k, v in os.environ.items() if k not in ALL_VARS and k.upper() not in ALL_VARS}
    with mock.patch.dict(os.environ, {**clean, **env}, clear=True):
        proxies, resolved_verify = environment(host, verify)
        # What requests computes on every request with trust_env on.
        session = requests.Session()
        expected = session.merge_environment_settings(url, {}, None, verify, None)
    assert select_proxy(url, proxies) == select_proxy(url, expected["proxies"])
    assert resolved_verify == expected["verify"]


def test_environment_is_serialisable_and_small() -> None:
    proxies, verify = environment("https://us.i.posthog.com", True)
    orjson.dumps(proxies)
    assert isinstance(verify, bool | str)
