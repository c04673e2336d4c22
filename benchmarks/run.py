"""Entry point of the benchmark: runs phactor and the `posthog` package side by side.

The parent process owns one loopback sink and starts one fresh child process per (round, case,
client), alternating which client goes first each round (`spawn.py`). Children run `child.CASES`
(`cases_*.py`) through a client adapter (`client_*.py`) and print one JSON line back. The parent
takes medians over rounds, computes phactor/posthog ratios, checks the targets of issue 6
(`figures.py`), prints a table and writes JSON (`report.py`).

    python -m benchmarks              # full run (several minutes)
    python -m benchmarks --quick      # smoke run (a few seconds; CI)
    python -m benchmarks --profile    # also a cProfile of phactor's capture() hot path
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.child import child_entry
from benchmarks.clients import CLIENTS, clients_for
from benchmarks.figures import compute_figures
from benchmarks.report import machine, text_table, update_readme, versions
from benchmarks.sink import Sink, down_url
from benchmarks.spawn import boot_time, import_time, phactor_availability, run_child
from benchmarks.workload import flag_definitions

PACKAGE_DIR = Path(__file__).resolve().parent
DEFAULT_OUTPUT = PACKAGE_DIR / "results" / "latest.json"


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
    flags_down_calls: int
    flags_down_timeout: float
    flags_async_n: int
    error_samples: int
    error_log_samples: int
    start_instances: int
    flagload_flags: int
    child_timeout: float
    idle_instances: int = 100
    idle_seconds: float = 5.0
    log_error_instances: int = 50
    threads_sizes: tuple[int, ...] = (1, 10, 100)
    threads_burst: int = 1_000
    threads_settle_s: float = 12.0
    e2e_n: int = 50_000
    threads_calls: int = 20_000
    host_seconds: float = 0.6
    host_reps: int = 7
    queue_seconds: float = 3.0


FULL = Sizes(
    rounds=3,
    outage_rounds=1,
    import_rounds=7,
    capture_samples=20_000,
    throughput_n=100_000,
    outage_n=1_000_000,
    flag_samples=5_000,
    flags_down_calls=20,
    flags_down_timeout=0.5,
    flags_async_n=20_000,
    error_samples=2_000,
    error_log_samples=8_000,
    start_instances=5,
    flagload_flags=10_000,
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
    flags_down_calls=3,
    flags_down_timeout=0.1,
    flags_async_n=400,
    error_samples=40,
    error_log_samples=80,
    start_instances=2,
    flagload_flags=200,
    child_timeout=60,
    idle_instances=5,
    idle_seconds=0.5,
    log_error_instances=3,
    threads_sizes=(1, 2, 3),
    threads_burst=50,
    threads_settle_s=0.2,
    e2e_n=1_000,
    threads_calls=320,
    host_seconds=0.05,
    host_reps=1,
    queue_seconds=0.05,
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
        # /flags never answers; both clients wait at most 0.5 s per request (posthog's default
        # is 3 s: the ratio is the same, the run 6x shorter).
        "flags_down": (
            "flags_down",
            {"calls": sizes.flags_down_calls, "timeout": sizes.flags_down_timeout},
        ),
        "flags_async": ("flags_async", {"n": sizes.flags_async_n, "tasks": 20}),
        "flagload": ("flagload", {"flags": sizes.flagload_flags}),
        "errors": (
            "errors",
            {"samples": sizes.error_samples, "log_samples": sizes.error_log_samples},
        ),
        "start": ("start", {"instances": sizes.start_instances}),
        "idle": ("idle", {"instances": sizes.idle_instances, "seconds": sizes.idle_seconds}),
        "log_error": (
            "log_error",
            {"instances": sizes.log_error_instances, "calls": 2_000},
        ),
        "threads": (
            "threads",
            {
                "sizes": list(sizes.threads_sizes),
                "burst": sizes.threads_burst,
                "settle_s": sizes.threads_settle_s,
            },
        ),
        "e2e": ("e2e", {"n": sizes.e2e_n}),
        "capture_threads": (
            "capture_threads",
            {"calls": sizes.threads_calls, "reps": sizes.host_reps},
        ),
        **{
            f"host_{k}k{'_gzip' if gzip else ''}": (
                "host_app",
                {
                    "rate": k * 1000,
                    "gzip": gzip,
                    "seconds": sizes.host_seconds,
                    "reps": sizes.host_reps,
                },
            )
            for k in (2, 20)
            for gzip in (False, True)
        },
        "host_10k_queue": (
            "host_app",
            {"rate": 10_000, "queue_full": True, "seconds": sizes.queue_seconds},
        ),
    }


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
            cases["import"] = measure_imports(sizes, phactor_na, sink.url)

        for rnd in range(sizes.rounds):
            order = CLIENTS if rnd % 2 == 0 else CLIENTS[::-1]
            for run_name in selected:
                case, params = plan[run_name]
                if run_name == "outage" and rnd >= sizes.outage_rounds:
                    continue
                for client in clients_for(run_name, order):
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


def measure_imports(
    sizes: Sizes, phactor_na: str | None, host: str
) -> dict[str, list[dict[str, Any]]]:
    """`import phactor` vs `import posthog`, and import + first instance (boot), fresh
    interpreters, alternating, after a warm-up."""
    results: dict[str, list[dict[str, Any]]] = {c: [] for c in CLIENTS}
    for client in CLIENTS:
        import_time(client, sizes.child_timeout)  # writes/refreshes the bytecode caches
    samples: dict[str, list[float]] = {c: [] for c in CLIENTS}
    boots: dict[str, list[float]] = {c: [] for c in CLIENTS}
    for rnd in range(sizes.import_rounds):
        for client in CLIENTS if rnd % 2 == 0 else CLIENTS[::-1]:
            t = import_time(client, sizes.child_timeout)
            if t is not None:
                samples[client].append(t * 1000)
            if client == "phactor" and phactor_na:
                continue
            b = boot_time(client, host, sizes.child_timeout)
            if b is not None:
                boots[client].append(b * 1000)
    for client in CLIENTS:
        if samples[client]:
            row: dict[str, Any] = {
                "median_ms": statistics.median(samples[client]),
                "samples_ms": samples[client],
            }
            if boots[client]:
                row["boot_median_ms"] = statistics.median(boots[client])
                row["boot_samples_ms"] = boots[client]
            results[client].append(row)
        else:
            results[client].append({"error": f"import {client} failed"})
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
        "throughput throughput_gzip outage flags flags_down flags_async flagload errors start idle "
        "log_error threads e2e capture_threads host_2k host_2k_gzip host_20k host_20k_gzip "
        "host_10k_queue",
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
