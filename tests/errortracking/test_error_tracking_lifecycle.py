"""Review of error tracking's lifecycle: hooks and handler after a tree gives up, several
instances starting and stopping in any interleaving, snapshots left behind by a dead actor.
"""

from __future__ import annotations

import logging
import sys
import threading

import pytest
from conftest import assert_ledger, exception_events, wait_until

import phactor
from phactor.errortracking.handler import CaptureHandler
from phactor.errortracking.ratelimit import TokenBuckets
from phactor.errortracking.snapshot import Snapshot

log = logging.getLogger("app.review")


def our_handlers(instance: phactor.Instance) -> list[logging.Handler]:
    """The instance's handler while the routing passes records to it (routing.py)."""
    intake = instance.__dict__.get("_error_intake")
    if intake is None or not intake.installed:
        return []
    assert isinstance(intake.handler, CaptureHandler)
    return [intake.handler]


def test_a_tree_that_gave_up_removes_its_handler_and_hooks(instance_name):
    sys_before, thread_before = sys.excepthook, threading.excepthook
    inst = phactor.start(instance_name, test_mode=True, max_restarts=0)
    assert our_handlers(inst) and sys.excepthook is not sys_before
    inst._crash_child("batcher")
    assert wait_until(lambda: not inst.running)
    # Nothing runs any more: the handler must not keep snapshotting (and pinning tracebacks).
    assert wait_until(lambda: not our_handlers(inst))
    assert sys.excepthook is sys_before
    assert threading.excepthook is thread_before
    try:
        raise ValueError("after the tree gave up")
    except ValueError:
        log.exception("not captured")
    assert not inst.__dict__["_error_intake"].pending
    inst.stop(timeout=1)
    assert_ledger(inst)


def test_snapshots_pending_when_the_tree_gives_up_are_counted(instance_name):
    inst = phactor.start(instance_name, test_mode=True, max_restarts=0)
    intake = inst.__dict__["_error_intake"]
    # Snapshots the actor never got to (its wake-up lost with it) must not vanish uncounted.
    for i in range(3):
        try:
            raise KeyError(i)
        except KeyError as error:
            intake.pending.append(
                Snapshot(
                    "logging", error, logging.ERROR, True, "generic", inst._context.current(), 0.0
                )
            )
    inst._crash_child("batcher")
    assert wait_until(lambda: not inst.running)
    assert wait_until(lambda: not intake.pending)
    stats = assert_ledger(inst)
    assert stats["dropped"].get("stopped", 0) >= 3
    inst.stop(timeout=1)


@pytest.mark.parametrize("stop_order", [(0, 1, 2), (1, 0, 2), (1, 2, 0), (2, 0, 1), (0, 2, 1)])
def test_three_instances_stopped_in_any_order_restore_the_original_hooks(instance_name, stop_order):
    sys_before, thread_before = sys.excepthook, threading.excepthook
    root_before = list(logging.getLogger().handlers)
    insts = [phactor.start(f"{instance_name}-{i}", test_mode=True) for i in range(3)]
    received = [0, 0, 0]
    for position, index in enumerate(stop_order):
        insts[index].stop(timeout=5)
        alive_at = sorted(stop_order[position + 1 :])
        alive = [insts[i] for i in alive_at]
        for inst in alive:
            assert len(our_handlers(inst)) == 1
        if alive_at:  # the first started of those still running receives it (routing)
            received[alive_at[0]] += 1
        # The instances still running still see an uncaught exception through the chain.
        error = RuntimeError(f"uncaught {position}")
        hook = sys.excepthook
        while hasattr(hook, "previous"):  # call our chain, not the default printer at its end
            if not hook.closed:
                hook.capture(RuntimeError, error, None)
            hook = hook.previous
        for i in alive_at:
            events = exception_events(insts[i])
            sources = [e["properties"]["$exception_source"] for e in events]
            assert sources.count("sys.excepthook") == received[i]
    assert sys.excepthook is sys_before
    assert threading.excepthook is thread_before
    assert logging.getLogger().handlers == root_before


def test_interleaved_start_and_stop_keeps_capturing_and_restores_hooks(instance_name):
    sys_before = sys.excepthook
    a = phactor.start(f"{instance_name}-a", test_mode=True)
    b = phactor.start(f"{instance_name}-b", test_mode=True)
    a.stop(timeout=5)
    c = phactor.start(f"{instance_name}-c", test_mode=True)
    try:
        raise LookupError("uncaught, received by b (the first started still running)")
    except LookupError as error:
        sys.excepthook(type(error), error, error.__traceback__)
    events = exception_events(b)
    assert [e["properties"]["$exception_source"] for e in events] == ["sys.excepthook"]
    assert exception_events(c) == []
    b.stop(timeout=5)
    c.stop(timeout=5)
    assert sys.excepthook is sys_before


def test_token_buckets_forget_only_full_buckets():
    now = [0.0]
    buckets = TokenBuckets(2, 1.0, clock=lambda: now[0], max_keys=4)
    for key in "abcd":
        assert buckets.allow(key)
    assert buckets.allow("a") and not buckets.allow("a")  # "a" is empty now
    now[0] = 1.0  # b, c, d refilled to full (2); "a" has 1 token
    assert buckets.allow("e")  # over max_keys: the full ones are forgotten, "a" is kept
    assert buckets.allow("a") and not buckets.allow("a")
