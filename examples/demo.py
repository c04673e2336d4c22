"""The README demo: two named instances, one local PostHog-compatible endpoint.

Starts `phactor.devserver` on a free loopback port (the embedded default: nothing leaves this
machine), boots two instances as an app would at start-up — one per PostHog project — captures
through both with per-request context, flushes, and prints what the endpoint received.

    python examples/demo.py            # prints what arrived, then exits
    python examples/demo.py --serve    # ... then keeps the server up: open its page to look
"""

from __future__ import annotations

import logging
import signal
import sys
import threading

import phactor
from phactor.devserver import DevServer

log = logging.getLogger("shop")


def handle_request(user: str, plan: str) -> None:
    """What a web request handler does: context for the request, then plain captures."""
    with phactor.context({"distinct_id": user, "plan": plan}, instance="web"):
        phactor.capture("page_viewed", properties={"path": "/pricing"}, instance="web")
        phactor.capture("button_clicked", properties={"button": "upgrade"}, instance="web")
        if plan == "free":
            try:
                raise ValueError("card declined")
            except ValueError:
                # Plain logging: "web" turns this into an $exception event for this user.
                log.exception("checkout failed")
    # The billing project gets its own events, with its own config and context.
    phactor.capture("invoice_paid", user, {"amount": 42.5, "currency": "EUR"}, instance="billing")


def main(serve: bool = False) -> None:
    with DevServer() as server:
        print(f"local PostHog endpoint: {server.url}")
        # "web" tracks exceptions too (the default); "billing" opts out.
        phactor.start("web", api_key="phc_web_project", host=server.url,
                      global_properties={"service": "web"})
        phactor.start("billing", api_key="phc_billing_project", host=server.url,
                      enable_error_tracking=False)
        phactor.identify("user-1", {"email": "ada@example.com"}, instance="web")

        # Each thread is a request: its context never leaks into another thread.
        threads = [
            threading.Thread(target=handle_request, args=(f"user-{i}", "pro" if i % 2 else "free"))
            for i in range(1, 4)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

        for name in ("web", "billing"):
            phactor.flush(timeout=10, instance=name)
        for name in ("web", "billing"):
            stats = phactor.stats(instance=name)
            print(f"\ninstance {name!r}: children {phactor.instance(name).children()}")
            print(f"  captured={stats['captured']} sent={stats['sent']} dropped={stats['dropped']}")
        for api_key in ("phc_web_project", "phc_billing_project"):
            events = server.events(api_key=api_key)
            print(f"\n{len(events)} events arrived for {api_key}:")
            for e in events:
                props = {k: v for k, v in e["properties"].items() if not k.startswith("$")}
                if e["event"] == "$exception":
                    first = e["properties"]["$exception_list"][0]
                    props = {"type": first["type"], "value": first["value"]}
                print(f"  {e['event']:<16} {e['distinct_id']:<8} {props}")
        phactor.stop("web")
        phactor.stop("billing")
        if serve:
            wait_in_browser(server.url)


def wait_in_browser(url: str) -> None:
    """Keep the server up until Ctrl-C or SIGTERM, so its page can be opened."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    print(f"\nsee the events in a browser: {url}/  (Ctrl-C to stop)", flush=True)
    try:
        while not stop.wait(0.5):  # a timed wait keeps Ctrl-C responsive
            pass
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main(serve="--serve" in sys.argv[1:])
