"""An outage longer than memory: with a spool, events beyond max_queue_size go to disk instead
of being dropped (`queue_full`), memory stays bounded, and all are delivered when the endpoint
is back, oldest first.

The issue's figure is 2 million events with max_queue_size=10000; CI runs 40,000 with
max_queue_size=1000 (same ratio of backlog to memory, 40x). `PHACTOR_SPOOL_EVENTS=2000000`
runs the full size (see docs/durability.md for the figures of a manual run).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from phactor.devserver import DevServer

N = int(os.environ.get("PHACTOR_SPOOL_EVENTS", "40000"))
QUEUE = 10_000 if N >= 1_000_000 else 1000

OUTAGE = r"""
import json, sys, time, phactor

def peak_rss_mb():
    # VmHWM: this process's own peak. (ru_maxrss is not: it keeps the spawning process's
    # peak across fork+exec, i.e. the test process's, which stores the events it receives.)
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0
host, spool_dir, n, queue = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
options = dict(
    api_key="phc_spool_outage_test_key_0123456789", host=host, flush_at=500,
    flush_interval=0.05, max_retries=0, retry_base_delay=0.01, retry_max_delay=0.05,
    enable_error_tracking=False, max_queue_size=queue, senders=2,
)
if spool_dir != "-":
    options.update(spool_dir=spool_dir, spool_max_bytes=8 << 30)
inst = phactor.start("outage", **options)
t0 = time.perf_counter()
refused = sum(1 for i in range(n) if inst.capture("ev", "u", {"i": i}) is None)
capture_s = time.perf_counter() - t0
held = inst.stats()
rss_mb = peak_rss_mb()
print(json.dumps({"refused": refused, "held": held, "rss_mb": rss_mb, "capture_s": capture_s}))
sys.stdout.flush()
sys.stdin.readline()  # the endpoint is back
t0 = time.perf_counter()
deadline = time.monotonic() + 600
while not inst.flush(30) and time.monotonic() < deadline:
    pass
drain_s = time.perf_counter() - t0
rss_mb = peak_rss_mb()
print(json.dumps({"stats": inst.stats(), "rss_mb": rss_mb, "drain_s": drain_s}))
inst.stop(5)
"""


def run(devserver: DevServer, spool_dir: str) -> tuple[dict, dict]:
    devserver.set_mode("down")
    devserver.clear()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.Popen(
        [sys.executable, "-c", OUTAGE, devserver.url, spool_dir, str(N), str(QUEUE)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    assert proc.stdin is not None and proc.stdout is not None
    try:
        first = json.loads(proc.stdout.readline())
        devserver.set_mode("up")
        proc.stdin.write("go\n")
        proc.stdin.flush()
        second = json.loads(proc.stdout.readline())
        assert proc.wait(timeout=600) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return first, second


def test_an_outage_longer_than_memory_delivers_everything(
    devserver: DevServer, tmp_path: Path
) -> None:
    server = DevServer(max_events=None, max_stored_bytes=None).start() if N > 100_000 else None
    target = server or devserver
    try:
        first, second = run(target, str(tmp_path / "spool"))
        assert first["refused"] == 0
        held = first["held"]
        # Memory holds max_queue_size events plus the batches that were in flight (senders x
        # flush_at): a failed batch comes back to memory even when the queue is full (it is on
        # disk too, so it is never dropped for want of room; docs/durability.md).
        assert held["queued"] <= QUEUE + 2 * 500 and held["spooled"] >= N - QUEUE - 2 * 500
        stats = second["stats"]
        assert stats["sent"] == N and stats["dropped"] == {} and stats["spooled"] == 0
        assert target.count() == N
        if N <= 100_000:  # the server's request log keeps the newest 64 MiB only
            assert len(target.uuid_counts()) == N
        # Memory as without a spool: the same run without one (which refuses the backlog).
        base_first, base_second = run(target, "-")
        assert base_first["refused"] > 0  # without a spool the backlog is refused (queue_full)
        print(
            f"\nspool: capture {first['capture_s']:.2f}s rss {second['rss_mb']:.0f} MB "
            f"drain {second['drain_s']:.2f}s; no spool: rss {base_second['rss_mb']:.0f} MB"
        )
        assert second["rss_mb"] <= base_second["rss_mb"] + 40 + N / 100_000 * 10
        assert list((tmp_path / "spool").glob("*.journal")) == []
    finally:
        if server is not None:
            server.stop()
