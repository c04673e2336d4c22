"""The body of a child process: run one case for one client and print its result line.

The parent (`spawn.py`) starts `python -m benchmarks.run --child SPEC`; `run.main` hands SPEC to
`child_entry`, which runs the case (or the phactor capture profile) and prints one line,
`RESULT_PREFIX` + JSON, then exits hard.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from typing import Any

from benchmarks.cases_errors import case_errors
from benchmarks.cases_events import case_capture, case_outage, case_throughput
from benchmarks.cases_flagload import case_flagload
from benchmarks.cases_flags import case_flags, case_flags_async, case_flags_down
from benchmarks.cases_floor import FloorClient, RawLoopClient, case_e2e
from benchmarks.cases_pipeline import case_capture_threads, case_host_app
from benchmarks.cases_scale import case_idle, case_log_error
from benchmarks.cases_start import case_start
from benchmarks.cases_threads import case_threads
from benchmarks.client_phactor import PhactorClient, profile_capture
from benchmarks.client_posthog import PosthogClient
from benchmarks.clients import BenchClient, NotAvailable

__all__ = ["CASES", "RESULT_PREFIX", "child_entry", "child_main"]

RESULT_PREFIX = "BENCH_RESULT "

CASES: dict[str, Callable[[BenchClient, str, dict[str, Any]], dict[str, Any]]] = {
    "capture": case_capture,
    "throughput": case_throughput,
    "outage": case_outage,
    "flags": case_flags,
    "flags_down": case_flags_down,
    "flags_async": case_flags_async,
    "flagload": case_flagload,
    "errors": case_errors,
    "start": case_start,
    "idle": case_idle,
    "log_error": case_log_error,
    "threads": case_threads,
    "e2e": case_e2e,
    "capture_threads": case_capture_threads,
    "host_app": case_host_app,
}


def child_main(client_name: str, case: str, sink: str, params: dict[str, Any]) -> dict[str, Any]:
    """Run one case for one client in this (fresh) process and return its result dict."""
    clients: dict[str, Callable[[], BenchClient]] = {
        "phactor": PhactorClient,
        "posthog": PosthogClient,
        "floor": FloorClient,  # the baselines of issue 16 item 7 (cases_floor.py)
        "raw": RawLoopClient,
    }
    if client_name not in clients:
        raise ValueError(f"unknown client {client_name!r}")
    client = clients[client_name]()
    try:
        result = CASES[case](client, sink, params)
    except NotAvailable as e:
        return {"na": str(e)}
    result["client_version"] = client.version
    result["settings"] = client.settings()
    result["pid"] = os.getpid()
    return result


def child_entry(spec_json: str) -> None:
    """Body of a child process: run the case, print the result line, exit hard.

    os._exit skips atexit hooks: a client whose shutdown would retry against a down endpoint
    cannot keep the child alive, and both clients are treated the same way.
    """
    spec = json.loads(spec_json)
    try:
        if spec.get("profile"):
            result: dict[str, Any] = {"profile": profile_capture(spec["sink"], spec["calls"])}
        else:
            result = child_main(spec["client"], spec["case"], spec["sink"], spec["params"])
    except Exception as e:
        import traceback

        result = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()[-3000:]}
    sys.stdout.write(RESULT_PREFIX + json.dumps(result, default=str) + "\n")
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
