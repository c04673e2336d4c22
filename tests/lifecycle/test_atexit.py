"""Interpreter exit drains every running instance (atexit), without stop() and without hanging."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from phactor.devserver import DevServer

ATEXIT_SCRIPT = textwrap.dedent(
    """
    import sys
    import phactor

    url, n = sys.argv[1], int(sys.argv[2])
    phactor.start(api_key="phc_exit_a", host=url, flush_at=10000, flush_interval=3600)
    b = phactor.start("b", api_key="phc_exit_b", host=url, flush_at=10000, flush_interval=3600)
    for i in range(n):
        phactor.capture("queued_at_exit", f"user-{i}")
        b.capture("queued_at_exit_b", f"user-{i}")
    assert phactor.queue_length() == n
    # no stop(): the process just ends
    """
)


def test_atexit_drains_every_instance(devserver: DevServer) -> None:
    n = 250
    result = subprocess.run(
        [sys.executable, "-c", ATEXIT_SCRIPT, devserver.url, str(n)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert devserver.wait_for(2 * n)
    assert devserver.count(api_key="phc_exit_a") == n
    assert devserver.count(api_key="phc_exit_b") == n
    assert set(devserver.uuid_counts().values()) == {1}


def test_atexit_with_an_unreachable_host_still_exits(devserver: DevServer) -> None:
    script = ATEXIT_SCRIPT.replace(
        "phactor.start(api_key", "phactor.start(shutdown_timeout=1.0, api_key"
    ).replace('b = phactor.start("b", ', 'b = phactor.start("b", shutdown_timeout=1.0, ')
    devserver.set_mode("error", status=503)
    result = subprocess.run(
        [sys.executable, "-c", script, devserver.url, "10"],
        capture_output=True,
        text=True,
        timeout=30,  # the exit must respect shutdown_timeout instead of hanging
    )
    assert result.returncode == 0, result.stderr
    assert devserver.count() == 0
