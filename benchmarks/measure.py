"""Measuring inside a child process: latency summaries, memory, per-run project keys, timed captures."""

from __future__ import annotations

import glob
import os
import time
import uuid as uuid_mod
from typing import Any

from benchmarks.clients import BenchClient
from benchmarks.workload import EVENT

__all__ = [
    "context_switches",
    "peak_rss_mib",
    "percentile",
    "rss_mib",
    "run_key",
    "summarize_ns",
    "timed_captures",
]


def context_switches() -> int:
    """Voluntary + involuntary context switches of every thread of this process (wake-ups)."""
    total = 0
    for path in glob.glob(f"/proc/{os.getpid()}/task/*/status"):
        try:
            with open(path) as status:
                for line in status:
                    if "ctxt_switches" in line:
                        total += int(line.split()[1])
        except (OSError, ValueError):
            pass  # a thread that ended while we read
    return total


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of an already sorted list."""
    if not sorted_values:
        return float("nan")
    k = max(0, min(len(sorted_values) - 1, round(q / 100 * len(sorted_values) + 0.5) - 1))
    return sorted_values[k]


def summarize_ns(samples: Any) -> dict[str, float]:
    """Median, p99, p99.9 and max of nanosecond samples, in microseconds."""
    s = sorted(samples)
    return {
        "n": len(s),
        "median_us": percentile(s, 50) / 1000,
        "p99_us": percentile(s, 99) / 1000,
        "p999_us": percentile(s, 99.9) / 1000,
        "max_us": (s[-1] / 1000) if s else float("nan"),
    }


def _proc_status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def rss_mib() -> float:
    """Current resident set size of this process in MiB (Linux)."""
    return _proc_status_kib("VmRSS") / 1024


def peak_rss_mib() -> float:
    """Peak resident set size (high-water mark) of this process in MiB (Linux)."""
    return _proc_status_kib("VmHWM") / 1024


def run_key(client: BenchClient, case: str) -> str:
    """A fresh project key per run: the sink counts per key, so runs never mix their events."""
    return f"phc_bench_{client.name}_{case}_{uuid_mod.uuid4().hex[:8]}"


def timed_captures(
    client: BenchClient, work: list[tuple[str, dict[str, Any]]], start: int, count: int, out: list
) -> int:
    """Capture `count` events, appending each call's duration (ns); returns how many got None."""
    capture = client.capture
    clock = time.perf_counter_ns
    append = out.append
    nwork = len(work)
    refused = 0
    for i in range(start, start + count):
        did, props = work[i % nwork]
        t0 = clock()
        r = capture(EVENT, did, props)
        append(clock() - t0)
        if r is None:
            refused += 1
    return refused
