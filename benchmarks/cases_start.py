"""The start case: what starting (and stopping) one more client instance costs."""

from __future__ import annotations

import threading
import time
from typing import Any

from benchmarks.clients import BenchClient
from benchmarks.measure import percentile, run_key

__all__ = ["case_start"]


def case_start(client: BenchClient, sink: str, params: dict[str, Any]) -> dict[str, Any]:
    """Cost of starting one client instance, threads it adds, and cost of stopping it."""
    count = int(params["instances"])
    key = run_key(client, "start")
    handles = []
    start_s, threads = [], []
    # The first start pays for lazy imports; it is reported apart from the steady-state figure.
    for i in range(count + 1):
        before = threading.active_count()
        t0 = time.perf_counter()
        handles.append(client.new_instance(sink, key, i))
        start_s.append(time.perf_counter() - t0)
        time.sleep(0.05)  # let eagerly started threads appear before counting them
        threads.append(threading.active_count() - before)
    stop_s = []
    for h in handles:
        t0 = time.perf_counter()
        client.stop_instance(h)
        stop_s.append(time.perf_counter() - t0)
    steady = sorted(start_s[1:])
    return {
        "first_start_ms": start_s[0] * 1000,
        "start_ms": percentile(steady, 50) * 1000,
        "threads_per_instance": sorted(threads[1:])[len(threads[1:]) // 2],
        "threads_each": threads,
        "stop_ms": percentile(sorted(stop_s), 50) * 1000,
    }
