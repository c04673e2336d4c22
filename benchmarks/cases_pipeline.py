"""The pipeline's cost to the app (issue 16 items 4 and 8): threads capturing at once, and a
CPU-bound app that captures while it works.

`case_capture_threads`: combined capture() calls/s from 1, 4 and 16 threads (a lock convoy shows as a
combined rate far below the single thread's). `case_host_app`: a fixed amount of pure-Python
work in the app thread, interleaved with captures at a given rate; what the app loses is wall
time (the calls themselves plus the GIL turns the client's background threads take), measured
against the same work with no captures, in alternating blocks of one process.
"""

from __future__ import annotations

import statistics
import threading
import time
from typing import Any

from benchmarks.clients import BenchClient
from benchmarks.measure import context_switches, run_key
from benchmarks.workload import EVENT, FLUSH_AT, workload

__all__ = ["case_capture_threads", "case_host_app"]



def case_capture_threads(client: BenchClient, sink: str, params: dict[str, Any]) -> dict[str, Any]:
    """Combined capture() calls/s with 1, 4 and 16 threads calling at once.

    Each measurement: `calls` captures split evenly over the threads, released together by a
    barrier, timed from the release to the last thread's end; then an untimed flush. The
    thread counts alternate over `reps` repetitions; the median per count is reported. The
    queue holds every call (no drop is timed).
    """
    calls = int(params["calls"])
    reps = int(params.get("reps", 3))
    counts = [int(n) for n in params.get("threads", (1, 4, 16))]
    key = run_key(client, "capture_threads")
    client.start(sink, key, flush_at=FLUSH_AT, max_queue_size=calls + 1000)
    work = workload()
    nwork = len(work)
    capture = client.capture
    for i in range(min(calls, 2000)):
        did, props = work[i % nwork]
        capture(EVENT, did, props)
    client.flush(30)

    rates: dict[int, list[float]] = {n: [] for n in counts}
    switches: dict[int, list[float]] = {n: [] for n in counts}
    refused = 0
    lock = threading.Lock()
    for rep in range(reps):
        for n in counts if rep % 2 == 0 else counts[::-1]:
            per = calls // n
            barrier = threading.Barrier(n + 1)
            ends: list[float] = []

            def worker(
                offset: int,
                per: int = per,
                barrier: threading.Barrier = barrier,
                ends: list[float] = ends,
            ) -> None:
                nonlocal refused
                bad = 0
                barrier.wait()
                for i in range(offset, offset + per):
                    did, props = work[i % nwork]
                    if capture(EVENT, did, props) is None:
                        bad += 1
                end = time.perf_counter()
                with lock:
                    ends.append(end)
                    refused += bad

            ts = [threading.Thread(target=worker, args=(t * per,)) for t in range(n)]
            for t in ts:
                t.start()
            cs0 = context_switches()
            t0 = time.perf_counter()
            barrier.wait()
            for t in ts:
                t.join()
            elapsed = max(ends) - t0
            cs1 = context_switches()
            rates[n].append(per * n / elapsed)
            switches[n].append((cs1 - cs0) / (per * n))
            client.flush(60)
    client.stop(30)
    result: dict[str, Any] = {"calls": calls, "reps": reps, "refused": refused}
    for n in counts:
        result[f"rate_{n}t"] = statistics.median(rates[n])
        result[f"rates_{n}t"] = rates[n]
        result[f"switches_per_call_{n}t"] = statistics.median(switches[n])
    one = result.get("rate_1t")
    for n in counts:
        if n != 1 and one:
            result[f"of_1t_{n}t"] = result[f"rate_{n}t"] / one
    return result


def _spin(n: int) -> int:
    """The app's unit of work: a pure-Python loop (holds the GIL, no allocation to speak of)."""
    x = 0
    for i in range(n):
        x ^= i
    return x


def _calibrate(spin: int) -> float:
    """Seconds one unit of work takes here, no client running (best of several)."""
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(50):
            _spin(spin)
        best = min(best, (time.perf_counter() - t0) / 50)
    return best


def _app_block(
    units: int, spin: int, schedule: list[int], capture: Any
) -> tuple[float, float, float]:
    """Run `units` of work, capturing schedule[u] events after unit u: (wall s, app thread CPU
    s, other threads' CPU s)."""
    work = workload()
    nwork = len(work)
    k = 0
    w0 = time.perf_counter()
    c0 = time.thread_time()
    p0 = time.process_time()
    for u in range(units):
        _spin(spin)
        for _ in range(schedule[u]):
            did, props = work[k % nwork]
            capture(EVENT, did, props)
            k += 1
    cpu = time.thread_time() - c0
    return time.perf_counter() - w0, cpu, time.process_time() - p0 - cpu


def _schedule(units: int, per_unit: float) -> list[int]:
    """How many captures follow each unit so the rate is `per_unit` on average, evenly spread."""
    out = []
    acc = 0.0
    for _ in range(units):
        acc += per_unit
        n = int(acc)
        acc -= n
        out.append(n)
    return out


def case_host_app(client: BenchClient, sink: str, params: dict[str, Any]) -> dict[str, Any]:
    """A CPU-bound app thread capturing at `rate` events/s of its own work time.

    Alternating blocks in one process (client started throughout): the work alone, then the
    same work with captures; an untimed flush after each capture block, so every capture block
    starts with an empty pipeline and its background work happens inside it (or in the flush,
    reported as `drain_s`). Slowdown = median(capture block wall) / median(work-alone wall) - 1.
    Off-CPU: the app thread's wall minus its CPU time, capture blocks minus work-alone blocks.
    With `queue_full` set (and the client's default queue) the case instead counts the events
    refused over one long block at `rate`, without flushing.
    """
    rate = float(params["rate"])
    seconds = float(params["seconds"])
    reps = int(params.get("reps", 3))
    use_gzip = bool(params.get("gzip", False))
    spin = int(params.get("spin", 2000))
    key = run_key(client, f"host{int(rate)}")
    unit_s = _calibrate(spin)
    units = max(1, int(seconds / unit_s))
    schedule = _schedule(units, rate * unit_s)
    events_per_block = sum(schedule)
    if params.get("queue_full"):
        client.start(sink, key, flush_at=FLUSH_AT, gzip=use_gzip)  # the default queue
        _app_block(max(1, units // 20), spin, schedule, client.capture)  # warm-up
        client.flush(30)
        stats0 = client.stats() or {}
        refused = 0
        capture = client.capture

        def counting(event: str, did: str, props: dict[str, Any]) -> None:
            nonlocal refused
            if capture(event, did, props) is None:
                refused += 1

        wall, _, _ = _app_block(units, spin, schedule, counting)
        stats1 = client.stats() or {}
        client.flush(60)
        client.stop(30)
        dropped0 = (stats0.get("dropped") or {}).get("queue_full", 0)
        dropped1 = (
            stats1["dropped"].get("queue_full", 0)
            if isinstance(stats1.get("dropped"), dict)
            else None
        )
        return {
            "rate": rate,
            "events": events_per_block,
            "achieved_rate": events_per_block / wall,
            "refused": refused,
            "refused_share": refused / events_per_block,
            "queue_full": None if dropped1 is None else dropped1 - dropped0,
            "max_queue_size": client.max_queue_size(),
            "wall_s": wall,
        }

    client.start(sink, key, flush_at=FLUSH_AT, gzip=use_gzip, max_queue_size=4 * events_per_block)
    _app_block(max(1, units // 10), spin, schedule, client.capture)  # warm-up (and imports)
    client.flush(30)
    alone: list[float] = []
    alone_off: list[float] = []
    busy: list[float] = []
    busy_off: list[float] = []
    drains: list[float] = []
    background: list[float] = []
    nothing = [0] * units
    for _ in range(reps):
        wall, cpu, _ = _app_block(units, spin, nothing, client.capture)
        alone.append(wall)
        alone_off.append(wall - cpu)
        wall, cpu, other = _app_block(units, spin, schedule, client.capture)
        busy.append(wall)
        busy_off.append(wall - cpu)
        background.append(other / wall)
        t0 = time.perf_counter()
        client.flush(60)
        drains.append(time.perf_counter() - t0)
    stats = client.stats()
    client.stop(30)
    base = statistics.median(alone)
    pairs = [(b / a - 1) * 100 for a, b in zip(alone, busy, strict=True)]
    return {
        "rate": rate,
        "gzip": use_gzip,
        "unit_us": unit_s * 1e6,
        "events_per_block": events_per_block,
        "work_s": base,
        "with_captures_s": statistics.median(busy),
        # Median of the pairs' slowdowns: each pair ran back to back, so a load change on the
        # machine between pairs moves both halves of a pair alike.
        "slowdown_pct": statistics.median(pairs),
        "slowdowns_pct": pairs,
        "background_cpu_ms_per_s": statistics.median(background) * 1000,
        "off_cpu_ms": (statistics.median(busy_off) - statistics.median(alone_off)) * 1000,
        "off_cpu_ms_per_s": (statistics.median(busy_off) - statistics.median(alone_off))
        * 1000
        / base,
        "drain_s": statistics.median(drains),
        "stats": stats,
    }
