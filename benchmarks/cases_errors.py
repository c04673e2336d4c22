"""The errors case: `log.exception` with and without the client's error tracking, capture_exception."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from benchmarks.clients import BenchClient, NotAvailable
from benchmarks.measure import run_key, summarize_ns
from benchmarks.sink import remote_counts
from benchmarks.workload import FLUSH_AT

__all__ = ["case_errors", "settled_count"]


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
                out.extend(
                    run_block(capture_exception, min(200, warm + samples_n - start), distinct)
                )
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
