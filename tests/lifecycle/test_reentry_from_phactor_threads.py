"""Review of the runtime: calls back into phactor from its own threads, and stop() races.

`on_error` runs inside a delivery (on a Sender's thread, or on the caller's thread in
sync_mode); a flush()/stop()/capture() from there must never wait for that same delivery.
Each call that could hang runs in a helper thread joined with a bound far above its real
duration, so a regression fails the test instead of hanging the suite.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
from conftest import assert_ledger, stored_uuids, wait_until

import phactor
from phactor.devserver import DevServer

KEY = "phc_review_runtime_key_0123456789"
# Far above how long each call really takes, far below the shutdown_timeout it would hit.
BOUND = 10.0


def options(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "api_key": KEY,
        "flush_interval": 60.0,
        "enable_error_tracking": False,
        "shutdown_timeout": 30.0,
    }
    base.update(overrides)
    return base


def run_bounded(fn: Callable[[], Any]) -> Any:
    """Run `fn` in a daemon thread; fail (not hang) when it does not return within BOUND."""
    result: list[Any] = []
    t = threading.Thread(target=lambda: result.append(fn()), daemon=True)
    t.start()
    t.join(BOUND)
    assert not t.is_alive(), "call did not return: deadlock"
    return result[0]


def test_flush_from_on_error_on_a_sender_does_not_wait_for_itself(
    devserver: DevServer, instance_name: str
) -> None:
    answers: list[bool] = []
    done = threading.Event()

    def on_error(error: Exception, events: list[dict[str, Any]]) -> None:
        answers.append(phactor.flush(instance=instance_name))  # no timeout at all
        done.set()

    inst = phactor.start(instance_name, host=devserver.url, **options(on_error=on_error))
    devserver.fail_next(1, 401)
    inst.capture("e", "u1")
    assert run_bounded(lambda: inst.flush(timeout=BOUND * 2))
    assert done.wait(BOUND)
    assert answers == [False]  # it could not wait: it says so
    stats = assert_ledger(inst)
    assert stats["dropped"] == {"unauthorized": 1} and stats["in_flight"] == 0


@pytest.mark.parametrize("call", ["capture", "flush", "stop"])
def test_sync_mode_on_error_may_call_back_into_phactor(
    devserver: DevServer, instance_name: str, call: str
) -> None:
    inner: list[Any] = []

    def on_error(error: Exception, events: list[dict[str, Any]]) -> None:
        if call == "capture":
            inner.append(phactor.capture("delivery_failed", "u1", instance=instance_name))
        elif call == "flush":
            inner.append(phactor.flush(instance=instance_name))
        else:
            inner.append(phactor.stop(instance_name))

    inst = phactor.start(
        instance_name, host=devserver.url, **options(sync_mode=True, on_error=on_error)
    )
    devserver.fail_next(1, 401)
    assert run_bounded(lambda: inst.capture("e", "u1")) is not None
    assert len(inner) == 1
    stats = assert_ledger(inst)
    if call == "capture":
        assert inner[0] is not None  # queued; the next flush sends it
        assert run_bounded(lambda: inst.flush(timeout=BOUND))
        assert devserver.count(event="delivery_failed") == 1
    elif call == "flush":
        assert inner[0] is False
        assert stats["dropped"] == {"unauthorized": 1}
    else:
        assert not inst.running and inst.children() == {}
        assert sum(stats["dropped"].values()) == 1


def test_stop_from_on_error_does_not_wait_for_its_own_sender(
    devserver: DevServer, instance_name: str
) -> None:
    done = threading.Event()

    def on_error(error: Exception, events: list[dict[str, Any]]) -> None:
        phactor.stop(instance_name)  # default timeout: shutdown_timeout, 30 s
        done.set()

    inst = phactor.start(instance_name, host=devserver.url, **options(on_error=on_error))
    devserver.fail_next(1, 401)
    inst.capture("e", "u1")
    inst.flush(timeout=0)
    assert done.wait(BOUND)
    assert wait_until(lambda: inst.children() == {} and not inst.running)
    stats = assert_ledger(inst)
    assert stats["captured"] == 1 and stats["in_flight"] == 0


def test_a_second_concurrent_stop_waits_for_the_first_to_drain(
    devserver: DevServer, instance_name: str
) -> None:
    inst = phactor.start(instance_name, host=devserver.url, **options())
    for i in range(5):
        inst.capture("e", f"u{i}")
    devserver.delay(0.5)
    first = threading.Thread(target=inst.stop, args=(BOUND,), daemon=True)
    first.start()
    assert wait_until(lambda: inst._state == "stopping")
    assert run_bounded(lambda: inst.stop(BOUND)) is True
    # The second stop() returned only once the first had delivered everything.
    stats = assert_ledger(inst)
    assert stats["sent"] == 5 and not inst.running
    first.join(BOUND)


def test_stats_after_stop_still_count_later_captures(
    devserver: DevServer, instance_name: str
) -> None:
    inst = phactor.start(instance_name, host=devserver.url, **options())
    inst.capture("e", "u1")
    assert inst.stop(BOUND)
    assert inst.capture("late", "u1") is None
    stats = assert_ledger(inst)
    assert stats["captured"] == 2 and stats["sent"] == 1
    assert stats["dropped"] == {"stopped": 1}


def test_a_batch_held_by_a_dead_child_when_the_tree_gives_up_is_counted(
    devserver: DevServer, instance_name: str
) -> None:
    inst = phactor.start(instance_name, host=devserver.url, **options(max_restarts=0))
    for i in range(3):
        inst.capture("e", f"u{i}")
    # A Send that was in a Sender's inbox as it died: filed under an incarnation that is gone.
    assert inst._buffer.take("sender-0#99", 10, 1 << 20) is not None
    inst._crash_child("batcher")
    assert wait_until(lambda: inst._state == "failed")
    assert phactor.stop(instance_name, timeout=BOUND)
    stats = assert_ledger(inst)
    assert stats["in_flight"] == 0 and stats["dropped"] == {"stopped": 3}


def test_ledger_holds_under_concurrent_capture_crashes_and_stop(
    devserver: DevServer, instance_name: str
) -> None:
    inst = phactor.start(
        instance_name,
        host=devserver.url,
        **options(
            flush_at=20, flush_interval=0.05, max_restarts=100, senders=2, max_queue_size=300
        ),
    )
    returned: list[str | None] = []
    lock = threading.Lock()
    stop_capturing = threading.Event()

    def producer(n: int) -> None:
        i = 0
        while not stop_capturing.is_set() or i < 50:
            uuid = inst.capture("e", f"u{n}", {"i": i})
            with lock:
                returned.append(uuid)
            i += 1

    threads = [threading.Thread(target=producer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for round_ in range(6):
        inst._crash_child("batcher" if round_ % 2 else f"sender-{round_ % 2}")
        assert wait_until(lambda r=round_: inst.stats()["restarts"] > r)
        assert_ledger(inst)
    inst.stop(BOUND)
    stop_capturing.set()
    for t in threads:
        t.join(BOUND)
    stats = assert_ledger(inst)
    assert stats["captured"] == len(returned)
    assert stats["queued"] == 0 and stats["in_flight"] == 0
    accepted = {u for u in returned if u is not None}
    stored = stored_uuids(devserver)
    assert set(stored) <= accepted
    assert all(n == 1 for n in stored.values())
    assert len(stored) >= stats["sent"]
    # Everything refused after the stop is counted, under the close reason.
    assert stats["captured"] - len(accepted) <= sum(stats["dropped"].values())


def test_stop_leaves_no_thread_behind(devserver: DevServer, instance_name: str) -> None:
    from phactor.supervisor import host
    from phactor.timer import scheduler

    scheduler.call_later(0, lambda: None)  # the one process-wide timer thread, started once
    host()  # the one process-wide supervising thread (every instance's Supervisor), once
    before = set(threading.enumerate())
    a = phactor.start(f"{instance_name}-a", host=devserver.url, **options(debug=True))
    b = phactor.start(f"{instance_name}-b", test_mode=True, enable_error_tracking=False)
    a.capture("e", "u1")
    b.capture("e", "u1")
    assert a.stop(BOUND) and b.stop(BOUND)
    assert wait_until(lambda: not [t for t in threading.enumerate() if t not in before])
    assert devserver.count() == 1


GAVE_UP_FORK_SCRIPT = """
import json, os, sys, threading
import phactor

inst = phactor.start("gave_up", test_mode=True, max_restarts=0, enable_error_tracking=False)
inst._crash_child("batcher")
for _ in range(500):
    if inst._state == "failed":
        break
    threading.Event().wait(0.01)
r, w = os.pipe()
pid = os.fork()
if pid == 0:
    os.close(r)
    uuid = inst.capture("in_child", "u1")  # nothing runs to send it: must be refused
    os.write(w, json.dumps({"uuid": uuid, "stats": inst.stats()}).encode())
    os._exit(0)
os.close(w)
with os.fdopen(r) as pipe:
    print(pipe.read())
os.waitpid(pid, 0)
"""


def test_a_forked_child_refuses_events_for_a_tree_that_gave_up() -> None:
    import json
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-c", GAVE_UP_FORK_SCRIPT], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["uuid"] is None
    assert report["stats"]["queued"] == 0 and report["stats"]["dropped"] == {"stopped": 1}
