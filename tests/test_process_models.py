"""Process models: every way a real process forks, spawns workers, gets signalled and ends.

Each test runs a script in a subprocess (pytest's own threads must not be forked, and a
signal or a hang must not reach the test runner) against a real loopback DevServer, and
counts what arrived against what the script captured. Every run is bounded by a timeout: a
hang on the unfixed code shows up as a failure, never as a stuck suite.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from phactor.devserver import DevServer

# The child scripts' own bound: a hang in the code under test must fail the test, not the suite.
SCRIPT_TIMEOUT = 60


def run_script(script: str, *args: str, timeout: float = SCRIPT_TIMEOUT) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            [sys.executable, "-c", textwrap.dedent(script), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as expired:
        pytest.fail(f"the script hung (> {timeout} s); stderr: {expired.stderr!r}")


def last_json(result: subprocess.CompletedProcess[str]) -> dict:
    assert result.stdout.strip(), result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


# --- os.fork with busy threads ---------------------------------------------------------------

FORK_BUSY_SCRIPT = """
    import json, os, select, sys, threading
    import phactor

    url, forks = sys.argv[1], int(sys.argv[2])
    inst = phactor.start(api_key="phc_fork", host=url, flush_at=50, flush_interval=3600)
    stop = threading.Event()
    counts = [0] * 4

    def hammer(i):
        while not stop.is_set():
            for _ in range(50):
                if inst.capture("parent_event", f"p{i}") is not None:
                    counts[i] += 1
            stop.wait(0.002)  # a pause so the Senders keep up: the point is a busy lock

    threads = [threading.Thread(target=hammer, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()

    CHILD = '''
    first = {"stats": phactor.stats(), "queue_length": phactor.queue_length(),
             "instances": phactor.instances()}
    first["children"] = phactor.instance().children()
    with phactor.context({"in_child": True}):
        first["context"] = phactor.get_context()
    uuids = [phactor.capture("child_event", "child") for _ in range(10)]
    ok = phactor.flush(timeout=10)
    report = {"first": first, "uuids": uuids, "ok": ok, "stats": phactor.stats(),
              "stopped": phactor.stop(timeout=5)}
    '''
    reports = []
    for _ in range(forks):
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(r)
            try:
                exec(CHILD)
            except BaseException as error:
                report = {"error": repr(error)}
            os.write(w, json.dumps(report).encode())
            os._exit(0)
        os.close(w)
        # The child must answer promptly: a deadlock on a lock copied while held is a hang.
        ready, _, _ = select.select([r], [], [], 8)
        if not ready:
            os.kill(pid, 9)
            reports.append({"error": "child hung"})
        else:
            with os.fdopen(r) as pipe:
                reports.append(json.loads(pipe.read()))
        os.waitpid(pid, 0)
    stop.set()
    for t in threads:
        t.join()
    ok = phactor.stop(timeout=10)
    print(json.dumps({"reports": reports, "captured": sum(counts), "ok": ok,
                      "stats": inst.stats()}))
"""


def test_fork_while_threads_capture_gives_the_child_its_own_state(devserver: DevServer) -> None:
    forks = 4
    result = run_script(FORK_BUSY_SCRIPT, devserver.url, str(forks))
    assert result.returncode == 0, result.stderr
    out = last_json(result)
    for report in out["reports"]:
        assert "error" not in report, report
        first = report["first"]
        # Every entry point sees the child's own (empty) state, never the parent's queue.
        assert first["stats"]["captured"] == 0, first
        assert first["stats"]["queued"] == 0 and first["stats"]["in_flight"] == 0, first
        assert first["queue_length"] == 0
        assert first["instances"] == ["default"]
        assert first["children"] and all(first["children"].values()), first
        assert first["context"] == {"in_child": True}
        assert report["ok"] is True and report["stopped"] is True
        assert None not in report["uuids"]
        stats = report["stats"]
        assert stats["captured"] == 10 and stats["sent"] == 10 and stats["dropped"] == {}
    assert out["ok"] is True
    stats = out["stats"]
    assert stats["captured"] == stats["sent"] + sum(stats["dropped"].values()), stats
    assert stats["sent"] == out["captured"] - stats["dropped"].get("shutdown", 0), stats
    total = stats["sent"] + 10 * forks
    assert devserver.wait_for(total, timeout=10)
    assert devserver.count(event="child_event") == 10 * forks
    assert devserver.count(event="parent_event") == stats["sent"]
    assert set(devserver.uuid_counts().values()) == {1}
