"""The devserver's live event viewer in a real headless Chromium: events captured through phactor
appear without a reload, filters narrow them, an event's JSON opens, untrusted HTML in an event is
shown as text and runs nothing, an $exception shows its frames and flag calls group per flag.

Skips when no Chromium is installed (``.ci/run`` installs Debian's ``chromium``, so CI runs it).
A screenshot of the page is written under the test's tmp dir and its path printed.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from conftest import StartInstance
from headless_chromium import Browser, find_chromium

from phactor.devserver import DevServer

CHROMIUM = find_chromium()
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="no chromium binary (apt-get install chromium, or set PHACTOR_CHROMIUM)",
)

KEY = "phc_viewer_browser_test"
HOSTILE_PROP = '<img src=x onerror="window.__pwned = 1">'
HOSTILE_NAME = "<script>window.__pwned = 2</script>"


@pytest.fixture
def browser() -> Iterator[Browser]:
    assert CHROMIUM is not None
    with Browser(CHROMIUM) as running:
        yield running


def rows_text(browser: Browser) -> list[str]:
    return browser.evaluate(
        "Array.from(document.querySelectorAll('#rows tr')).map(tr => tr.textContent)"
    )


def fail_in_a_helper() -> None:
    raise ValueError("the viewer shows this message")


def test_the_viewer_shows_live_events_filters_opens_json_and_escapes(
    browser: Browser,
    start_instance: StartInstance,
    tmp_path: Path,
) -> None:
    with DevServer(flags={"exp": "test"}) as server:
        browser.navigate(server.url + "/")
        assert browser.wait_for("document.body && document.body.dataset.state === 'ready'")
        assert browser.evaluate("document.querySelectorAll('#rows tr').length") == 0
        browser.evaluate("window.__sameDocument = true")  # gone if the page reloads

        inst = start_instance(
            api_key=KEY, host=server.url, flush_interval=3600.0, enable_error_tracking=False
        )
        signed_up = inst.capture("signed_up", "alice", {"plan": "pro", "note": HOSTILE_PROP})
        inst.capture("clicked", "bob", {"button": "buy"})
        inst.capture(HOSTILE_NAME, "mallory")
        try:
            fail_in_a_helper()
        except ValueError as exc:
            inst.capture_exception(exc, distinct_id="alice")
        assert inst.get_feature_flag("exp", "carol") == "test"
        assert inst.flush(timeout=10)
        assert server.wait_for(5, timeout=10)

        # live: the rows arrive by polling, in the same document
        assert browser.wait_for("document.querySelectorAll('#rows tr').length === 5")
        assert browser.evaluate("window.__sameDocument") is True
        texts = rows_text(browser)
        ids = browser.evaluate(
            "Array.from(document.querySelectorAll('#rows tr')).map(tr => Number(tr.dataset.id))"
        )
        assert ids == sorted(ids, reverse=True)  # newest first
        assert "signed_up" in texts[-1]
        assert KEY not in " ".join(texts)  # the api key is masked
        assert any(KEY[:6] + "…" in t for t in texts)

        # untrusted HTML is text: shown literally, no element made from it, nothing ran
        assert any(HOSTILE_PROP in t for t in texts)
        assert any(HOSTILE_NAME in t for t in texts)
        assert browser.evaluate("document.querySelectorAll('#rows img, #rows script').length") == 0
        assert browser.evaluate("typeof window.__pwned") == "undefined"

        # a filter narrows the table on the server side
        browser.evaluate(
            "(() => { const f = document.getElementById('f-event'); f.value = 'signed_up';"
            " f.dispatchEvent(new Event('input')); })()"
        )
        assert browser.wait_for("document.querySelectorAll('#rows tr').length === 1")
        assert "alice" in rows_text(browser)[0]
        assert browser.evaluate("document.getElementById('match-count').textContent") == "1 event"

        # a click opens the event's full JSON
        browser.evaluate("document.querySelector('#rows tr').click()")
        assert browser.wait_for("!document.getElementById('detail').hidden")
        shown = json.loads(browser.evaluate("document.getElementById('json').textContent"))
        assert (shown["uuid"], shown["properties"]["note"]) == (signed_up, HOSTILE_PROP)
        assert shown["api_key"] != KEY and shown["api_key"].startswith(KEY[:6])  # masked
        assert browser.evaluate("document.querySelectorAll('#detail img').length") == 0

        # an $exception: type, message and the stack with its source lines
        browser.evaluate(
            "(() => { const f = document.getElementById('f-event'); f.value = '$exception';"
            " f.dispatchEvent(new Event('input')); })()"
        )
        assert browser.wait_for(
            "document.querySelectorAll('#rows tr').length === 1"
            " && document.querySelector('#rows tr').textContent.includes('ValueError')"
        )
        browser.evaluate("document.querySelector('#rows tr').click()")
        assert browser.wait_for("document.querySelector('#exception .exc') !== null")
        exception = browser.evaluate("document.getElementById('exception').textContent")
        assert "ValueError: the viewer shows this message" in exception
        assert "in fail_in_a_helper" in exception and "test_devserver_viewer.py" in exception
        assert 'raise ValueError("the viewer shows this message")' in exception
        current = browser.evaluate("document.querySelector('#exception .current').textContent")
        assert "fail_in_a_helper()" in current or "raise ValueError" in current

        # flag calls grouped per flag: who got which variant
        assert browser.wait_for("document.querySelector('#flag-groups [data-flag=\"exp\"]')")
        group = browser.evaluate(
            "document.querySelector('#flag-groups [data-flag=\"exp\"]').textContent"
        )
        assert '"test"' in group and "carol" in group

        # the fault buttons switch the server, for people trying an outage
        browser.evaluate("document.querySelector('#faults button[data-action=\"down\"]').click()")
        assert browser.wait_for("document.getElementById('fault-mode').textContent === 'down'")
        assert requests_mode(server) == "down"
        browser.evaluate("document.querySelector('#faults button[data-action=\"up\"]').click()")
        assert browser.wait_for("document.getElementById('fault-mode').textContent === 'up'")

        browser.evaluate(
            "(() => { const f = document.getElementById('f-event'); f.value = '';"
            " f.dispatchEvent(new Event('input')); })()"
        )
        assert browser.wait_for("document.querySelectorAll('#rows tr').length === 5")
        assert browser.evaluate("typeof window.__pwned") == "undefined"
        shot = browser.screenshot(tmp_path / "devserver-viewer.png")
        assert shot.stat().st_size > 10_000
        print(f"viewer screenshot: {shot}")


def requests_mode(server: DevServer) -> str:
    return requests.get(server.url + "/api/faults", timeout=5).json()["mode"]
