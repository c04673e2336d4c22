"""From raw case results to figures: medians over rounds, phactor/posthog ratios, target verdicts.

`FIGURES` lists every row of the table (which case, which field, which target of issue 6); the
derived checks (flat p99 during the outage, bounded memory, issue 5's log.exception bound, flag
agreement) are computed per client.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from typing import Any

from benchmarks.clients import CLIENTS
from benchmarks.figures_pipeline import pipeline_checks, pipeline_figures

__all__ = ["FIGURES", "Figure", "compute_figures", "median_over_rounds"]


def dig(d: Any, path: str) -> Any:
    """`d["a"]["b"]` for path "a.b"; None when any step is missing."""
    for part in path.split("."):
        if not isinstance(d, dict) or part not in d:
            return None
        d = d[part]
    return d


def median_over_rounds(rounds: list[dict[str, Any]], path: str) -> float | str | None:
    """Median over rounds of a numeric field (a text field: the first round's); None if absent."""
    vals = [v for r in rounds if isinstance(v := dig(r, path), int | float)]
    if vals:
        return statistics.median(vals)
    texts = [v for r in rounds if isinstance(v := dig(r, path), str)]
    return " | ".join(dict.fromkeys(texts)) if texts else None


def why_na(rounds: list[dict[str, Any]], path: str) -> str:
    """The reason a figure is missing, from the rounds' na/error fields."""
    for r in rounds:
        for key in ("na", "error"):
            if key in r:
                return str(r[key])[:200]
        section = path.split(".")[0]
        if isinstance(r.get(section), dict) and "na" in r[section]:
            return str(r[section]["na"])
    return "no data"


@dataclass(frozen=True)
class Figure:
    """One row of the table: a field of a case, compared as phactor/posthog."""

    id: str
    label: str
    unit: str
    run: str
    path: str
    better: str = "lower"  # or "higher"
    target: float | None = None  # bound on the phactor/posthog ratio, read with `better`
    posthog_run: str | None = None  # compare with another posthog run (gzip on vs off)


FIGURES = [
    Figure("import_ms", "import time", "ms", "import", "median_ms", target=0.5),
    Figure(
        "boot_ms",
        "import + first start()/Client()",
        "ms",
        "import",
        "boot_median_ms",
        target=0.5,
    ),
    Figure("start_ms", "start()/Client() cost", "ms", "start", "start_ms"),
    Figure("start_threads", "threads per instance", "", "start", "threads_per_instance"),
    Figure(
        "idle_cpu", "idle CPU, 100 instances, nothing to send", "ms/10 s", "idle", "cpu_ms_per_10s"
    ),
    Figure("idle_wakeups", "idle wake-ups, 100 instances", "/s", "idle", "wakeups_per_s"),
    Figure("log_error_1", "log.error() no exception, 1 instance", "µs", "log_error", "one_us"),
    Figure("log_error_50", "log.error() no exception, 50 instances", "µs", "log_error", "many_us"),
    Figure(
        "log_error_handlers", "  root handlers, 50 instances", "", "log_error", "many_root_handlers"
    ),
    Figure("threads_1", "OS threads, 1 instance started", "", "threads", "threads_small"),
    Figure("threads_10", "OS threads, 10 instances started", "", "threads", "threads_mid"),
    Figure("threads_100", "OS threads, 100 instances started", "", "threads", "threads_large"),
    Figure(
        "threads_100_burst",
        "OS threads, 100 instances after 1,000 events each (settled)",
        "",
        "threads",
        "threads_large_burst",
    ),
    Figure("rss_1", "RSS, 1 instance started", "MiB", "threads", "rss_small_mib"),
    Figure("rss_10", "RSS, 10 instances started", "MiB", "threads", "rss_mid_mib"),
    Figure("rss_100", "RSS, 100 instances started", "MiB", "threads", "rss_large_mib"),
    Figure(
        "rss_100_burst",
        "RSS, 100 instances after 1,000 events each (settled)",
        "MiB",
        "threads",
        "rss_large_burst_mib",
    ),
    Figure(
        "capture_1t_median",
        "capture() 1 thread, median",
        "µs",
        "capture_1t",
        "median_us",
        target=0.2,
    ),
    Figure("capture_1t_p99", "capture() 1 thread, p99", "µs", "capture_1t", "p99_us"),
    Figure(
        "e2e_per_s",
        "end-to-end events/s (gzip off)",
        "ev/s",
        "e2e",
        "events_per_s",
        better="higher",
    ),
    Figure("e2e_cpu", "end-to-end client CPU per event", "µs", "e2e", "cpu_us_per_event"),
    Figure(
        "capture_4t_median",
        "capture() 4 threads, median",
        "µs",
        "capture_4t",
        "median_us",
        target=0.2,
    ),
    Figure("capture_4t_p99", "capture() 4 threads, p99", "µs", "capture_4t", "p99_us"),
    Figure(
        "throughput",
        "throughput, gzip off",
        "ev/s",
        "throughput",
        "events_per_s",
        better="higher",
        target=2.0,
    ),
    Figure(
        "throughput_gzip",
        "throughput, gzip on (both)",
        "ev/s",
        "throughput_gzip",
        "events_per_s",
        better="higher",
    ),
    Figure(
        "throughput_gzip_vs_default",
        "throughput, phactor gzip on vs posthog gzip off",
        "ev/s",
        "throughput_gzip",
        "events_per_s",
        better="higher",
        posthog_run="throughput",
    ),
    Figure("outage_median", "outage capture(), median", "µs", "outage", "median_us"),
    Figure("outage_p99", "outage capture(), p99", "µs", "outage", "p99_us"),
    Figure("outage_elapsed", "outage: time for all captures", "s", "outage", "elapsed_s"),
    Figure("outage_rss_growth", "outage: peak RSS growth", "MiB", "outage", "rss_growth_mib"),
    Figure("outage_peak_rss", "outage: peak RSS", "MiB", "outage", "peak_rss_mib"),
    Figure(
        "flags_single",
        "flag: get_feature_flag[_result] x2",
        "µs",
        "flags",
        "single.median_us",
        target=0.5,
    ),
    Figure(
        "flags_snapshot",
        "flags: evaluate_flags + get_flag x2",
        "µs",
        "flags",
        "snapshot.median_us",
        target=0.5,
    ),
    Figure(
        "flags_down_median",
        "flag call while /flags is down, median",
        "ms",
        "flags_down",
        "median_ms",
    ),
    Figure(
        "flags_down_total", "flag calls while /flags is down, total", "s", "flags_down", "total_s"
    ),
    Figure(
        "flags_async_per_s",
        "async evaluate_flags, 20 tasks",
        "ev/s",
        "flags_async",
        "per_s",
        better="higher",
    ),
    Figure(
        "flags_async_gap",
        "async evaluate_flags: longest loop stall",
        "ms",
        "flags_async",
        "max_loop_gap_ms",
    ),
    Figure(
        "flagload_first",
        "10k flag definitions: load",
        "ms",
        "flagload",
        "first_load_ms",
        target=1.0,
    ),
    Figure(
        "flagload_reload",
        "10k flag definitions: reload (200)",
        "ms",
        "flagload",
        "reload_ms",
        target=1.0,
    ),
    Figure(
        "flagload_304", "10k flag definitions: poll answered 304", "ms", "flagload", "poll_304_ms"
    ),
    Figure(
        "flagload_mem",
        "10k flag definitions: memory kept",
        "MiB",
        "flagload",
        "retained_mib",
        target=1.0,
    ),
    Figure(
        "flagload_objects",
        "10k flag definitions: GC-tracked objects",
        "",
        "flagload",
        "gc_objects",
        target=1.0,
    ),
    Figure(
        "flagload_gc", "10k flag definitions: full gc.collect()", "ms", "flagload", "gc_collect_ms"
    ),
    Figure("log_exception_base", "log.exception, no handler", "µs", "errors", "baseline.median_us"),
    Figure(
        "log_exception_detached",
        "log.exception, handler detached, 1 type",
        "µs",
        "errors",
        "with_handler.detached.median_us",
    ),
    Figure(
        "log_exception_handler",
        "log.exception, with handler, 1 type",
        "µs",
        "errors",
        "with_handler.median_us",
    ),
    Figure(
        "log_exception_handler_delivered",
        "  events delivered",
        "",
        "errors",
        "with_handler.delivered_of_calls",
    ),
    Figure(
        "log_exception_detached_distinct",
        "log.exception, handler detached, distinct types",
        "µs",
        "errors",
        "with_handler_distinct.detached.median_us",
    ),
    Figure(
        "log_exception_handler_distinct",
        "log.exception, with handler, distinct types",
        "µs",
        "errors",
        "with_handler_distinct.median_us",
    ),
    Figure(
        "log_exception_handler_distinct_delivered",
        "  events delivered",
        "",
        "errors",
        "with_handler_distinct.delivered_of_calls",
    ),
    Figure(
        "capture_exception",
        "capture_exception(), 1 type",
        "µs",
        "errors",
        "capture_exception.median_us",
    ),
    Figure(
        "capture_exception_delivered",
        "  events delivered",
        "",
        "errors",
        "capture_exception.delivered_of_calls",
    ),
    Figure(
        "capture_exception_distinct",
        "capture_exception(), distinct types",
        "µs",
        "errors",
        "capture_exception_distinct.median_us",
    ),
    Figure(
        "capture_exception_distinct_delivered",
        "  events delivered",
        "",
        "errors",
        "capture_exception_distinct.delivered_of_calls",
    ),
]
FIGURES += pipeline_figures(Figure)  # threads capturing at once, the host app's cost


def compute_figures(cases: dict[str, dict[str, list[dict[str, Any]]]]) -> list[dict[str, Any]]:
    """Medians, ratios and target verdicts for every figure, plus the derived outage checks."""
    rows = []
    for f in FIGURES:
        ph_rounds = cases.get(f.run, {}).get("phactor", [])
        po_rounds = cases.get(f.posthog_run or f.run, {}).get("posthog", [])
        ph = median_over_rounds(ph_rounds, f.path)
        po = median_over_rounds(po_rounds, f.path)
        numeric = isinstance(ph, int | float) and isinstance(po, int | float)
        ratio = ph / po if numeric and po else None
        met = None
        target_text = ""
        if f.target is not None:
            sign = "<=" if f.better == "lower" else ">="
            target_text = f"ratio {sign} {f.target:g}"
            if ratio is not None:
                met = ratio <= f.target if f.better == "lower" else ratio >= f.target
        rows.append(
            {
                "id": f.id,
                "label": f.label,
                "unit": f.unit,
                "phactor": ph,
                "posthog": po,
                "ratio": ratio,
                "better": f.better,
                "target": target_text,
                "target_met": met,
                "phactor_na": None if ph is not None else why_na(ph_rounds, f.path),
                "posthog_na": None if po is not None else why_na(po_rounds, f.path),
            }
        )
    rows.extend(thread_checks(cases))
    rows.extend(floor_checks(cases))
    rows.extend(outage_checks(cases))
    rows.extend(error_checks(cases))
    rows.extend(pipeline_checks(cases))
    rows.append(flags_agreement(cases))
    return rows


def thread_checks(cases: dict[str, dict[str, list[dict[str, Any]]]]) -> list[dict[str, Any]]:
    """Issue 16's bound: at most 2 OS threads per additional instance (1 -> 100 instances),
    after start and after a burst has settled, judged for phactor alone (posthog: 1 each)."""
    rows = []
    for field, label in (
        ("threads_per_instance_start", "OS threads per additional instance, started"),
        ("threads_per_instance_burst", "OS threads per additional instance, after a burst"),
        ("rss_per_instance_start_mib", "RSS per additional instance, started"),
        ("rss_per_instance_burst_mib", "RSS per additional instance, after a burst"),
    ):
        threads = field.startswith("threads")
        row: dict[str, Any] = {
            "id": field,
            "unit": "" if threads else "MiB",
            "better": "lower",
            "label": label,
            "target": "phactor <= 2" if threads else "",
            "ratio": None,
            "target_met": None,
        }
        for client in CLIENTS:
            row[client] = median_over_rounds(cases.get("threads", {}).get(client, []), field)
        value = row.get("phactor")
        if threads and isinstance(value, int | float):
            row["target_met"] = value <= 2
        rows.append(row)
    return rows


def floor_checks(cases: dict[str, dict[str, list[dict[str, Any]]]]) -> list[dict[str, Any]]:
    """Issue 16 item 7: each client against the floors of `cases_floor.py`, same run.

    capture() median over the floor's (<= 1.5), end-to-end events/s over the raw requests
    loop's (>= 0.8), client CPU per delivered event (<= 20 µs); the floors' own figures are
    in the labels and the rows' `floor` field.
    """
    specs = (
        ("capture_vs_floor", "capture() median vs the floor", "capture_1t", "floor",
         "median_us", "lower", 1.5, "{:.2f} µs"),
        ("e2e_vs_raw", "end-to-end events/s vs a raw requests loop", "e2e", "raw",
         "events_per_s", "higher", 0.8, "{:,.0f} ev/s"),
    )  # fmt: skip
    rows = []
    for row_id, label, run, base, path, better, target, shown in specs:
        floor = median_over_rounds(cases.get(run, {}).get(base, []), path)
        have = isinstance(floor, int | float) and floor > 0
        row: dict[str, Any] = {
            "id": row_id,
            "unit": "x",
            "better": better,
            "label": f"{label} ({base}: {shown.format(floor) if have else 'n/a'})",
            "target": f"phactor {'<=' if better == 'lower' else '>='} {target:g}",
            "ratio": None,
            "floor": floor if have else None,
        }
        for client in CLIENTS:
            value = median_over_rounds(cases.get(run, {}).get(client, []), path)
            row[client] = value / floor if have and isinstance(value, int | float) else None
        ph = row.get("phactor")
        row["target_met"] = (
            None if ph is None else (ph <= target if better == "lower" else ph >= target)
        )
        rows.append(row)
    raw_cpu = median_over_rounds(cases.get("e2e", {}).get("raw", []), "cpu_us_per_event")
    cpu: dict[str, Any] = {
        "id": "e2e_cpu_target",
        "unit": "µs",
        "better": "lower",
        "label": "  client CPU per delivered event"
        + (f" (raw loop: {raw_cpu:.1f} µs)" if isinstance(raw_cpu, int | float) else ""),
        "target": "phactor <= 20",
        "ratio": None,
        "floor": raw_cpu if isinstance(raw_cpu, int | float) else None,
    }
    for client in CLIENTS:
        value = median_over_rounds(cases.get("e2e", {}).get(client, []), "cpu_us_per_event")
        cpu[client] = value if isinstance(value, int | float) else None
    cpu["target_met"] = None if cpu["phactor"] is None else cpu["phactor"] <= 20.0
    rows.append(cpu)
    return rows


def outage_checks(cases: dict[str, dict[str, list[dict[str, Any]]]]) -> list[dict[str, Any]]:
    """Flat p99 and bounded RSS during the outage, judged per client (no ratio)."""
    flat: dict[str, Any] = {
        "id": "outage_p99_vs_normal",
        "unit": "x",
        "better": "lower",
        "label": "outage p99 / own normal 1-thread p99",
        "target": "phactor <= 2",
        "ratio": None,
    }
    windows: dict[str, Any] = {
        "id": "outage_p99_windows",
        "unit": "x",
        "better": "lower",
        "label": "outage: max/median of 10 window p99s",
        "target": "",
        "ratio": None,
        "target_met": None,
    }
    bound: dict[str, Any] = {
        "id": "outage_rss_bounded",
        "unit": "MiB",
        "better": "lower",
        "label": "outage: RSS growth bound (2 x queued events' serialized size)",
        "target": "phactor growth <= bound",
        "ratio": None,
    }
    drops: dict[str, Any] = {
        "id": "outage_dropped",
        "unit": "",
        "better": "",
        "label": "outage: refused / dropped (counted)",
        "target": "",
        "ratio": None,
        "target_met": None,
    }
    for client in CLIENTS:
        rounds = [r for r in cases.get("outage", {}).get(client, []) if "error" not in r]
        if not rounds or "na" in rounds[0]:
            flat[client] = windows[client] = bound[client] = drops[client] = None
            continue
        r = rounds[0]
        w = [x for x in r.get("window_p99_us", []) if x == x]
        windows[client] = (max(w) / statistics.median(w)) if w else None
        normal = median_over_rounds(cases.get("capture_1t", {}).get(client, []), "p99_us")
        flat[client] = r["p99_us"] / normal if isinstance(normal, float) and normal else None
        stats = r.get("stats") or {}
        queued_bytes = stats.get("queued_bytes") if isinstance(stats, dict) else None
        # The bound: growth <= 2x the serialized size of what sits in the queue. Only
        # phactor reports that size; posthog's row stays empty.
        bound[client] = 2 * queued_bytes / 2**20 if queued_bytes else None
        dropped = stats.get("dropped") if isinstance(stats, dict) else None
        drops[client] = (
            f"{r['refused']} refused; counted: {json.dumps(dropped)}"
            if dropped is not None
            else f"{r['refused']} refused; not counted (one log warning each)"
        )
    ph = cases.get("outage", {}).get("phactor", [])
    flat["target_met"] = None if flat.get("phactor") is None else flat["phactor"] <= 2.0
    bound["target_met"] = (
        None
        if bound.get("phactor") is None or not ph
        else ph[0]["rss_growth_mib"] <= bound["phactor"]
    )
    return [flat, windows, bound, drops]


def error_checks(cases: dict[str, dict[str, list[dict[str, Any]]]]) -> list[dict[str, Any]]:
    """Issue 5's bound: log.exception with the handler <= 2x the same call without it.

    Judged per client on the interleaved blocks of one process (attached median / detached
    median), median over rounds; posthog has no logging handler, so its cells stay empty. The
    mean ratio (it includes GIL stalls while the background builds events) and the background
    time left after the attached blocks are shown next to it, without a target.
    """
    rows = []
    for section, kind in (("with_handler", "1 type"), ("with_handler_distinct", "distinct types")):
        for field, label, target in (
            ("ratio", f"log.exception with / without handler, {kind}", 2.0),
            ("mean_ratio", f"  same, ratio of means, {kind}", None),
            (
                "loop_wall_us.drain_after_attached",
                f"  flush after attached blocks, per call, {kind}",
                None,
            ),
        ):
            row: dict[str, Any] = {
                "id": f"log_exception_{field.split('.')[-1]}_{section}",
                "unit": "µs" if field.startswith("loop") else "x",
                "better": "lower",
                "label": label,
                "target": f"phactor <= {target:g}" if target else "",
                "ratio": None,
            }
            for client in CLIENTS:
                rounds = cases.get("errors", {}).get(client, [])
                value = median_over_rounds(rounds, f"{section}.{field}")
                row[client] = value if isinstance(value, float) else None
            ph = row.get("phactor")
            row["target_met"] = None if ph is None or target is None else ph <= target
            rows.append(row)
    return rows


def flags_agreement(cases: dict[str, dict[str, list[dict[str, Any]]]]) -> dict[str, Any]:
    """Whether both clients decided the same values for the same 50 people."""
    row: dict[str, Any] = {
        "id": "flags_values_agree",
        "label": "flags: same values as posthog",
        "unit": "",
        "better": "",
        "target": "yes",
        "ratio": None,
        "phactor": None,
        "posthog": None,
        "target_met": None,
    }
    ph = [r for r in cases.get("flags", {}).get("phactor", []) if "values" in r]
    po = [r for r in cases.get("flags", {}).get("posthog", []) if "values" in r]
    if ph and po:
        agree = ph[0]["values"] == po[0]["values"]
        row["phactor"] = row["posthog"] = "yes" if agree else "NO"
        row["target_met"] = agree
    return row
