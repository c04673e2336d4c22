"""Entry point of the benchmark: runs phactor and the `posthog` package side by side.

The parent process owns one loopback sink and starts one fresh child process per (round, case,
client), alternating which client goes first each round. Children run `workload.CASES` through a
client adapter and print one JSON line back. The parent takes medians over rounds, computes
phactor/posthog ratios, checks the targets of issue 6, prints a table and writes JSON.

    python -m benchmarks              # full run (several minutes)
    python -m benchmarks --quick      # smoke run (a few seconds; CI)
    python -m benchmarks --profile    # also a cProfile of phactor's capture() hot path
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.sink import Sink, down_url
from benchmarks.workload import flag_definitions

CLIENTS = ("phactor", "posthog")
PACKAGE_DIR = Path(__file__).resolve().parent
REPO_ROOT = PACKAGE_DIR.parent
DEFAULT_OUTPUT = PACKAGE_DIR / "results" / "latest.json"
RESULT_PREFIX = "BENCH_RESULT "
README_START = "<!-- results:start -->"
README_END = "<!-- results:end -->"


@dataclass(frozen=True)
class Sizes:
    """How much work each case does; `--quick` shrinks everything to a smoke run."""

    rounds: int
    outage_rounds: int
    import_rounds: int
    capture_samples: int
    throughput_n: int
    outage_n: int
    flag_samples: int
    error_samples: int
    error_log_samples: int
    start_instances: int
    child_timeout: float


FULL = Sizes(
    rounds=3,
    outage_rounds=1,
    import_rounds=7,
    capture_samples=20_000,
    throughput_n=100_000,
    outage_n=1_000_000,
    flag_samples=5_000,
    error_samples=2_000,
    error_log_samples=8_000,
    start_instances=5,
    child_timeout=900,
)
QUICK = Sizes(
    rounds=1,
    outage_rounds=1,
    import_rounds=1,
    capture_samples=400,
    throughput_n=2_000,
    outage_n=5_000,
    flag_samples=200,
    error_samples=40,
    error_log_samples=80,
    start_instances=2,
    child_timeout=60,
)


def case_plan(sizes: Sizes, down: str) -> dict[str, tuple[str, dict[str, Any]]]:
    """Benchmark run name -> (workload case, params)."""
    return {
        "capture_1t": ("capture", {"threads": 1, "samples": sizes.capture_samples}),
        "capture_4t": ("capture", {"threads": 4, "samples": sizes.capture_samples}),
        "throughput": ("throughput", {"n": sizes.throughput_n, "gzip": False}),
        "throughput_gzip": ("throughput", {"n": sizes.throughput_n, "gzip": True}),
        "outage": ("outage", {"n": sizes.outage_n, "down_url": down, "stop_timeout": 2.0}),
        "flags": ("flags", {"samples": sizes.flag_samples}),
        "errors": (
            "errors",
            {"samples": sizes.error_samples, "log_samples": sizes.error_log_samples},
        ),
        "start": ("start", {"instances": sizes.start_instances}),
    }


# -- children -------------------------------------------------------------------------------------
def child_env() -> dict[str, str]:
    """The environment of every child: loopback never proxied, no posthog env overrides."""
    env = dict(os.environ)
    for k in ("POSTHOG_CAPTURE_MODE", "POSTHOG_CAPTURE_COMPRESSION", "POSTHOG_RELEASE_ID"):
        env.pop(k, None)
    # Both packages must import from cached bytecode, as an installed wheel does. posthog's
    # wheel was byte-compiled by pip; phactor (an editable checkout here) only gets .pyc files
    # if the environment allows writing them, so a machine-wide PYTHONDONTWRITEBYTECODE=1 would
    # charge phactor a full compile on every import.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
    return env


def run_child(spec: dict[str, Any], timeout: float, quiet_stderr: bool = False) -> dict[str, Any]:
    """Run one case in a fresh interpreter; its result dict, or {"error": ...}."""
    cmd = [sys.executable, "-m", "benchmarks.run", "--child", json.dumps(spec)]
    with tempfile.TemporaryFile() as err:
        try:
            proc = subprocess.run(
                cmd,
                cwd=REPO_ROOT,
                env=child_env(),
                stdout=subprocess.PIPE,
                # An outage makes clients log one warning per dropped event: millions of lines.
                stderr=subprocess.DEVNULL if quiet_stderr else err,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return {"error": f"timed out after {timeout:.0f} s"}
        for line in reversed(proc.stdout.decode(errors="replace").splitlines()):
            if line.startswith(RESULT_PREFIX):
                return json.loads(line[len(RESULT_PREFIX) :])
        err.seek(0)
        tail = err.read()[-1500:].decode(errors="replace")
        return {"error": f"exit code {proc.returncode}; stderr tail: {tail}"}


def child_entry(spec_json: str) -> None:
    """Body of a child process: run the case, print the result line, exit hard.

    os._exit skips atexit hooks: a client whose shutdown would retry against a down endpoint
    cannot keep the child alive, and both clients are treated the same way.
    """
    spec = json.loads(spec_json)
    try:
        if spec.get("profile"):
            from benchmarks.cases_phactor import profile_capture

            result: dict[str, Any] = {"profile": profile_capture(spec["sink"], spec["calls"])}
        else:
            from benchmarks.workload import child_main

            result = child_main(spec["client"], spec["case"], spec["sink"], spec["params"])
    except Exception as e:
        import traceback

        result = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()[-3000:]}
    sys.stdout.write(RESULT_PREFIX + json.dumps(result, default=str) + "\n")
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def import_time(module: str, timeout: float) -> float | None:
    """Seconds `import <module>` takes in a fresh interpreter (bytecode already cached)."""
    code = (
        "import time; t = time.perf_counter(); import " + module + "; "
        "print(time.perf_counter() - t)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        env=child_env(),
        capture_output=True,
        timeout=timeout,
        check=False,
    )
    if proc.returncode != 0:
        return None
    return float(proc.stdout.decode().strip().splitlines()[-1])


def phactor_availability(timeout: float) -> str | None:
    """None when phactor's runtime is importable and startable, else the reason (in a child)."""
    code = (
        "from benchmarks.cases_phactor import availability; r = availability(); "
        "print('OK' if r is None else r)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        env=child_env(),
        capture_output=True,
        timeout=timeout,
        check=False,
    )
    out = proc.stdout.decode().strip()
    if proc.returncode != 0:
        return f"availability check failed: {proc.stderr.decode()[-500:]}"
    return None if out.endswith("OK") else out


# -- aggregation ----------------------------------------------------------------------------------
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
    Figure("start_ms", "start()/Client() cost", "ms", "start", "start_ms"),
    Figure("start_threads", "threads per instance", "", "start", "threads_per_instance"),
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
    rows.extend(outage_checks(cases))
    rows.extend(error_checks(cases))
    rows.append(flags_agreement(cases))
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


# -- output ---------------------------------------------------------------------------------------
def fmt(v: Any, unit: str = "") -> str:
    """A table cell."""
    if v is None:
        return "n/a"
    if isinstance(v, str):
        return v
    if isinstance(v, float):
        if abs(v) >= 1000:
            return f"{v:,.0f}"
        if abs(v) >= 100:
            return f"{v:.0f}"
        if abs(v) >= 10:
            return f"{v:.1f}"
        return f"{v:.2f}"
    return str(v)


def table_rows(figures: list[dict[str, Any]]) -> list[list[str]]:
    """Header plus one row per figure, as strings."""
    rows = [["figure", "unit", "phactor", "posthog", "ratio", "target", "met"]]
    for f in figures:
        met = {True: "yes", False: "NO", None: "n/a" if f["target"] else ""}[f["target_met"]]
        rows.append(
            [
                f["label"],
                f["unit"],
                fmt(f.get("phactor")),
                fmt(f.get("posthog")),
                fmt(f["ratio"]) if f["ratio"] is not None else "",
                f["target"],
                met,
            ]
        )
    return rows


def text_table(figures: list[dict[str, Any]]) -> str:
    """A fixed-width table for the terminal."""
    rows = table_rows(figures)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for n, r in enumerate(rows):
        lines.append(
            "  ".join(
                c.ljust(widths[i]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(r)
            ).rstrip()
        )
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown_table(figures: list[dict[str, Any]]) -> str:
    """The same table in Markdown (for the README)."""
    rows = table_rows(figures)
    out = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    out += ["| " + " | ".join(c.replace("|", "/") for c in r) + " |" for r in rows[1:]]
    return "\n".join(out)


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu_model": cpu,
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
    }


def versions() -> dict[str, str | None]:
    """Installed versions of both clients (from package metadata, without importing them)."""
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {}
    for name in CLIENTS:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def update_readme(readme: Path, meta: dict[str, Any], figures: list[dict[str, Any]]) -> None:
    """Replace the results block of benchmarks/README.md with this run's table."""
    text = readme.read_text()
    if README_START not in text or README_END not in text:
        return
    m = meta["machine"]
    block = (
        f"{README_START}\n"
        f"Measured {meta['date']} on {m['nproc']} x {m['cpu_model']}, Python {m['python']} "
        f"({m['platform']}); phactor {meta['versions']['phactor']}, "
        f"posthog {meta['versions']['posthog']}; {meta['mode']} mode, "
        f"{meta['rounds']} round(s).\n\n"
        f"{markdown_table(figures)}\n{README_END}"
    )
    head, rest = text.split(README_START, 1)
    tail = rest.split(README_END, 1)[1]
    readme.write_text(head + block + tail)


# -- main -----------------------------------------------------------------------------------------
def run(args: argparse.Namespace) -> int:
    """Run every selected case for both clients, print the table, write JSON."""
    sizes = QUICK if args.quick else FULL
    if args.rounds:
        sizes = Sizes(**{**sizes.__dict__, "rounds": args.rounds})
    t_begin = time.perf_counter()
    phactor_na = phactor_availability(sizes.child_timeout)
    if phactor_na:
        print(f"phactor side: n/a ({phactor_na})", file=sys.stderr)

    cases: dict[str, dict[str, list[dict[str, Any]]]] = {}
    with Sink(flag_definitions()) as sink:
        down = down_url()
        plan = case_plan(sizes, down)
        selected = [c for c in plan if not args.only or c in args.only]
        include_import = not args.only or "import" in args.only

        if include_import:
            cases["import"] = measure_imports(sizes, phactor_na)

        for rnd in range(sizes.rounds):
            order = CLIENTS if rnd % 2 == 0 else CLIENTS[::-1]
            for run_name in selected:
                case, params = plan[run_name]
                if run_name == "outage" and rnd >= sizes.outage_rounds:
                    continue
                for client in order:
                    slot = cases.setdefault(run_name, {}).setdefault(client, [])
                    if client == "phactor" and phactor_na:
                        slot.append({"na": phactor_na})
                        continue
                    spec = {"client": client, "case": case, "sink": sink.url, "params": params}
                    t0 = time.perf_counter()
                    result = run_child(spec, sizes.child_timeout, quiet_stderr=case == "outage")
                    slot.append(result)
                    status = "error" if "error" in result else ("n/a" if "na" in result else "ok")
                    print(
                        f"  round {rnd + 1}/{sizes.rounds} {run_name:<16} {client:<8} "
                        f"{status:<5} {time.perf_counter() - t0:6.1f} s",
                        file=sys.stderr,
                    )
                    if status == "error":
                        print("    " + str(result["error"])[:400], file=sys.stderr)

        profile = None
        if args.profile and not phactor_na:
            spec = {"profile": True, "sink": sink.url, "calls": 2_000 if args.quick else 20_000}
            profile = run_child(spec, sizes.child_timeout)

    figures = compute_figures(cases)
    meta = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "mode": "quick" if args.quick else "full",
        "rounds": sizes.rounds,
        "sizes": sizes.__dict__,
        "machine": machine(),
        "versions": versions(),
        "phactor_na": phactor_na,
        "wall_s": round(time.perf_counter() - t_begin, 1),
        "fairness": {
            "sink": "one loopback HTTP/1.1 keep-alive sink (benchmarks/sink.py) for both",
            "flush_at": 100,
            "gzip": "off for both unless the run name says gzip (posthog's default is off, "
            "phactor's is on)",
            "throughput_max_queue_size": "N + 1000 for both, so neither drops",
            "posthog_defaults": "gzip=False flush_at=100 flush_interval=5 max_queue_size=10000 "
            "thread=1 max_retries=3 timeout=15 capture_mode=v0",
            "warm_up": "every case warms the client before timing",
        },
    }
    out = {"meta": meta, "figures": figures, "cases": cases}
    if profile is not None:
        out["phactor_capture_profile"] = profile.get("profile") or profile.get("error")

    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(out, indent=2, default=str) + "\n")

    m = meta["machine"]
    print(
        f"\nphactor {meta['versions']['phactor']} vs posthog {meta['versions']['posthog']} - "
        f"{m['nproc']} x {m['cpu_model']}, Python {m['python']}, {meta['date']}, "
        f"{meta['mode']} mode, {sizes.rounds} round(s); ratio = phactor/posthog (medians)\n"
    )
    print(text_table(figures))
    na = [f for f in figures if f.get("phactor_na") and f["phactor_na"] != "no data"]
    if na:
        print("\nn/a reasons (phactor):")
        for reason in dict.fromkeys(f["phactor_na"] for f in na):
            print(f"  {reason}")
    if profile is not None:
        print("\ncProfile of phactor capture() (caller thread, top 15 by tottime):")
        print(out["phactor_capture_profile"])
    print(f"\nJSON written to {output}")
    if args.update_readme:
        update_readme(PACKAGE_DIR / "README.md", meta, figures)
    return 0


def measure_imports(sizes: Sizes, phactor_na: str | None) -> dict[str, list[dict[str, Any]]]:
    """`import phactor` vs `import posthog`, fresh interpreters, alternating, after a warm-up."""
    results: dict[str, list[dict[str, Any]]] = {c: [] for c in CLIENTS}
    for client in CLIENTS:
        import_time(client, sizes.child_timeout)  # writes/refreshes the bytecode caches
    samples: dict[str, list[float]] = {c: [] for c in CLIENTS}
    for rnd in range(sizes.import_rounds):
        for client in CLIENTS if rnd % 2 == 0 else CLIENTS[::-1]:
            t = import_time(client, sizes.child_timeout)
            if t is not None:
                samples[client].append(t * 1000)
    for client in CLIENTS:
        if samples[client]:
            results[client].append(
                {"median_ms": statistics.median(samples[client]), "samples_ms": samples[client]}
            )
        else:
            results[client].append({"error": f"import {client} failed"})
    del phactor_na  # importing phactor works even before its runtime exists
    return results


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke run: tiny sizes, 1 round")
    p.add_argument("--rounds", type=int, default=0, help="override the number of rounds")
    p.add_argument(
        "--only",
        nargs="*",
        help="run only these: import capture_1t capture_4t "
        "throughput throughput_gzip outage flags errors start",
    )
    p.add_argument("--output", default=str(DEFAULT_OUTPUT), help="where to write the JSON")
    p.add_argument("--profile", action="store_true", help="cProfile phactor's capture() too")
    p.add_argument(
        "--update-readme",
        action="store_true",
        help="replace the results table in benchmarks/README.md",
    )
    p.add_argument("--child", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """`python -m benchmarks` / `python -m benchmarks.run`."""
    args = parse_args(argv)
    if args.child:
        child_entry(args.child)
        return 0  # not reached: the child exits hard
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
