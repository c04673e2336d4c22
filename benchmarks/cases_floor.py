"""The floors (issue 16 item 7): what any client must spend, implemented here, in the same run.

Which run gets which baseline as a third client: `clients.BASELINES`.

- **capture() floor** (`FloorClient`): per event a UUIDv7, an ISO timestamp, the caller's
  properties merged with the fixed ones phactor's events carry (`$lib`, `$lib_version`,
  `$is_server`, the runtime properties, `$geoip_disable`), one `orjson.dumps` of the same
  event and a deque append. It runs as a third client of the `capture_1t` run (same case, same
  timing code, fresh process, alternating with phactor and posthog), so "capture() vs the floor"
  is phactor's median over the floor's.
- **delivery floor** (`RawLoopClient`): one thread, one `requests.Session` with its defaults,
  POSTing pre-built identical `/batch/` bodies (the same events, 100 per batch, uncompressed)
  to the same sink. `case_e2e` times it against the clients capturing and delivering the same
  number of events (gzip off): events/s from the first capture (or POST) until the sink has
  counted them all, and the process CPU time per event over that window.
"""

from __future__ import annotations

import collections
import random
import time
from typing import Any

import orjson

from benchmarks.clients import BenchClient
from benchmarks.measure import run_key
from benchmarks.sink import remote_wait
from benchmarks.workload import EVENT, FLUSH_AT, workload

__all__ = ["FloorClient", "RawLoopClient", "case_e2e"]


def _fixed_properties() -> dict[str, Any]:
    """The properties every event of phactor's carries (the same event on the wire): `$lib`,
    `$lib_version`, `$is_server`, the runtime ones and `$geoip_disable` (phactor's default)."""
    try:
        from phactor.runtime import lib_properties  # read-only data, computed before timing
    except Exception:  # phactor not importable: the same keys, read here
        import platform
        import sys

        return {
            "$python_runtime": platform.python_implementation(),
            "$python_version": "{}.{}.{}".format(*sys.version_info[:3]),
            "$os": platform.system(),
            "$os_version": platform.release(),
            "$is_server": True,
            "$lib": "floor",
            "$lib_version": "0",
            "$geoip_disable": True,
        }
    return {**lib_properties(), "$geoip_disable": True}


_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_NAIVE_UTC


class _Stamp:
    """UUIDv7 and ISO-8601 timestamp, the cheapest way plain Python makes them."""

    def __init__(self) -> None:
        self._bits = random.Random().getrandbits
        self._second = -1
        self._prefix = ""

    def uuid7(self) -> str:
        ms = time.time_ns() // 1_000_000
        rand = self._bits(74)
        value = (
            (ms << 80) | (0x7 << 76) | ((rand >> 62) << 64) | (0b10 << 62) | (rand & (2**62 - 1))
        )
        h = f"{value:032x}"
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"

    def iso(self) -> str:
        t = time.time()
        second = int(t)
        if second != self._second:
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = second
        return f"{self._prefix}.{int((t - second) * 1000):03d}Z"


class _Floor:
    """What any client must do per event: build it, serialise it once, append the bytes."""

    def __init__(self) -> None:
        self.queue: collections.deque[bytes] = collections.deque()
        self.stamp = _Stamp()
        self.fixed = _fixed_properties()

    def capture(self, event: str, distinct_id: str, properties: dict[str, Any]) -> str:
        stamp = self.stamp
        uuid = stamp.uuid7()
        message = {
            "event": event,
            "distinct_id": distinct_id,
            "properties": {**properties, **self.fixed},
            "timestamp": stamp.iso(),
            "uuid": uuid,
        }
        self.queue.append(orjson.dumps(message, option=_OPTIONS))
        return uuid


class FloorClient:
    """The capture() floor as a benchmark client (sends nothing). Like the other adapters it
    forwards each call to the implementation, so the adapter's own call is on both sides."""

    name = "floor"
    version = "-"

    def __init__(self) -> None:
        self._floor = _Floor()
        self._queue = self._floor.queue
        self._stamp = self._floor.stamp

    def start(self, host: str, key: str, **options: Any) -> None:
        self._queue.clear()

    def capture(self, event: str, distinct_id: str, properties: dict[str, Any]) -> Any:
        return self._floor.capture(event, distinct_id, properties)

    def flush(self, timeout: float) -> None:
        self._queue.clear()

    def stop(self, timeout: float) -> None:
        self._queue.clear()

    def stats(self) -> dict[str, Any] | None:
        return None

    def settings(self) -> dict[str, Any]:
        return {"floor": "uuid7 + ISO timestamp + merge + orjson.dumps + deque append"}


class RawLoopClient:
    """The delivery floor: one `requests.Session` POSTing pre-built batch bodies in a loop."""

    name = "raw"
    version = "-"

    def __init__(self) -> None:
        import requests

        self._requests = requests
        self._session: Any = None

    def bodies(self, key: str, n: int) -> list[bytes]:
        """`n` events of the workload as `/batch/` bodies of FLUSH_AT events, built untimed."""
        stamp = FloorClient()
        work = workload()
        events = []
        for i in range(n):
            did, props = work[i % len(work)]
            stamp.capture(EVENT, did, props)
            events.append(stamp._queue.pop())
        head = b'{"api_key":' + orjson.dumps(key) + b',"batch":['
        tail = b'],"sent_at":"' + stamp._stamp.iso().encode() + b'","historical_migration":false}'
        return [head + b",".join(events[i : i + FLUSH_AT]) + tail for i in range(0, n, FLUSH_AT)]

    def post_all(self, url: str, bodies: list[bytes]) -> int:
        """POST every body in order on one Session; the number answered 200."""
        if self._session is None:
            self._session = self._requests.Session()
        post = self._session.post
        headers = {"Content-Type": "application/json"}
        ok = 0
        for body in bodies:
            if post(url, data=body, headers=headers, timeout=15).status_code == 200:
                ok += 1
        return ok

    def settings(self) -> dict[str, Any]:
        return {"raw": "requests.Session() defaults, one thread, pre-built bodies, gzip off"}

    def stop(self, timeout: float) -> None:
        if self._session is not None:
            self._session.close()


def case_e2e(client: BenchClient, sink: str, params: dict[str, Any]) -> dict[str, Any]:
    """N events from the first capture (raw loop: first POST) until the sink counted them all:
    events/s and this process's CPU time per event (gzip off, flush_at 100)."""
    n = int(params["n"])
    key = run_key(client, "e2e")
    warm = 500
    if isinstance(client, RawLoopClient):
        bodies = client.bodies(key, warm + n)
        url = f"{sink}/batch/"
        client.post_all(url, bodies[: warm // FLUSH_AT])
        if not remote_wait(sink, key, warm, 30)["ok"]:
            raise RuntimeError("warm-up batches never reached the sink")
        timed = bodies[warm // FLUSH_AT :]
        cpu0, t0 = time.process_time(), time.perf_counter()
        client.post_all(url, timed)
        got = remote_wait(sink, key, warm + n, 300)
        t1, cpu1 = time.perf_counter(), time.process_time()
        client.stop(10)
        refused = 0
    else:
        client.start(sink, key, flush_at=FLUSH_AT, gzip=False, max_queue_size=n + 1000)
        work = workload()
        for i in range(warm):
            did, props = work[i % len(work)]
            client.capture(EVENT, did, props)
        client.flush(60)
        if not remote_wait(sink, key, warm, 30)["ok"]:
            raise RuntimeError("warm-up events never reached the sink")
        capture = client.capture
        nwork = len(work)
        refused = 0
        cpu0, t0 = time.process_time(), time.perf_counter()
        for i in range(n):
            did, props = work[i % nwork]
            if capture(EVENT, did, props) is None:
                refused += 1
        client.flush(300)
        got = remote_wait(sink, key, warm + n - refused, 300)
        t1, cpu1 = time.perf_counter(), time.process_time()
        client.stop(30)
    return {
        "n": n,
        "events_per_s": n / (t1 - t0),
        "cpu_us_per_event": (cpu1 - cpu0) / n * 1e6,
        "total_s": t1 - t0,
        "refused": refused,
        "complete": bool(got["ok"]) and refused == 0,
        "sink_events": got["events"] - warm,
        "sink_batches": got["batches"],
    }
