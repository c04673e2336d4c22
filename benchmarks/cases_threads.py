"""Many instances in one process (issue 16 item 1): OS threads and RSS for 1 / 10 / 100.

One child process per (round, client) starts instances up to each size in turn (1, then 10, then
100), counting OS threads and RSS after each step; then every instance captures a burst of
events, all are flushed, and after `settle_s` (long enough for phactor's spare Senders to
retire: two `flush_interval`s, 10 s with the defaults) threads and RSS are counted again.
Instances have error tracking on (phactor's default; posthog: exception autocapture), other
options as the adapters set them. The first instance sends one event before the first count,
so that process-wide threads started on first use (phactor's scheduler) are in the baseline:
"per additional instance" divides what instances 2..N added by N - 1, so process-wide threads
are charged to no instance.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

from benchmarks.clients import BenchClient
from benchmarks.measure import rss_mib, run_key
from benchmarks.workload import EVENT, workload

__all__ = ["case_threads"]


def os_threads() -> int:
    """This process's OS threads (Linux: /proc; elsewhere the Python threads)."""
    try:
        return len(os.listdir(f"/proc/{os.getpid()}/task"))
    except OSError:
        return threading.active_count()


def case_threads(client: BenchClient, sink: str, params: dict[str, Any]) -> dict[str, Any]:
    """Threads and RSS after starting 1 / 10 / 100 instances, and after a burst has settled.

    Fields are named by step (`small`, `mid`, `large`: the sizes of `params["sizes"]`, 1 / 10 /
    100 in a full run) so that a quick run with smaller sizes fills the same figures.
    """
    sizes = sorted(int(n) for n in params["sizes"])
    assert len(sizes) == 3, sizes
    burst = int(params["burst"])
    settle = float(params["settle_s"])
    key = run_key(client, "threads")
    result: dict[str, Any] = {"sizes": sizes, "threads_before": os_threads()}
    handles: list[Any] = []
    for step, size in zip(("small", "mid", "large"), sizes, strict=True):
        while len(handles) < size:
            handles.append(client.new_tracking_instance(sink, key, len(handles)))
            if len(handles) == 1:
                client.instance_capture(handles[0], EVENT, *workload()[0])
                client.instance_flush(handles[0], 30.0)
        time.sleep(0.3)  # threads a start leaves to its background (imports, first wake-ups)
        result[f"threads_{step}"] = os_threads()
        result[f"rss_{step}_mib"] = rss_mib()
    work = workload()
    for handle in handles:
        for i in range(burst):
            did, props = work[i % len(work)]
            client.instance_capture(handle, EVENT, did, props)
    for handle in handles:
        client.instance_flush(handle, 60.0)
    time.sleep(settle)
    result["threads_large_burst"] = os_threads()
    result["rss_large_burst_mib"] = rss_mib()
    for handle in handles:
        client.stop_instance(handle)
    extra = max(sizes[-1] - sizes[0], 1)
    base, base_rss = result["threads_small"], result["rss_small_mib"]
    result["threads_per_instance_start"] = (result["threads_large"] - base) / extra
    result["threads_per_instance_burst"] = (result["threads_large_burst"] - base) / extra
    result["rss_per_instance_start_mib"] = (result["rss_large_mib"] - base_rss) / extra
    result["rss_per_instance_burst_mib"] = (result["rss_large_burst_mib"] - base_rss) / extra
    return result
