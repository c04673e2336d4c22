"""TLS against a real HTTPS server on loopback, with a throwaway CA made for the test.

The `verify` option must win over REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE (requests lets those
override `Session.verify`), for delivery and for both flag endpoints; `verify=True` must refuse
a server its CA store does not know, as a counted, retried connection error.
"""

from __future__ import annotations

import gzip
import logging
import shutil
import ssl
import subprocess
import threading
import time
import warnings
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import orjson
import pytest
from conftest import StartInstance
from conftest import assert_ledger as ledger
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from phactor._log import get_logger
from phactor.flags.http import FlagsHttp
from phactor.flags.remote import build_flags_request

API_KEY = "phc_tls_project_key_0123456789"
PERSONAL_KEY = "phx_tls_personal_key_0123456789"
ENV_BUNDLES = ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")


class Certs(NamedTuple):
    ca: str  # the CA that signed the server certificate
    other_ca: str  # a valid CA bundle that did not
    server_cert: str
    server_key: str


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def _make_ca(directory: Path, name: str) -> None:
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "2",
        "-subj", f"/CN=phactor test {name}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=directory,
    )  # fmt: skip


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    """A CA, a server certificate for 127.0.0.1/localhost signed by it, and an unrelated CA."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a throwaway CA")
    directory = tmp_path_factory.mktemp("tls")
    try:
        _make_ca(directory, "ca")
        _make_ca(directory, "other")
        _openssl(
            "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost",
            cwd=directory,
        )  # fmt: skip
        (directory / "server.ext").write_text(
            "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
            "basicConstraints=critical,CA:FALSE\n"
            "keyUsage=critical,digitalSignature\n"
            "extendedKeyUsage=serverAuth\n"
            "subjectKeyIdentifier=hash\n"
            "authorityKeyIdentifier=keyid,issuer\n"
        )
        _openssl(
            "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "server.ext",
            cwd=directory,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError) as error:
        pytest.skip(f"openssl could not make the test certificates: {error}")
    return Certs(
        str(directory / "ca.pem"),
        str(directory / "other.pem"),
        str(directory / "server.pem"),
        str(directory / "server.key"),
    )


class TlsEndpoint(NamedTuple):
    url: str
    server: HTTPServer
    uuids: Counter[str]


@pytest.fixture
def https(certs: Certs) -> Iterator[TlsEndpoint]:
    """A loopback HTTPS server with the endpoints phactor calls: /batch/, /flags/, definitions."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certs.server_cert, certs.server_key)
    server = HTTPServer(host="127.0.0.1", port=0, ssl_context=context, threaded=True)
    uuids: Counter[str] = Counter()

    def batch(request: Request) -> Response:
        body = request.get_data()
        if request.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        uuids.update(event["uuid"] for event in orjson.loads(body)["batch"])
        return Response('{"status":1}', 200, content_type="application/json")

    server.expect_request("/batch/", method="POST").respond_with_handler(batch)
    server.expect_request("/flags/", method="POST").respond_with_json(
        {"flags": {"beta": {"key": "beta", "enabled": True, "variant": None}}}
    )
    server.expect_request("/flags/definitions", method="GET").respond_with_json({"flags": []})
    server.start()
    try:
        yield TlsEndpoint(f"https://127.0.0.1:{server.port}", server, uuids)
    finally:
        server.stop()


def _options(**overrides: Any) -> dict[str, Any]:
    options: dict[str, Any] = {
        "api_key": API_KEY,
        "flush_at": 10,
        "flush_interval": 3600,
        "senders": 1,
        "max_retries": 2,
        "retry_base_delay": 0.01,
        "retry_max_delay": 0.05,
        "request_timeout": 3.0,
        "enable_error_tracking": False,
    }
    options.update(overrides)
    return options


def _capture(inst: Any, n: int) -> list[str]:
    return [inst.capture("ev", "user", {"i": i}) for i in range(n)]


@pytest.fixture(autouse=True)
def _no_env_bundles(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENV_BUNDLES:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(autouse=True)
def _quiet_insecure_warning() -> Iterator[None]:
    # verify=False makes urllib3 warn on every request; the warning is the app's to see, not ours.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Unverified HTTPS request")
        yield


@pytest.mark.parametrize("env_name", ENV_BUNDLES)
@pytest.mark.parametrize("verify", ["ca", False])
def test_verify_option_wins_over_a_ca_bundle_from_the_environment(
    https: TlsEndpoint,
    certs: Certs,
    start_instance: StartInstance,
    monkeypatch: pytest.MonkeyPatch,
    env_name: str,
    verify: str | bool,
) -> None:
    monkeypatch.setenv(env_name, certs.other_ca)  # a valid bundle, just not the server's CA
    inst = start_instance(host=https.url, **_options(verify=certs.ca if verify else False))
    uuids = _capture(inst, 10)
    assert inst.flush(10)
    assert https.uuids == Counter(uuids)
    s = ledger(inst)
    assert s["sent"] == 10 and s["retries"] == 0 and s["dropped"] == {}


def test_verify_true_still_takes_the_environment_bundle(
    https: TlsEndpoint, certs: Certs, start_instance: StartInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    # verify=True means "the default trust store", which REQUESTS_CA_BUNDLE names when set.
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", certs.ca)
    inst = start_instance(host=https.url, **_options(verify=True))
    uuids = _capture(inst, 10)
    assert inst.flush(10)
    assert https.uuids == Counter(uuids)


def test_verify_true_refuses_an_unknown_ca_as_a_counted_retryable_error(
    https: TlsEndpoint, start_instance: StartInstance, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="phactor")
    inst = start_instance(host=https.url, **_options(verify=True, max_retries=1))
    _capture(inst, 10)
    assert inst.flush(5) is False
    s = ledger(inst)
    # Not sent, not dropped: retried as a connection error, then back in the queue.
    assert s["sent"] == 0 and s["dropped"] == {} and s["retries"] >= 1
    assert s["queued"] + s["in_flight"] == 10
    assert not https.uuids and not https.server.log  # no request got past the handshake
    requeued = [r.getMessage() for r in caplog.records if "batch_requeued" in r.getMessage()]
    assert requeued and "SSLError" in requeued[0] and "CERTIFICATE_VERIFY_FAILED" in requeued[0]


def _flags_http(url: str, verify: bool | str) -> FlagsHttp:
    return FlagsHttp(
        url,
        api_key=API_KEY,
        personal_api_key=PERSONAL_KEY,
        flags_timeout=3.0,
        definitions_timeout=3.0,
        verify=verify,
        log=get_logger("flags", instance="tls-test"),
    )


@pytest.mark.parametrize("verify", ["ca", False])
def test_flag_requests_use_the_verify_option_over_the_environment(
    https: TlsEndpoint, certs: Certs, monkeypatch: pytest.MonkeyPatch, verify: str | bool
) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", certs.other_ca)
    http = _flags_http(https.url, certs.ca if verify else False)
    try:
        remote = http.post_flags(build_flags_request(API_KEY, "user", flag_keys=["beta"]))
        assert remote.error is None and remote.results["beta"].value is True
        assert http.fetch_definitions(None).outcome == "loaded"
    finally:
        http.close()


def test_flag_requests_refuse_an_unknown_ca_with_verify_true(https: TlsEndpoint) -> None:
    http = _flags_http(https.url, True)
    try:
        remote = http.post_flags(build_flags_request(API_KEY, "user", flag_keys=["beta"]))
        assert remote.error == "connection_error" and remote.unresolved == {
            "beta": "connection_error"
        }
        fetch = http.fetch_definitions(None)
        assert (fetch.outcome, fetch.detail) == ("failed", "connection_error")
    finally:
        http.close()
    assert not https.server.log


def test_a_missing_ca_bundle_is_a_connection_error_not_an_exception_in_the_app(
    https: TlsEndpoint, tmp_path: Path
) -> None:
    # Validated at start(), but the file can vanish later (a rotated secret mount).
    http = _flags_http(https.url, str(tmp_path / "gone.pem"))
    try:
        remote = http.post_flags(build_flags_request(API_KEY, "user", flag_keys=["beta"]))
        assert remote.error == "connection_error"
        assert http.fetch_definitions(None).outcome == "failed"
    finally:
        http.close()


def test_a_dripping_answer_over_tls_is_cut_at_the_deadline(certs: Certs) -> None:
    # The deadline shuts the socket under a TLS read as under a plain one.
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certs.server_cert, certs.server_key)
    server = HTTPServer(host="127.0.0.1", port=0, ssl_context=context, threaded=True)
    stop = threading.Event()

    def drip(request: Request) -> Response:
        def body() -> Iterator[bytes]:
            for _ in range(600):  # ~30 s, one byte per 50 ms; ends early when the test is done
                if stop.wait(0.05):
                    return
                yield b" "

        return Response(body(), 200, content_type="application/json")

    server.expect_request("/flags/", method="POST").respond_with_handler(drip)
    server.start()
    http = FlagsHttp(
        f"https://127.0.0.1:{server.port}",
        api_key=API_KEY,
        personal_api_key=None,
        flags_timeout=0.5,
        definitions_timeout=0.5,
        verify=certs.ca,
        log=get_logger("flags", instance="tls-test"),
    )
    result: list[Any] = []
    body = build_flags_request(API_KEY, "user", flag_keys=["beta"])
    worker = threading.Thread(target=lambda: result.append(http.post_flags(body)), daemon=True)
    started = time.monotonic()
    worker.start()
    worker.join(6.0)  # two attempts of 0.5 s; the dripped answer alone takes ~30 s
    elapsed = time.monotonic() - started
    stop.set()
    http.close()
    server.stop()
    assert not worker.is_alive(), f"post_flags() still blocked after {elapsed:.1f} s"
    assert result[0].error == "timeout" and len(server.log) == 2
