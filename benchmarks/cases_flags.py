"""The flags cases: local evaluation of two flags (one call per flag, one snapshot for both);
remote flag calls while `/flags` never answers; `evaluate_flags` from 20 asyncio tasks."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable
from typing import Any

from benchmarks.clients import BenchClient, NotAvailable
from benchmarks.measure import run_key, summarize_ns
from benchmarks.workload import FLAG_KEYS, FLUSH_AT, PERSONAL_API_KEY, person_properties

__all__ = ["case_flags", "case_flags_async", "case_flags_down"]


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


def _black_hole() -> tuple[socket.socket, str]:
    """A loopback port that accepts connections and never answers: `/flags` times out."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1024)
    return listener, f"http://127.0.0.1:{listener.getsockname()[1]}"


def case_flags_down(client: BenchClient, sink: str, params: dict[str, Any]) -> dict[str, Any]:
    """Remote flag calls while `/flags` never answers (each request times out after
    `timeout` s, the same for both clients): per call latency over `calls` calls for distinct
    users. phactor's breaker opens after 2 failed calls; posthog waits on every call."""
    calls = int(params["calls"])
    listener, url = _black_hole()
    try:
        key = run_key(client, "flags_down")
        client.start(url, key, flush_at=FLUSH_AT, flags_timeout=float(params["timeout"]))
        clock = time.perf_counter_ns
        samples = []
        for i in range(calls):
            t0 = clock()
            client.flag_remote(FLAG_KEYS[0], f"user-{i}")
            samples.append(clock() - t0)
        summary = summarize_ns(samples)
        result: dict[str, Any] = {
            "calls": calls,
            "timeout_s": params["timeout"],
            "median_ms": summary["median_us"] / 1000,
            "total_s": sum(samples) / 1e9,
            "stats_flags": (client.stats() or {}).get("flags"),
        }
        client.stop_bounded(2.0)
        return result
    finally:
        listener.close()


def case_flags_async(client: BenchClient, sink: str, params: dict[str, Any]) -> dict[str, Any]:
    """`evaluate_flags` from asyncio, 20 concurrent tasks (local evaluation on the sink's
    definitions): evaluations per second, and the longest stall of a 1 ms ticker task."""
    total = int(params["n"])
    tasks = int(params["tasks"])
    key = run_key(client, "flags_async")
    client.start(sink, key, flush_at=FLUSH_AT, personal_api_key=PERSONAL_API_KEY)
    client.load_flags()
    people = [(f"user-{i}", person_properties(i)) for i in range(1000)]

    async def main() -> dict[str, Any]:
        for did, pp in people[:100]:  # warm-up
            await client.flag_snapshot_async(did, pp, FLAG_KEYS)
        gaps = [0.0]
        done = asyncio.Event()

        async def ticker() -> None:
            last = time.perf_counter()
            while not done.is_set():
                await asyncio.sleep(0.001)
                now = time.perf_counter()
                gaps.append(now - last)
                last = now

        async def worker(offset: int) -> None:
            for i in range(offset, total, tasks):
                did, pp = people[i % 1000]
                await client.flag_snapshot_async(did, pp, FLAG_KEYS)

        tick = asyncio.create_task(ticker())
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(n) for n in range(tasks)))
        elapsed = time.perf_counter() - t0
        done.set()
        await tick
        return {"per_s": total / elapsed, "max_loop_gap_ms": max(gaps) * 1000, "n": total}

    result = asyncio.run(main())
    client.flush(30)
    client.stop(30)
    return result
