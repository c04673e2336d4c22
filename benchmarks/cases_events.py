"""The event cases: capture() cost on the caller's thread, throughput to the sink, an outage.

Each case runs in a fresh child process and drives a client only through its `BenchClient`
adapter, so phactor and the `posthog` package go through exactly the same procedure: same
event, same sink, same flush_at, same warm-up, same timing code. Each returns a plain JSON-able
dict; `figures.py` turns those into figures.
"""

from __future__ import annotations

import array
import threading
import time
from typing import Any

from benchmarks.clients import BenchClient
from benchmarks.measure import peak_rss_mib, rss_mib, run_key, summarize_ns, timed_captures
from benchmarks.sink import remote_counts, remote_wait
from benchmarks.workload import BURST, EVENT, FLUSH_AT, workload

__all__ = ["case_capture", "case_outage", "case_throughput"]


def case_capture(client: BenchClient, sink: str, params: dict[str, Any]) -> dict[str, Any]:
    """Caller-side capture() cost with `threads` threads, in bursts separated by untimed flushes."""
    threads = int(params.get("threads", 1))
    total = int(params["samples"])
    key = run_key(client, f"capture{threads}")
    client.start(sink, key, flush_at=FLUSH_AT)
    work = workload()
    warm: list[int] = []
    timed_captures(client, work, 0, min(2000, max(total // 2, 100)), warm)
    client.flush(30)

    samples: list[int] = []
    refused = 0
    lock = threading.Lock()
    per_thread = max(1, BURST // threads)
    done = 0
    while done < total:
        if threads == 1:
            refused += timed_captures(client, work, done, per_thread, samples)
        else:
            barrier = threading.Barrier(threads)

            def worker(offset: int, barrier: threading.Barrier = barrier) -> None:
                nonlocal refused
                local: list[int] = []
                barrier.wait()
                r = timed_captures(client, work, offset, per_thread, local)
                with lock:
                    samples.extend(local)
                    refused += r

            ts = [
                threading.Thread(target=worker, args=(done + t * per_thread,))
                for t in range(threads)
            ]
            for t in ts:
                t.start()
            for t in ts:
                t.join()
        done += per_thread * threads
        client.flush(30)
    t0 = time.perf_counter()
    client.stop(30)
    stop_s = time.perf_counter() - t0
    counts = remote_counts(sink, key)
    return {
        **summarize_ns(samples),
        "threads": threads,
        "refused": refused,
        "sink_events": counts["events"],
        "stats": client.stats(),
        "stop_s": stop_s,
    }


def case_throughput(client: BenchClient, sink: str, params: dict[str, Any]) -> dict[str, Any]:
    """Events/s from the first capture until the sink has received all N (flush_at 100)."""
    n = int(params["n"])
    use_gzip = bool(params.get("gzip", False))
    key = run_key(client, "throughput")
    # The queue holds all N so that neither client drops: we measure how fast the pipeline
    # moves events, not what a full queue does (the outage case covers that).
    client.start(sink, key, flush_at=FLUSH_AT, gzip=use_gzip, max_queue_size=n + 1000)
    work = workload()
    warm = 500
    for i in range(warm):
        did, props = work[i % len(work)]
        client.capture(EVENT, did, props)
    client.flush(60)
    if not remote_wait(sink, key, warm, 30)["ok"]:
        raise RuntimeError("warm-up events never reached the sink")

    capture = client.capture
    refused = 0
    nwork = len(work)
    t0 = time.perf_counter()
    for i in range(n):
        did, props = work[i % nwork]
        if capture(EVENT, did, props) is None:
            refused += 1
    t_captured = time.perf_counter()
    client.flush(300)
    t_flushed = time.perf_counter()
    got = remote_wait(sink, key, warm + n - refused, 300)
    t1 = time.perf_counter()
    client.stop(30)
    return {
        "n": n,
        "gzip": use_gzip,
        "events_per_s": n / (t1 - t0),
        "capture_phase_s": t_captured - t0,
        "flush_phase_s": t_flushed - t_captured,
        "total_s": t1 - t0,
        "refused": refused,
        "complete": bool(got["ok"]) and refused == 0,
        "sink_events": got["events"] - warm,
        "sink_batches": got["batches"],
        "sink_bytes": got["bytes"],
        "stats": client.stats(),
    }


def case_outage(client: BenchClient, sink: str, params: dict[str, Any]) -> dict[str, Any]:
    """N captures against an endpoint that refuses connections: RSS, capture latency, drops."""
    n = int(params["n"])
    down = params["down_url"]
    key = run_key(client, "outage")
    samples = array.array("q", bytes(8 * n))  # preallocated so the samples do not count as growth
    # Load the HTTP stack before the baseline for both clients: posthog imports requests at
    # import time, phactor on its first request; neither is queue memory.
    import requests  # noqa: F401

    client.start(down, key, flush_at=FLUSH_AT)
    work = workload()
    for i in range(200):  # warm the capture path (these go into the queue too)
        did, props = work[i % len(work)]
        client.capture(EVENT, did, props)
    rss_before = rss_mib()
    capture = client.capture
    clock = time.perf_counter_ns
    nwork = len(work)
    refused = 0
    t_start = time.perf_counter()
    for i in range(n):
        did, props = work[i % nwork]
        t0 = clock()
        r = capture(EVENT, did, props)
        samples[i] = clock() - t0
        if r is None:
            refused += 1
    elapsed = time.perf_counter() - t_start
    rss_after = rss_mib()
    peak = peak_rss_mib()
    windows = 10 if n >= 10_000 else 1
    size = n // windows
    window_p99 = [
        summarize_ns(samples[w * size : (w + 1) * size])["p99_us"] for w in range(windows)
    ]
    result = {
        **summarize_ns(samples),
        "n": n,
        "elapsed_s": elapsed,
        "refused": refused,
        "accepted": n - refused,
        "rss_before_mib": rss_before,
        "rss_after_mib": rss_after,
        "peak_rss_mib": peak,
        "rss_growth_mib": peak - rss_before,
        "window_p99_us": window_p99,
        "max_queue_size": client.max_queue_size(),
        "queue_length": client.queue_length(),
        "stats": client.stats(),
    }
    # Stopping a client whose endpoint is down is bounded by its shutdown timeout; the child is
    # killed with os._exit afterwards, so a client that would hang cannot stall the benchmark.
    t0 = time.perf_counter()
    if client.stop_bounded(float(params.get("stop_timeout", 2.0))):
        result["stop_s"] = time.perf_counter() - t0
        result["stats_after_stop"] = client.stats()
    return result
