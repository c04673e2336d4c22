"""Several PostHog projects in one process: one named instance per project.

Each instance has its own api key, host, queue, Senders, context and stats; stopping one does
not touch the other.

    python examples/two_projects.py
"""

from __future__ import annotations

import phactor
from phactor.devserver import DevServer

with DevServer() as server:
    product = phactor.start("product", api_key="phc_product", host=server.url, flush_at=50)
    internal = phactor.start("internal", api_key="phc_internal", host=server.url,
                             global_properties={"team": "ops"}, enable_error_tracking=False)

    # Through the Instance object ...
    product.capture("checkout_completed", "user-7", {"total": 99.0})
    # ... or through the module functions with instance=.
    phactor.capture("deploy_finished", "ci-bot", {"sha": "abc123"}, instance="internal")

    # Context is per instance: this does not reach the "internal" project.
    product.set_context({"distinct_id": "user-7", "tier": "gold"})
    product.capture("report_viewed")
    internal.capture("report_viewed", "ci-bot")

    phactor.stop("product")          # "internal" keeps running
    print("running after stopping 'product':", phactor.instances())
    phactor.stop("internal")

    for key in ("phc_product", "phc_internal"):
        print(key, [(e["event"], e["distinct_id"], e["properties"].get("tier"))
                    for e in server.events(api_key=key)])
