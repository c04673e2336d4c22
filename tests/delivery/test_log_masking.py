"""No key ever reaches a log line phactor emits, nor the error text handed to `on_error`.

A proxy that echoes the request (headers, URL and body) in its error answer is the hostile
case: the project key is in the batch body and the /flags body and the definitions URL
(`?token=`); the personal key in the definitions request's Authorization header.
"""

from __future__ import annotations

import gzip
import json
import logging
import urllib.parse
from collections.abc import Iterator

import pytest
from conftest import StartInstance, wait_until
from hypothesis import given
from hypothesis import strategies as st
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from phactor import DeliveryError
from phactor._log import get_logger, mask_secrets, register_secrets, secret_forms
from phactor.config import mask

API_KEY = "phc_echoed_project_key_0123456789abcdef"
PERSONAL_KEY = "phx_echoed_personal_key_0123456789abcdef"
KEYS = (API_KEY, PERSONAL_KEY)


class Echo:
    """A loopback server answering every request with `status` and the request echoed back."""

    def __init__(self, status: int) -> None:
        self.status = status
        self.paths: list[str] = []
        self.server = HTTPServer(host="127.0.0.1", port=0, threaded=True)
        self.server.expect_request("").respond_with_handler(self._echo)
        self.server.start()
        self.url = f"http://127.0.0.1:{self.server.port}"

    def _echo(self, request: Request) -> Response:
        body = request.get_data()
        if request.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        self.paths.append(request.path)
        echoed = {  # the body early: the key must fall inside what phactor logs of an answer
            "error": "upstream said no",
            "body": body.decode("utf-8", "replace"),
            "request": f"{request.method} {request.full_path}",
            "headers": dict(request.headers),
        }
        return Response(json.dumps(echoed), self.status, content_type="application/json")


@pytest.fixture(params=[400, 401, 500])
def echo(request: pytest.FixtureRequest) -> Iterator[Echo]:
    server = Echo(request.param)
    try:
        yield server
    finally:
        server.server.stop()


def _leaks(text: str) -> list[str]:
    return [key for key in KEYS if key in text]


def test_no_key_in_any_log_line_or_error_text_against_an_echoing_server(
    echo: Echo,
    start_instance: StartInstance,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)  # everything, from every logger phactor writes to
    errors: list[DeliveryError] = []
    inst = start_instance(
        api_key=API_KEY,
        personal_api_key=PERSONAL_KEY,
        host=echo.url,
        debug=True,
        flush_at=5,
        flush_interval=3600,
        senders=1,
        max_retries=1,
        retry_base_delay=0.01,
        retry_max_delay=0.05,
        poll_interval=3600,
        enable_error_tracking=False,
        on_error=lambda error, events: errors.append(error),
    )
    for i in range(5):
        inst.capture("ev", "user", {"i": i})
    inst.flush(5)
    assert inst.get_feature_flag("beta", "user") is None  # /flags answered with the echo
    assert wait_until(lambda: "/flags/definitions" in echo.paths or echo.paths.count("/flags/") > 0)
    assert wait_until(
        lambda: any("flag_definitions_failed" in r.getMessage() for r in caplog.records)
        or any("flag_definitions_unauthorized" in r.getMessage() for r in caplog.records)
    )
    inst.stop(timeout=2)

    # phactor's own lines, and urllib3's DEBUG lines about phactor's requests (they show the
    # definitions URL and its ?token=). The test server's own access log is not ours.
    records = [r for r in caplog.records if r.name.split(".")[0] in ("phactor", "urllib3")]
    assert any(r.name.startswith("urllib3") for r in records)
    # The hostile answers did reach the logs (masked), so the check below means something.
    messages = [r.getMessage() for r in records]
    assert any("remote_flags_failed" in m and "upstream said no" in m for m in messages)
    assert any(("batch_dropped" in m or "batch_requeued" in m) and "upstream said" in m for m in messages)
    assert any(mask(API_KEY) in m for m in messages)
    assert not [m for m in messages if _leaks(m)]
    formatter = logging.Formatter()
    assert not [r for r in records if _leaks(formatter.format(r))]  # tracebacks too
    stderr = capsys.readouterr().err
    assert "remote_flags_failed" in stderr and not _leaks(stderr)  # debug=True output
    if echo.status in (400, 401):
        assert errors and all("upstream said no" in e.message for e in errors)
    assert not [e for e in errors if _leaks(str(e)) or _leaks(e.message)]


def test_a_logged_traceback_is_masked_too(caplog: pytest.LogCaptureFixture) -> None:
    register_secrets(API_KEY, PERSONAL_KEY)
    log = get_logger("flags", instance="masking-test")
    caplog.set_level(logging.DEBUG, logger="phactor")
    try:
        raise ValueError(f"proxy said: GET /flags/definitions?token={API_KEY} ({PERSONAL_KEY})")
    except ValueError as error:
        log.exception("flag_load_failed", error=repr(error), url=f"/x?token={API_KEY}")
    assert "flag_load_failed" in caplog.text and "ValueError" in caplog.text
    assert not _leaks(caplog.text)
    assert not [r for r in caplog.records if _leaks(r.getMessage())]


# --- the pure masking function, over the class of inputs -------------------------------------

_secrets = st.text(
    alphabet=st.characters(min_codepoint=32, max_codepoint=0x2FF), min_size=8, max_size=60
)


@given(secret=_secrets, before=st.text(max_size=40), after=st.text(max_size=40))
def test_mask_secrets_removes_a_secret_in_every_encoding_it_travels_in(
    secret: str, before: str, after: str
) -> None:
    forms = {
        secret,
        urllib.parse.quote(secret, safe=""),  # a query string (?token=...)
        urllib.parse.quote_plus(secret),  # what requests' params= sends
        json.dumps(secret)[1:-1],  # a JSON body, ASCII-escaped
        json.dumps(secret, ensure_ascii=False)[1:-1],
        repr(secret)[1:-1],  # repr() of a str, or of an exception holding it
    }
    for form in forms:
        masked = mask_secrets(f"{before}{form}{after}", [secret])
        assert not [f for f in forms if f in masked], masked


@given(text=st.text(max_size=200), secret=_secrets)
def test_mask_secrets_leaves_text_without_a_secret_unchanged(text: str, secret: str) -> None:
    if not [form for form in secret_forms(secret) if form in text]:
        assert mask_secrets(text, [secret]) == text


def test_short_values_are_not_treated_as_secrets() -> None:
    # A key shorter than 8 characters cannot be a real one, and masking it would garble text.
    assert mask_secrets("event=phc_k sent", ["phc_k", "", None]) == "event=phc_k sent"
