"""A small Flask app with phactor's Flask extension, served over real HTTP on loopback.

Each request runs in its own phactor context: the frontend's `X-POSTHOG-DISTINCT-ID` /
`X-POSTHOG-SESSION-ID` headers and the request's URL, method, IP and user agent reach every event
the view captures, and nothing set in one request is seen by the next. A view that raises becomes
one `$exception` event with that context (and still a 500 page).

    pip install flask
    python examples/flask_app.py            # serves 3 requests, prints what PostHog received
"""

from __future__ import annotations

import threading

import requests
from flask import Flask, request
from werkzeug.serving import make_server

import phactor
from phactor.devserver import DevServer
from phactor.integrations.flask import PhactorFlask

app = Flask(__name__)
PhactorFlask(app)  # the "default" instance; started below, looked up per request


@app.post("/cart/<item>")
def add_to_cart(item: str) -> str:
    if request.args.get("coupon"):
        # Lasts only for this request, though it is set without a `with` block.
        phactor.set_context({"coupon": request.args["coupon"]})
    phactor.capture("added_to_cart", properties={"item": item})
    return "added\n"


@app.get("/checkout")
def checkout() -> str:
    raise RuntimeError("payment service unreachable")


if __name__ == "__main__":
    with DevServer() as posthog:  # a local PostHog endpoint; use your host and key instead
        phactor.start(api_key="phc_example", host=posthog.url)
        server = make_server("127.0.0.1", 0, app, threaded=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        base = f"http://127.0.0.1:{server.server_port}"

        as_user = {"X-POSTHOG-DISTINCT-ID": "user-1", "X-POSTHOG-SESSION-ID": "session-1"}
        requests.post(f"{base}/cart/book?coupon=SPRING", headers=as_user, timeout=5)
        requests.post(f"{base}/cart/pen", headers={"X-POSTHOG-DISTINCT-ID": "user-2"}, timeout=5)
        status = requests.get(f"{base}/checkout", headers=as_user, timeout=5).status_code
        print("checkout answered", status)

        server.shutdown()
        phactor.stop()
        for event in posthog.events():
            props = event["properties"]
            shown = {k: props[k] for k in ("item", "coupon", "$pathname", "$session_id") if k in props}
            print(f"{event['event']:<14} {event['distinct_id']:<7} {shown}")
