"""The flag-load case: 10,000 local-evaluation flag definitions loaded, reloaded, polled (304),
and what they keep alive (traced memory, GC-tracked objects, a full gc.collect()).

Each child serves the definitions itself (a loopback HTTP/1.1 server on a thread, with an ETag
answering 304 to a matching If-None-Match), so the body and the ETag are the same for both
clients; the server's thread takes the same GIL share from both.
"""

from __future__ import annotations

import gc
import hashlib
import json
import threading
import time
import tracemalloc
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from benchmarks.clients import BenchClient
from benchmarks.measure import run_key
from benchmarks.workload import PERSONAL_API_KEY

__all__ = ["case_flagload", "many_flag_definitions"]


def many_flag_definitions(n: int) -> dict[str, Any]:
    """`n` flags shaped like real ones: 2 conditions, 2-4 property filters (text, list,
    numeric, regex), a payload, a multivariate on every 4th."""
    flags = []
    for i in range(n):
        props: list[dict[str, Any]] = [
            {
                "key": "email",
                "operator": "icontains",
                "value": f"@corp{i % 50}.com",
                "type": "person",
            },
            {
                "key": "plan",
                "operator": "exact",
                "value": ["pro", "team", f"p{i}"],
                "type": "person",
            },
        ]
        if i % 3 == 0:
            props.append({"key": "age", "operator": "gt", "value": str(i % 90), "type": "person"})
        if i % 7 == 0:
            props.append(
                {"key": "url", "operator": "regex", "value": f"^/app/{i}/.*$", "type": "person"}
            )
        flag: dict[str, Any] = {
            "id": i,
            "key": f"flag-{i}",
            "name": f"Flag {i}",
            "active": True,
            "version": 1,
            "ensure_experience_continuity": False,
            "filters": {
                "groups": [
                    {"properties": props, "rollout_percentage": (i * 7) % 100},
                    {"properties": [], "rollout_percentage": 5},
                ],
                "payloads": {"true": json.dumps({"n": i})},
            },
        }
        if i % 4 == 0:
            flag["filters"]["multivariate"] = {
                "variants": [
                    {"key": "control", "rollout_percentage": 50},
                    {"key": "test", "rollout_percentage": 50},
                ]
            }
        flags.append(flag)
    return {"flags": flags, "group_type_mapping": {"0": "company"}, "cohorts": {}}


class _Server:
    """Serves one of two bodies on every GET, with an ETag when `etag` is on."""

    def __init__(self, full: bytes, small: bytes):
        self.bodies = {"full": full, "small": small}
        self.current = "small"
        self.etag = False
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                body = server.bodies[server.current]
                tag = '"' + hashlib.sha1(body).hexdigest() + '"'
                if server.etag and self.headers.get("If-None-Match") == tag:
                    self.send_response(304)
                    self.send_header("ETag", tag)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                if server.etag:
                    self.send_header("ETag", tag)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self.send_response(200)
                self.send_header("Content-Length", "12")
                self.end_headers()
                self.wfile.write(b'{"status":1}')

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"


def _ms(fn: Any) -> float:
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1000


def case_flagload(client: BenchClient, sink: str, params: dict[str, Any]) -> dict[str, Any]:
    """Load / reload / 304 poll of `flags` definitions, and what they keep alive."""
    del sink  # this case serves its own definitions (an ETag, 10,000 flags)
    n = int(params["flags"])
    server = _Server(
        json.dumps(many_flag_definitions(n)).encode(),
        json.dumps(many_flag_definitions(1)).encode(),
    )
    client.start(server.url, run_key(client, "flagload"), personal_api_key=PERSONAL_API_KEY)
    client.load_flags()  # 1 flag: the client's flag machinery is loaded and warm
    server.current = "full"
    result: dict[str, Any] = {"flags": n, "first_load_ms": _ms(client.load_flags)}
    reloads = sorted(_ms(client.load_flags) for _ in range(3))  # 200 with the same body
    result["reload_ms"] = reloads[1]
    server.etag = True
    client.load_flags()  # now the client holds the ETag
    polls = sorted(_ms(client.load_flags) for _ in range(9))
    result["poll_304_ms"] = polls[4]
    # What the definitions keep alive: from a 1-flag snapshot to the n-flag one.
    server.etag = False
    server.current = "small"
    client.load_flags()
    gc.collect()
    objects_before = len(gc.get_objects())
    tracemalloc.start()
    server.current = "full"
    client.load_flags()
    gc.collect()
    result["retained_mib"] = tracemalloc.get_traced_memory()[0] / 2**20
    tracemalloc.stop()
    result["gc_objects"] = len(gc.get_objects()) - objects_before
    result["gc_collect_ms"] = _ms(gc.collect)
    client.stop(10)
    server.httpd.shutdown()
    return result
