"""Capture through a named instance from anywhere in the code base.

Start it once (at boot) under a name; elsewhere, look it up by name — no client object to pass
around. Sends to the embedded dev endpoint (and prints what arrived there) unless POSTHOG_HOST
is set.

    python examples/named_instance.py
"""

from __future__ import annotations

import os

import phactor
from phactor.devserver import DevServer


def boot(host: str) -> None:
    phactor.start("analytics", api_key=os.environ.get("POSTHOG_API_KEY", "phc_example"), host=host)


def somewhere_deep_in_the_code(user_id: str) -> None:
    phactor.capture("report_exported", user_id, {"format": "csv"}, instance="analytics")
    phactor.instance("analytics").set(user_id, {"last_export": "csv"})


if __name__ == "__main__":
    with DevServer() as dev:
        boot(os.environ.get("POSTHOG_HOST") or dev.url)
        somewhere_deep_in_the_code("user-42")
        phactor.flush(timeout=5, instance="analytics")
        print(phactor.stats(instance="analytics"))
        phactor.stop("analytics")
        if not os.environ.get("POSTHOG_HOST"):
            for e in dev.events():
                print(e["event"], e["distinct_id"], e["raw"].get("$set"))
