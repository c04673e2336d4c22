"""What a request contributes to events (pure functions of phactor.integrations._request), for
any header values a client can send; and that no framework is imported unless asked for."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from phactor.errors import ConfigError
from phactor.integrations._request import (
    MAX_VALUE_CHARS,
    TrustedProxies,
    asgi_properties,
    clean,
    clean_distinct_id,
    is_expected_http_error,
    wsgi_properties,
)

ALLOWED = {
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
CONTROL = {chr(c) for c in [*range(0x20), *range(0x7F, 0xA0)]}

header_text = st.text(
    st.characters(codec="latin-1") | st.sampled_from(["\x00", "\x7f", "\x85", " ", "\t"]),
    max_size=1500,
)


def assert_clean(value: str) -> None:
    assert value == value.strip()
    assert 0 < len(value) <= 2 * MAX_VALUE_CHARS + 100
    assert not CONTROL & set(value)


@given(st.one_of(st.text(max_size=3000), st.binary(), st.integers(), st.none()))
def test_clean_keeps_only_trimmed_printable_bounded_text(value: Any) -> None:
    cleaned = clean(value)
    if cleaned is None:
        return
    assert isinstance(value, str)
    assert len(cleaned) <= MAX_VALUE_CHARS
    assert_clean(cleaned)


@given(
    headers=st.dictionaries(
        st.sampled_from(
            [
                "HTTP_X_POSTHOG_DISTINCT_ID",
                "HTTP_X_POSTHOG_SESSION_ID",
                "HTTP_X_POSTHOG_WINDOW_ID",
                "HTTP_USER_AGENT",
                "HTTP_HOST",
                "HTTP_X_FORWARDED_FOR",
                "PATH_INFO",
                "REMOTE_ADDR",
                "REQUEST_METHOD",
                "QUERY_STRING",
            ]
        ),
        header_text,
    ),
    trusted=st.booleans(),
)
def test_wsgi_requests_give_only_the_listed_clean_properties(
    headers: dict[str, str], trusted: bool
) -> None:
    environ = {"wsgi.url_scheme": "http", "SERVER_NAME": "srv", "SERVER_PORT": "80", **headers}
    for secret in ("HTTP_COOKIE", "HTTP_AUTHORIZATION", "HTTP_X_OTHER", "QUERY_STRING"):
        environ[secret] = "s3cr3t"
    props = wsgi_properties(environ, TrustedProxies(["0.0.0.0/0"]) if trusted else None)
    assert set(props) <= ALLOWED
    for value in props.values():
        assert_clean(value)
        assert "s3cr3t" not in value


@given(
    headers=st.lists(
        st.tuples(
            st.sampled_from(
                [
                    b"x-posthog-distinct-id",
                    b"X-PostHog-Session-Id",
                    b"x-posthog-window-id",
                    b"user-agent",
                    b"host",
                    b"x-forwarded-for",
                    b"cookie",
                    b"authorization",
                    b"x-other",
                ]
            ),
            header_text.map(lambda t: t.encode("latin-1")),
        ),
        max_size=12,
    ),
    path=st.text(max_size=3000),
)
def test_asgi_requests_give_only_the_listed_clean_properties(
    headers: list[tuple[bytes, bytes]], path: str
) -> None:
    secrets = [(b"cookie", b"s3cr3t"), (b"authorization", b"s3cr3t"), (b"x-other", b"s3cr3t")]
    scope = {
        "type": "http",
        "method": "GET",
        "scheme": "https",
        "path": path,
        "query_string": b"s3cr3t",
        "headers": [*headers, *secrets],
    }
    props = asgi_properties(scope, None)
    assert set(props) <= ALLOWED
    for value in props.values():
        assert_clean(value)
        assert "s3cr3t" not in value or "s3cr3t" in path or any(
            b"s3cr3t" in v for _, v in headers
        )
    first_usable = next(
        (
            clean(v.decode("latin-1"))
            for k, v in headers
            if k.lower() == b"x-posthog-distinct-id" and clean(v.decode("latin-1"))
        ),
        None,
    )
    assert props.get("distinct_id") == first_usable


def test_malformed_scopes_and_environs_are_ignored_not_errors() -> None:
    assert asgi_properties({"headers": [b"bad", (b"x", None), 3], "client": None}, None) == {
        "$pathname": "/"
    }
    assert wsgi_properties({"REQUEST_METHOD": 7, "HTTP_HOST": b"x"}, None) == {"$pathname": "/"}
    assert wsgi_properties({"PATH_INFO": b"/bytes", "SCRIPT_NAME": None}, None) == {
        "$pathname": "/"
    }


ips = st.ip_addresses().map(str)


@given(client=ips, proxies=st.lists(ips, max_size=4), peer=ips)
def test_forwarded_for_gives_the_first_untrusted_hop_from_the_right(
    client: str, proxies: list[str], peer: str
) -> None:
    header = ", ".join([client, *proxies])
    # Peer and every hop after the client trusted: the client (also when it is trusted too:
    # then every hop is trusted and the first hop is the client).
    assert TrustedProxies([*proxies, peer]).client_ip(peer, header) == client
    # A peer that is not a trusted proxy: its own address, whatever the header says.
    assert TrustedProxies([p for p in proxies if p != peer]).client_ip(peer, header) == peer
    # A malformed hop: the header is ignored.
    assert TrustedProxies([peer]).client_ip(peer, f"not-an-ip, {client}") == peer


def test_without_trusted_proxies_the_header_is_never_believed() -> None:
    props = wsgi_properties({"REMOTE_ADDR": "10.1.1.1", "HTTP_X_FORWARDED_FOR": "1.2.3.4"}, None)
    assert props["$ip"] == "10.1.1.1"
    trusted = TrustedProxies(["10.0.0.0/8"])
    props = wsgi_properties(
        {"REMOTE_ADDR": "10.1.1.1", "HTTP_X_FORWARDED_FOR": "1.2.3.4, 10.2.2.2"}, trusted
    )
    assert props["$ip"] == "1.2.3.4"


@pytest.mark.parametrize("bad", ["10.0.0.0/8", [1], ["not an ip"], None, 5])
def test_bad_trusted_proxies_raise_config_error_naming_the_option(bad: Any) -> None:
    with pytest.raises(ConfigError, match="trusted_proxies"):
        TrustedProxies(bad)


@given(st.one_of(st.text(max_size=50), st.integers(), st.uuids(), st.booleans(), st.floats()))
def test_distinct_ids_from_callbacks_are_text_or_nothing(value: Any) -> None:
    result = clean_distinct_id(value)
    if isinstance(value, (bool, float)):
        assert result is None
    elif result is not None:
        assert_clean(result)


def test_expected_http_errors_are_recognised_by_class_without_imports() -> None:
    starlette = pytest.importorskip("starlette.exceptions")
    werkzeug = pytest.importorskip("werkzeug.exceptions")
    NotFound, InternalServerError = werkzeug.NotFound, werkzeug.InternalServerError
    StarletteHTTPException = starlette.HTTPException

    assert is_expected_http_error(NotFound())
    assert not is_expected_http_error(InternalServerError())
    assert is_expected_http_error(StarletteHTTPException(403))
    assert not is_expected_http_error(StarletteHTTPException(502))
    assert not is_expected_http_error(ValueError())


def test_import_phactor_and_its_request_integrations_import_no_framework() -> None:
    code = (
        "import sys, phactor, phactor.integrations.wsgi, phactor.integrations.asgi, "
        "phactor.integrations._request\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in "
        "('django', 'flask', 'werkzeug', 'starlette', 'fastapi', 'celery', 'kombu', "
        "'asgiref', 'httpx', 'billiard', '_pytest', 'pytest')]\n"
        "print(bad)\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
