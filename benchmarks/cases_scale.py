"""Many instances in one process (issue 16): idle cost, and `log.error` cost per instance count."""

from __future__ import annotations

import glob
import logging
import os
import time
import timeit
from typing import Any

from benchmarks.clients import BenchClient
from benchmarks.measure import context_switches, run_key

__all__ = ["case_idle", "case_log_error"]



def case_idle(client: BenchClient, sink: str, params: dict[str, Any]) -> dict[str, Any]:
    """CPU and wake-ups of `instances` started instances with nothing to send, over a window.

    The caller's thread sleeps through the window: what is counted is the clients' own
    background work (timers, polls, consumer loops). Wake-ups are context switches read from
    /proc (Linux; elsewhere n/a).
    """
    count = int(params["instances"])
    seconds = float(params["seconds"])
    key = run_key(client, "idle")
    handles = [client.new_instance(sink, key, i) for i in range(count)]
    time.sleep(min(1.0, seconds))  # start-up work (first sends of nothing, thread starts) ends
    # Reading /proc costs CPU per thread (phactor has more threads): kept out of the window.
    switches0 = context_switches()
    cpu0 = time.process_time()
    time.sleep(seconds)
    cpu1 = time.process_time()
    switches1 = context_switches()
    threads = len(glob.glob(f"/proc/{os.getpid()}/task/*"))
    for handle in handles:
        client.stop_instance(handle)
    result: dict[str, Any] = {
        "instances": count,
        "cpu_ms_per_10s": (cpu1 - cpu0) * 1000 * 10 / seconds,
        "threads": threads,
    }
    if os.path.isdir(f"/proc/{os.getpid()}/task"):
        result["wakeups_per_s"] = (switches1 - switches0) / seconds
    return result


def case_log_error(client: BenchClient, sink: str, params: dict[str, Any]) -> dict[str, Any]:
    """`log.error()` without an exception with 1 and with `instances` error-tracking instances.

    The root logger gets no output handler: the call's cost is the clients' handlers only.
    """
    root = logging.getLogger()
    root.setLevel(logging.WARNING)
    log = logging.getLogger("app.scale")
    key = run_key(client, "log_error")
    calls = int(params["calls"])
    result: dict[str, Any] = {}
    handles: list[Any] = []
    many = int(params["instances"])
    for label, count in (("one", 1), ("many", many)):
        while len(handles) < count:
            handles.append(client.new_tracking_instance(sink, key, len(handles)))
        best = min(timeit.repeat(lambda: log.error("plain %s", 1), number=calls, repeat=5))
        result[f"{label}_us"] = best / calls * 1e6
        result[f"{label}_root_handlers"] = len(root.handlers)
    for handle in handles:
        client.stop_instance(handle)
    result["instances"] = many
    result["ratio_many_to_one"] = result["many_us"] / result["one_us"]
    return result
