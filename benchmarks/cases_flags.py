"""The flags case: local evaluation of two flags, one call per flag and one snapshot for both."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from benchmarks.clients import BenchClient, NotAvailable
from benchmarks.measure import run_key, summarize_ns
from benchmarks.workload import FLAG_KEYS, FLUSH_AT, PERSONAL_API_KEY, person_properties

__all__ = ["case_flags"]


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
