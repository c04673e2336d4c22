"""With a spool, the flush timer still sends a few events on its own (no flush(), under flush_at).

The Batcher of an idle instance arms no timer; the first event wakes it. The spooled buffer's
own `offer` must do that wake-up too, or events below `flush_at` wait for the next flush().
"""

from __future__ import annotations

from pathlib import Path

from conftest import assert_ledger

from phactor.devserver import DevServer

API_KEY = "phc_spool_timer_test_key_0123456789"


def test_events_under_flush_at_are_sent_by_the_timer_alone(
    devserver: DevServer, tmp_path: Path, start_instance
) -> None:
    inst = start_instance(
        api_key=API_KEY,
        host=devserver.url,
        flush_at=100,
        flush_interval=0.05,
        enable_error_tracking=False,
        spool_dir=str(tmp_path),
    )
    uuids = {inst.capture("ev", "u", {"i": i}) for i in range(3)}
    assert devserver.wait_for(3, timeout=10), "the timer never sent them"
    assert {e["uuid"] for e in devserver.events()} == uuids
    assert_ledger(inst)
