"""``examples/demo.py --serve`` ends by printing the viewer's URL and keeps the server up."""

from __future__ import annotations

import signal
from pathlib import Path

import requests
from devserver_client import spawned

ROOT = Path(__file__).resolve().parents[2]


def test_demo_with_serve_prints_the_page_url_and_keeps_serving_until_sigterm() -> None:
    # its stderr (the demo's log lines) is only read if the test fails; they are few
    with spawned(str(ROOT / "examples" / "demo.py"), "--serve") as process:
        assert process.stdout is not None
        lines = []
        for line in process.stdout:  # ends at EOF if the demo exits instead
            lines.append(line)
            if "see the events in a browser:" in line:
                break
        assert lines and "see the events in a browser:" in lines[-1], "".join(lines)
        url = lines[-1].split(": ", 1)[1].split()[0]
        page = requests.get(url, headers={"Accept": "text/html"}, timeout=5)
        assert page.ok and "viewer.js" in page.text
        listing = requests.get(url + "api/events", params={"order": "desc"}, timeout=5).json()
        assert listing["count"] == 11  # what the demo printed, still there to look at
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
