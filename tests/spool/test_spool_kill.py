"""The durable spool's "done when": a process killed with SIGKILL loses no accepted event.

A subprocess captures events into a spool and is killed -9; then an instance on the same
`spool_dir` (this process) adopts its journal and delivers every uuid the child's capture()
returned, at least once. Duplicates may only come from batches in flight at the kill.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import assert_ledger, stored_uuids, wait_until

from phactor.devserver import DevServer

API_KEY = "phc_spool_kill_test_key_0123456789"

CHILD = r"""
import sys, phactor
host, spool_dir, sync, n, out = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
inst = phactor.start(
    "killed", api_key="phc_spool_kill_test_key_0123456789", host=host, spool_dir=spool_dir,
    spool_sync=sync, flush_at=20, flush_interval=0.05, max_retries=1, retry_base_delay=0.01,
    retry_max_delay=0.05, request_timeout=2.0, enable_error_tracking=False, max_queue_size=100,
)
with open(out, "w", buffering=1) as f:
    i = 0
    while n == 0 or i < n:
        uuid = inst.capture("ev", "user", {"i": i})
        if uuid is not None:
            f.write(uuid + "\n")
        i += 1
        if i == n:
            f.write("done\n")
    import threading
    threading.Event().wait()  # until killed
"""


def options(host: str, spool_dir: Path, **extra: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "api_key": API_KEY, "host": host, "spool_dir": str(spool_dir), "flush_at": 50,
        "flush_interval": 0.05, "max_retries": 2, "retry_base_delay": 0.01,
        "retry_max_delay": 0.05, "enable_error_tracking": False,
    }  # fmt: skip
    base.update(extra)
    return base


def spawn(host: str, spool_dir: Path, sync: str, n: int, out: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, host, str(spool_dir), sync, str(n), str(out)], env=env
    )


def accepted(out: Path) -> list[str]:
    text = out.read_text() if out.exists() else ""
    lines = text.split("\n")[:-1]  # a line cut by the kill has no newline: not counted
    return [line for line in lines if line != "done"]


def journal_rows(spool_dir: Path) -> int:
    n = 0
    for path in spool_dir.glob("killed.*.journal"):
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            n += db.execute("SELECT count(*) FROM events").fetchone()[0]
        except sqlite3.Error:
            pass
        finally:
            db.close()
    return n


def kill(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL


def deliver_all(start_instance: Any, devserver: DevServer, spool_dir: Path, want: set[str]) -> Any:
    # The second process's instance must bear the same name to adopt the journal.
    import phactor

    inst = phactor.start("killed", **options(devserver.url, spool_dir))
    try:
        ok = wait_until(lambda: want <= set(stored_uuids(devserver)) and inst.flush(2), 30)
        assert ok, (len(want - set(stored_uuids(devserver))), inst.stats())
        stats = assert_ledger(inst)
        assert stats["replayed"] >= 1
        return stats
    finally:
        inst.stop(5)


@pytest.mark.parametrize("sync", ["always", "batch"])
def test_sigkill_with_the_endpoint_down_loses_no_accepted_event(
    devserver: DevServer, tmp_path: Path, sync: str, start_instance: Any
) -> None:
    spool_dir, out, n = tmp_path / "spool", tmp_path / "uuids", 500
    devserver.set_mode("down")
    proc = spawn(devserver.url, spool_dir, sync, n, out)
    try:
        assert wait_until(lambda: "done\n" in (out.read_text() if out.exists() else ""), 60)
        if sync == "batch":
            # The crash window of "batch" is spool_interval: kill once it has passed for all.
            assert wait_until(lambda: journal_rows(spool_dir) >= n, 30), journal_rows(spool_dir)
    finally:
        kill(proc)
    uuids = accepted(out)
    assert len(uuids) == n  # max_queue_size=100, yet none refused: the rest went to disk
    assert devserver.events() == []
    # The next process delivers to a server of its own: a request the killed child had already
    # written to its socket (the first server's threads had not read it yet) would otherwise be
    # stored once "up" and look like a duplicate of the replay; such a batch was in flight.
    with DevServer() as fresh:
        deliver_all(start_instance, fresh, spool_dir, set(uuids))
        counts = stored_uuids(fresh)
    assert set(uuids) <= set(counts)
    assert all(c == 1 for c in counts.values())  # the replay itself sends each event once
    assert list(spool_dir.glob("*.journal")) == []


def test_sigkill_mid_stream_with_the_endpoint_up(
    devserver: DevServer, tmp_path: Path, start_instance: Any
) -> None:
    spool_dir, out = tmp_path / "spool", tmp_path / "uuids"
    proc = spawn(devserver.url, spool_dir, "always", 0, out)  # captures until killed
    try:
        assert wait_until(lambda: len(devserver.events()) >= 200, 60)
        # Slow answers: batches are in flight at the kill.
        devserver.delay(0.2)
        assert wait_until(lambda: len(accepted(out)) >= len(devserver.events()) + 100, 30)
    finally:
        kill(proc)
    devserver.delay(0)
    uuids = accepted(out)
    deliver_all(start_instance, devserver, spool_dir, set(uuids))
    counts = stored_uuids(devserver)
    assert set(uuids) <= set(counts)
    duplicated = [u for u, c in counts.items() if c > 1]
    # Only batches the server took before the kill without the child learning it (in flight,
    # or settled but the journal's delete not yet committed) come twice: a few batches' worth.
    assert len(duplicated) <= 5 * 20, len(duplicated)
    assert all(c <= 2 for c in counts.values())
