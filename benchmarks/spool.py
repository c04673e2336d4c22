"""Spool figures (issue 15): capture() cost and end-to-end throughput, spool off vs
`spool_sync="batch"` vs `"always"`, same run, same sink, each in a fresh interpreter.

    python -m benchmarks.spool            # 3 rounds
    python -m benchmarks.spool --quick    # 1 round, small N (a smoke run)

capture: median and p99 of `capture()` on the caller's thread, bursts of BURST captures with an
untimed flush between them (as the main harness). throughput: events/s from the first capture
until the sink counted all N, flush included. Ratios are against spool off, medians of rounds.
Targets (issue 15): batch capture <= 1.5x off, batch throughput >= 0.7x off; always is reported.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from benchmarks.sink import Sink

MODES = ("off", "batch", "always")

CHILD = r"""
import json, os, sys, time
import phactor
from benchmarks.sink import remote_wait
from benchmarks.workload import BURST, EVENT, FLUSH_AT, workload
sink, mode, spool_dir, n_capture, n_through, key = sys.argv[1:7]
n_capture, n_through = int(n_capture), int(n_through)
people = workload()
options = dict(api_key=key, host=sink, flush_at=FLUSH_AT, gzip=False,
               enable_error_tracking=False, max_queue_size=n_through + 1000)
if mode != "off":
    options.update(spool_dir=spool_dir, spool_sync=mode)
inst = phactor.start("bench", **options)
for i in range(200):  # warm-up
    d, p = people[i % len(people)]
    inst.capture(EVENT, d, p)
inst.flush(30)
times = []
done = 0
while done < n_capture:
    for i in range(min(BURST, n_capture - done)):
        d, p = people[i % len(people)]
        t0 = time.perf_counter_ns()
        inst.capture(EVENT, d, p)
        times.append(time.perf_counter_ns() - t0)
    done += BURST
    inst.flush(30)
times.sort()
base = remote_wait(sink, key, 0, 1)["events"]
t0 = time.perf_counter()
for i in range(n_through):
    d, p = people[i % len(people)]
    inst.capture(EVENT, d, p)
inst.flush(300)
ok = remote_wait(sink, key, base + n_through, 300)["ok"]
elapsed = time.perf_counter() - t0
inst.stop(10)
print(json.dumps({
    "median_us": times[len(times) // 2] / 1000, "p99_us": times[int(len(times) * 0.99)] / 1000,
    "throughput": n_through / elapsed if ok else 0.0,
}))
sys.stdout.flush()
os._exit(0)
"""


def run_one(sink: str, mode: str, n_capture: int, n_through: int, key: str) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as spool_dir:
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([root, *sys.path]))
        out = subprocess.run(
            [sys.executable, "-c", CHILD, sink, mode, spool_dir, str(n_capture),
             str(n_through), key],
            capture_output=True, text=True, timeout=900, env=env, check=True,
        )  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.spool")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int, default=None)
    args = parser.parse_args(argv)
    rounds = args.rounds or (1 if args.quick else 3)
    n_capture, n_through = (2000, 2000) if args.quick else (20_000, 50_000)
    results: dict[str, list[dict[str, float]]] = {m: [] for m in MODES}
    with Sink() as sink:
        for r in range(rounds):
            order = MODES if r % 2 == 0 else tuple(reversed(MODES))
            for mode in order:
                key = f"phc_spool_bench_{mode}_{r}_{time.time_ns()}"
                results[mode].append(run_one(sink.url, mode, n_capture, n_through, key))
                print(f"round {r + 1} {mode}: {results[mode][-1]}", file=sys.stderr)
    med = {
        m: {k: statistics.median(x[k] for x in results[m]) for k in results[m][0]} for m in MODES
    }
    off = med["off"]
    print("| spool_sync | capture median µs | p99 µs | x off | throughput ev/s | x off |")
    print("|---|---|---|---|---|---|")
    for m in MODES:
        f = med[m]
        print(
            f"| {m} | {f['median_us']:.1f} | {f['p99_us']:.1f} | "
            f"{f['median_us'] / off['median_us']:.2f} | {f['throughput']:.0f} | "
            f"{f['throughput'] / off['throughput']:.2f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
