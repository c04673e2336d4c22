"""What every benchmark case does, identically for both clients.

A case runs inside a fresh child process and talks to the client under test only through a small
adapter (`cases_phactor.PhactorClient`, `cases_posthog.PosthogClient`), so phactor and the `posthog`
package go through exactly the same procedure: same event, same sink, same flush_at, same warm-up,
same timing code. Each case returns a plain JSON-able dict; `run.py` turns those into figures.
"""

from __future__ import annotations

import array
import logging
import os
import threading
import time
import uuid as uuid_mod
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol

from benchmarks.sink import remote_counts, remote_wait

EVENT = "checkout completed"
FLUSH_AT = 100
BURST = 1000  # captures between two (untimed) flushes, so no queue ever fills during timing
FLAG_KEYS = ("new-checkout", "pricing-experiment")
PERSONAL_API_KEY = "phx_benchmark_personal_key"


class NotAvailable(Exception):
    """The client under test lacks the feature a case measures; the case reports "n/a"."""


class BenchClient(Protocol):
    """What a case needs from a client under test (one adapter per library)."""

    name: str
    version: str

    def start(self, host: str, key: str, **options: Any) -> None: ...
    def capture(self, event: str, distinct_id: str, properties: dict[str, Any]) -> Any: ...
    def flush(self, timeout: float) -> None: ...
    def stop(self, timeout: float) -> None: ...
    def stop_bounded(self, timeout: float) -> bool: ...
    def stats(self) -> dict[str, Any] | None: ...
    def queue_length(self) -> int | None: ...
    def max_queue_size(self) -> int: ...
    def load_flags(self) -> None: ...
    def flag_single(self, key: str, distinct_id: str, person_properties: dict[str, Any]) -> Any: ...
    def flag_snapshot(
        self, distinct_id: str, person_properties: dict[str, Any], keys: tuple[str, ...]
    ) -> list[Any]: ...
    def capture_exception(self, exc: BaseException, distinct_id: str) -> Any: ...
    def error_handler_installed(self) -> bool: ...
    def settings(self) -> dict[str, Any]: ...
    def new_instance(self, host: str, key: str, index: int) -> Any: ...
    def stop_instance(self, handle: Any) -> None: ...


# -- the workload ---------------------------------------------------------------------------------
def make_properties(i: int) -> dict[str, Any]:
    """A realistic event body: 10 properties, a nested dict, a list of dicts, a datetime."""
    return {
        "plan": ("free", "pro", "enterprise")[i % 3],
        "amount": 49.99 + (i % 7),
        "quantity": 1 + i % 5,
        "is_trial": i % 2 == 0,
        "$current_url": f"https://shop.example.com/checkout/{i % 50}",
        "tags": ["summer-sale", "returning", f"cohort-{i % 4}"],
        "items": [
            {"sku": f"SKU-{i % 97}", "price": 19.99, "qty": 1},
            {"sku": f"SKU-{i % 89}", "price": 30.0, "qty": 2},
        ],
        "customer": {"email": f"user{i % 1000}@example.com", "org": {"id": i % 300, "tier": "b"}},
        "signed_up_at": datetime(2024, 1, 1 + i % 28, 12, 30, 5, tzinfo=UTC),
        "referrer": "https://www.google.com/",
    }


def workload(n: int = 1000) -> list[tuple[str, dict[str, Any]]]:
    """`n` (distinct_id, properties) pairs, built before timing starts and cycled through."""
    return [(f"user-{i}", make_properties(i)) for i in range(n)]


def flag_definitions() -> dict[str, Any]:
    """Two local-evaluation flags: a property-gated boolean rollout and a multivariate test."""
    return {
        "flags": [
            {
                "id": 1,
                "key": FLAG_KEYS[0],
                "name": "new checkout",
                "active": True,
                "ensure_experience_continuity": False,
                "filters": {
                    "groups": [
                        {
                            "properties": [
                                {
                                    "key": "email",
                                    "value": "@example.com",
                                    "operator": "icontains",
                                    "type": "person",
                                }
                            ],
                            "rollout_percentage": 50,
                        },
                        {"properties": [], "rollout_percentage": 10},
                    ],
                    "payloads": {"true": '{"color": "blue"}'},
                },
            },
            {
                "id": 2,
                "key": FLAG_KEYS[1],
                "name": "pricing experiment",
                "active": True,
                "ensure_experience_continuity": False,
                "filters": {
                    "groups": [
                        {
                            "properties": [
                                {
                                    "key": "plan",
                                    "value": ["pro", "enterprise"],
                                    "operator": "exact",
                                    "type": "person",
                                },
                                {
                                    "key": "country",
                                    "value": "DE",
                                    "operator": "is_not",
                                    "type": "person",
                                },
                            ],
                            "rollout_percentage": 100,
                        }
                    ],
                    "multivariate": {
                        "variants": [
                            {"key": "control", "rollout_percentage": 50},
                            {"key": "cheaper", "rollout_percentage": 25},
                            {"key": "pricier", "rollout_percentage": 25},
                        ]
                    },
                    "payloads": {"cheaper": '{"discount": 10}'},
                },
            },
        ],
        "group_type_mapping": {},
        "cohorts": {},
    }


def person_properties(i: int) -> dict[str, Any]:
    """Person properties that make both flags decidable locally, with varied outcomes."""
    return {
        "email": f"user{i}@" + ("example.com" if i % 3 else "other.org"),
        "plan": ("free", "pro", "enterprise")[i % 3],
        "country": ("DE", "FR", "US", "GB")[i % 4],
    }


# -- measuring ------------------------------------------------------------------------------------
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


def _timed_captures(
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


# -- cases ----------------------------------------------------------------------------------------
def case_capture(client: BenchClient, sink: str, params: dict[str, Any]) -> dict[str, Any]:
    """Caller-side capture() cost with `threads` threads, in bursts separated by untimed flushes."""
    threads = int(params.get("threads", 1))
    total = int(params["samples"])
    key = run_key(client, f"capture{threads}")
    client.start(sink, key, flush_at=FLUSH_AT)
    work = workload()
    warm: list[int] = []
    _timed_captures(client, work, 0, min(2000, max(total // 2, 100)), warm)
    client.flush(30)

    samples: list[int] = []
    refused = 0
    lock = threading.Lock()
    per_thread = max(1, BURST // threads)
    done = 0
    while done < total:
        if threads == 1:
            refused += _timed_captures(client, work, done, per_thread, samples)
        else:
            barrier = threading.Barrier(threads)

            def worker(offset: int, barrier: threading.Barrier = barrier) -> None:
                nonlocal refused
                local: list[int] = []
                barrier.wait()
                r = _timed_captures(client, work, offset, per_thread, local)
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


def case_flags(client: BenchClient, sink: str, params: dict[str, Any]) -> dict[str, Any]:
    """Local evaluation of 2 flags: one call per flag, and one snapshot read for both."""
    samples_n = int(params["samples"])
    key = run_key(client, "flags")
    client.start(sink, key, flush_at=FLUSH_AT, personal_api_key=PERSONAL_API_KEY)
    client.load_flags()
    people = [(f"user-{i}", person_properties(i)) for i in range(1000)]
    values = []
    for did, pp in people[:50]:
        values.append(client.flag_snapshot(did, pp, FLAG_KEYS))
    if all(v is None for row in values for v in row):
        raise RuntimeError("flags were not decided locally: definitions not loaded?")
    clock = time.perf_counter_ns

    def bench(fn: Callable[[str, dict[str, Any]], Any], count: int) -> list[int]:
        out = []
        for i in range(min(count, 1000)):  # warm-up over every distinct_id: dedupe caches full
            did, pp = people[i % 1000]
            fn(did, pp)
        for i in range(count):
            did, pp = people[i % 1000]
            t0 = clock()
            fn(did, pp)
            out.append(clock() - t0)
        return out

    result: dict[str, Any] = {"values": values}
    try:
        single = bench(
            lambda did, pp: [client.flag_single(k, did, pp) for k in FLAG_KEYS], samples_n
        )
        result["single"] = summarize_ns(single)
        # Per flag: each sample evaluated both flags one call at a time.
        result["single_per_flag_us"] = result["single"]["median_us"] / len(FLAG_KEYS)
    except NotAvailable as e:
        result["single"] = {"na": str(e)}
    snap = bench(lambda did, pp: client.flag_snapshot(did, pp, FLAG_KEYS), samples_n)
    result["snapshot"] = summarize_ns(snap)
    client.flush(30)
    client.stop(30)
    return result


def _raise_nested(depth: int, exc_type: type[Exception] = ValueError) -> None:
    if depth == 0:
        try:
            {}["missing"]
        except KeyError as e:
            raise exc_type("order total could not be computed") from e
    _raise_nested(depth - 1, exc_type)


def _exception_types(count: int, batch: int = 0) -> list[type[Exception]]:
    """Distinct exception classes: a client that rate-limits per type captures every one."""
    return [type(f"CheckoutError{batch}_{i}", (ValueError,), {}) for i in range(count)]


def settled_count(
    sink: str, key: str, flush: Callable[[], Any], quiet: float = 1.0, limit: float = 30.0
) -> int:
    """The sink's event count for `key` once it stopped changing for `quiet` seconds.

    Exceptions may still be on their way through a client's background stage after `flush()`
    returns (phactor builds `$exception` events in an actor); flushing again until the count
    settles attributes each event to the part that caused it.
    """
    deadline = time.monotonic() + limit
    last = remote_counts(sink, key)["events"]
    stable_since = time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.1)
        flush()
        now = remote_counts(sink, key)["events"]
        if now != last:
            last, stable_since = now, time.monotonic()
        elif time.monotonic() - stable_since >= quiet:
            break
    return last


def case_errors(client: BenchClient, sink: str, params: dict[str, Any]) -> dict[str, Any]:
    """`log.exception` cost without and with the client's error tracking, and capture_exception.

    "baseline" is `log.exception` before the client starts (the row compared across clients).
    The handler's own cost is then measured in the same process, in alternating blocks: a block
    of calls with the client's logging handlers detached from the root logger, then a block with
    them attached, and so on. Every pair shares the same moment of the run, so a machine that
    speeds up or slows down (frequency scaling, neighbours on a shared VM) moves both sides
    alike. Before each detached block the client is flushed, so background work caused by the
    attached block (building and sending events) never runs during a detached one; during an
    attached block nothing is flushed, so whatever the client does in the background while the
    app logs is part of what the attached block costs.

    Each is measured with one exception type repeated (what a failing endpoint produces; a
    client may rate-limit it) and with a distinct type per call (every one captured), and the
    events each part delivered to the sink are recorded next to its timing.
    """
    samples_n = int(params["samples"])
    log_samples = int(params.get("log_samples", samples_n))
    block = max(1, min(int(params.get("block", 2000)), log_samples // 2))
    pairs = max(2, log_samples // block)
    warm = min(100, samples_n)
    # The app has logging configured (a handler on root) so that the baseline does not pay for
    # Python's last-resort stderr handler.
    root = logging.getLogger()
    root.addHandler(logging.NullHandler())
    log = logging.getLogger("app.checkout")
    clock = time.perf_counter_ns
    key = run_key(client, "errors")
    type_ids = iter(range(10**9))

    def run_block(call: Callable[[Exception, int], Any], n: int, distinct: bool) -> list[int]:
        types = _exception_types(n, next(type_ids)) if distinct else [ValueError]
        out = []
        for i in range(n):
            try:
                _raise_nested(8, types[i % len(types)])
            except ValueError as e:
                t0 = clock()
                call(e, i)
                dt = clock() - t0
            out.append(dt)
        return out

    def log_exception(e: Exception, i: int) -> None:
        log.exception("checkout failed for order %d", i)

    def capture_exception(e: Exception, i: int) -> None:
        client.capture_exception(e, f"user-{i % 1000}")

    def delivered(summary: dict[str, Any], before: int, calls: int) -> None:
        client.flush(30)
        summary["delivered"] = settled_count(sink, key, lambda: client.flush(30)) - before
        summary["calls"] = calls
        summary["delivered_of_calls"] = f"{summary['delivered']} of {calls}"

    def interleaved(handlers: list[logging.Handler], distinct: bool) -> dict[str, Any]:
        before = remote_counts(sink, key)["events"]
        attached: list[int] = []
        detached: list[int] = []
        wall = {"attached": 0, "detached": 0, "drain": 0}
        for h in handlers:
            root.removeHandler(h)
        run_block(log_exception, warm, distinct)
        client.flush(30)
        for _ in range(pairs):
            t0 = clock()
            detached.extend(run_block(log_exception, block, distinct))
            wall["detached"] += clock() - t0
            for h in handlers:
                root.addHandler(h)
            t0 = clock()
            attached.extend(run_block(log_exception, block, distinct))
            wall["attached"] += clock() - t0
            for h in handlers:
                root.removeHandler(h)
            # What the attached block left for the background (building, sending) ends here,
            # before the next detached block; its time is reported, not hidden.
            t0 = clock()
            client.flush(30)
            wall["drain"] += clock() - t0
        for h in handlers:
            root.addHandler(h)
        n = pairs * block
        summary: dict[str, Any] = summarize_ns(attached)
        summary["mean_us"] = sum(attached) / len(attached) / 1000
        summary["detached"] = summarize_ns(detached)
        summary["detached"]["mean_us"] = sum(detached) / len(detached) / 1000
        summary["ratio"] = summary["median_us"] / summary["detached"]["median_us"]
        summary["mean_ratio"] = summary["mean_us"] / summary["detached"]["mean_us"]
        # Wall time per iteration (raise + log + loop), and the drain after the attached block
        # spread over its calls: the whole cost of an exception to the process.
        summary["loop_wall_us"] = {
            "detached": wall["detached"] / n / 1000,
            "attached": wall["attached"] / n / 1000,
            "drain_after_attached": wall["drain"] / n / 1000,
        }
        summary["pairs"] = pairs
        summary["block"] = block
        delivered(summary, before, n)
        return summary

    baseline = run_block(log_exception, warm + samples_n, distinct=False)
    result: dict[str, Any] = {"baseline": summarize_ns(baseline[warm:])}
    handlers_before = list(root.handlers)
    client.start(sink, key, flush_at=FLUSH_AT, error_tracking=True)
    if client.error_handler_installed():
        handlers = [h for h in root.handlers if h not in handlers_before]
        result["with_handler"] = interleaved(handlers, distinct=False)
        result["with_handler_distinct"] = interleaved(handlers, distinct=True)
    else:
        na = {"na": f"{client.name} does not capture log.exception"}
        result["with_handler"] = result["with_handler_distinct"] = na
    for name, distinct in (("capture_exception", False), ("capture_exception_distinct", True)):
        try:
            before = remote_counts(sink, key)["events"]
            out: list[int] = []
            for start in range(0, warm + samples_n, 200):
                out.extend(run_block(capture_exception, min(200, warm + samples_n - start), distinct))
                client.flush(30)
            summary = summarize_ns(out[warm:])
            delivered(summary, before, len(out))
            result[name] = summary
        except NotAvailable as e:
            result[name] = {"na": str(e)}
    result["sink_events"] = remote_counts(sink, key)["events"]
    result["stats"] = client.stats()
    client.stop(30)
    return result


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


CASES: dict[str, Callable[[BenchClient, str, dict[str, Any]], dict[str, Any]]] = {
    "capture": case_capture,
    "throughput": case_throughput,
    "outage": case_outage,
    "flags": case_flags,
    "errors": case_errors,
    "start": case_start,
}


def child_main(client_name: str, case: str, sink: str, params: dict[str, Any]) -> dict[str, Any]:
    """Run one case for one client in this (fresh) process and return its result dict."""
    if client_name == "phactor":
        from benchmarks.cases_phactor import PhactorClient as Client
    elif client_name == "posthog":
        from benchmarks.cases_posthog import PosthogClient as Client  # type: ignore[assignment]
    else:
        raise ValueError(f"unknown client {client_name!r}")
    client = Client()
    try:
        result = CASES[case](client, sink, params)
    except NotAvailable as e:
        return {"na": str(e)}
    result["client_version"] = client.version
    result["settings"] = client.settings()
    result["pid"] = os.getpid()
    return result
