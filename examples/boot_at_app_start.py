"""Start phactor once at app boot; capture from request handlers; stop at shutdown.

A plain WSGI app (stdlib `wsgiref`), so it runs anywhere. The same three steps apply to Django
(`AppConfig.ready`), Flask (app factory), FastAPI (lifespan) and Celery (`worker_process_init`):
start at boot, capture anywhere, `phactor.stop()` in the shutdown hook (atexit covers SIGTERM
in most servers too).

    python examples/boot_at_app_start.py          # serves 3 requests to itself, then exits
    POSTHOG_API_KEY=phc_... POSTHOG_HOST=https://us.i.posthog.com python examples/boot_at_app_start.py
"""

from __future__ import annotations

import os
import threading
import urllib.request
from wsgiref.simple_server import WSGIRequestHandler, make_server

import phactor
from phactor.devserver import DevServer

# --- boot -----------------------------------------------------------------------------------
dev = None
if "POSTHOG_HOST" not in os.environ:
    dev = DevServer().start()  # the embedded default: nothing leaves this machine
phactor.start(
    api_key=os.environ.get("POSTHOG_API_KEY", "phc_example"),
    host=os.environ.get("POSTHOG_HOST") or dev.url,  # type: ignore[union-attr]
    global_properties={"service": "example-wsgi"},
)


# --- request handling -----------------------------------------------------------------------
def app(environ, start_response):  # type: ignore[no-untyped-def]
    user = environ.get("HTTP_X_USER", "anonymous")
    # Per-request context: applies to every capture in this thread, gone after the block.
    with phactor.context({"distinct_id": user, "$current_url": environ.get("PATH_INFO")}):
        phactor.capture("page_viewed")
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello\n"]


class QuietHandler(WSGIRequestHandler):
    def log_message(self, *args):  # type: ignore[no-untyped-def]
        pass


def main() -> None:
    server = make_server("127.0.0.1", 0, app, handler_class=QuietHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    for user in ("ada", "grace", "linus"):
        req = urllib.request.Request(f"http://127.0.0.1:{server.server_port}/", headers={"X-User": user})
        urllib.request.urlopen(req).read()
    server.shutdown()
    # --- shutdown hook ----------------------------------------------------------------------
    phactor.stop(timeout=5)
    print("stats:", _inst.stats())
    if dev is not None:
        for e in dev.events():
            print(f"  {e['event']} {e['distinct_id']} {e['properties'].get('$current_url')}")
        dev.stop()

_inst = phactor.instance()

if __name__ == "__main__":
    main()
