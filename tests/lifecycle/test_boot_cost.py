"""Boot cost (issue 16 item 5): start() imports neither requests nor structlog on the caller's
thread, nor the flag core when no flag poller runs; a Sender imports requests on its own
thread as it starts, and a fork while that import runs waits for it (the child's requests work).

Each check runs in a fresh interpreter (what is imported depends on the process's history)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

from phactor.devserver import DevServer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run(script: str, *args: str, timeout: float = 30) -> dict:
    env = {**os.environ, "PYTHONPATH": ROOT}
    try:
        proc = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(script), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
        )
    except subprocess.TimeoutExpired as expired:  # the hang this file guards against
        raise AssertionError(f"the script hung (> {timeout} s): {expired.stderr!r}") from None
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


START_SCRIPT = """
    import json, sys, threading
    import importlib.abc
    importers = {}

    class Watch(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name in ("requests", "structlog", "phactor.flags.evaluator"):
                importers.setdefault(name, threading.current_thread().name)
            return None

    sys.meta_path.insert(0, Watch())
    import phactor
    phactor.start(api_key="phc_boot", host=sys.argv[1], flush_interval=3600, **json.loads(sys.argv[2]))
    at_start = dict(importers)
    phactor.capture("booted", "user-1")
    ok = phactor.flush(timeout=10)
    print(json.dumps({"at_start": at_start, "after": importers, "flushed": ok}))
"""


def test_start_imports_neither_requests_nor_structlog_nor_the_flag_core(devserver: DevServer):
    # Before: requests and structlog were imported by start() on MainThread, and the flag core
    # (FlagEvaluator) too, although no flag poller runs without a personal key.
    out = run(START_SCRIPT, devserver.url, "{}")
    assert "MainThread" not in out["at_start"].values(), out  # requests: a Sender's, if any
    assert "structlog" not in out["at_start"] and "phactor.flags.evaluator" not in out["at_start"]
    assert out["flushed"] is True
    assert out["after"].get("requests") not in (None, "MainThread"), out  # the Sender's thread
    devserver.wait_for(1, timeout=5)
    assert devserver.count(event="booted") == 1


def test_start_with_error_tracking_off_as_well(devserver: DevServer):
    out = run(START_SCRIPT, devserver.url, json.dumps({"enable_error_tracking": False}))
    assert "MainThread" not in out["at_start"].values(), out
    assert "structlog" not in out["at_start"] and "phactor.flags.evaluator" not in out["at_start"]
    assert out["flushed"] is True


FORK_SCRIPT = """
    import json, os, sys, threading, time
    import importlib.abc

    entered = threading.Event()

    class Slow(importlib.abc.MetaPathFinder):
        # Makes the Sender's import of requests slow, so the fork lands in the middle of it.
        def find_spec(self, name, path=None, target=None):
            if name == "requests.adapters" and threading.current_thread().name != "MainThread":
                entered.set()
                time.sleep(0.5)
            return None

    sys.meta_path.insert(0, Slow())
    import phactor
    phactor.start(api_key="phc_fork", host=sys.argv[1], flush_interval=3600)
    phactor.capture("parent_event", "parent")
    flushing = threading.Thread(target=phactor.flush, kwargs={"timeout": 10})
    flushing.start()
    assert entered.wait(10)  # the Sender is inside requests' import now
    pid = os.fork()
    if pid == 0:
        phactor.capture("child_event", "child")
        os._exit(0 if phactor.flush(timeout=10) else 3)
    _, status = os.waitpid(pid, 0)
    flushing.join(10)
    print(json.dumps({"child_status": status, "parent_ok": phactor.flush(timeout=10)}))
"""


def test_fork_during_the_senders_first_import_leaves_a_working_child(devserver: DevServer):
    # A fork waits for the import in progress; without that, the child inherits requests'
    # half-imported modules and their module locks held by a thread it does not have.
    out = run(FORK_SCRIPT, devserver.url)
    assert out == {"child_status": 0, "parent_ok": True}
    devserver.wait_for(2, timeout=5)
    assert devserver.count(event="child_event") == 1
    assert devserver.count(event="parent_event") == 1
