"""Fuzz the lifecycle: generated sequences of start, capture, flush, stop, restart, across names.

A hypothesis state machine drives a few named test-mode instances through any order of calls
and checks after every step: the registry lists exactly the running names, a second `start()`
of a running name raises AlreadyStarted, every instance ever started (stopped ones included)
keeps the stats invariant, a capture after stop is a counted `stopped` drop, and everything a
running instance accepted is recorded once it is flushed.
"""

from __future__ import annotations

import itertools
import os
from typing import Any

import pytest
from fuzz_support import bounded, fuzz_timeout, ledger
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import phactor
import phactor.testing

pytestmark = fuzz_timeout

_runs = itertools.count(1)


class Lifecycle(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        run = next(_runs)
        self.names = [f"lc{os.getpid()}-{run}-{n}" for n in range(3)]
        self.running: dict[str, phactor.Instance] = {}
        self.ever: list[phactor.Instance] = []
        self.accepted: dict[str, list[str]] = {}

    # --- rules ---------------------------------------------------------------------------

    @rule(n=st.integers(0, 2), tracking=st.booleans(), sync=st.booleans())
    def start(self, n: int, tracking: bool, sync: bool) -> None:
        name = self.names[n]
        inst, error = bounded(
            lambda: _start_or_already(name, tracking=tracking, sync=sync)
        )
        assert error is None
        if name in self.running:
            assert inst == "already", "a second start() of a running name must raise"
            return
        assert isinstance(inst, phactor.Instance)
        self.running[name] = inst
        self.ever.append(inst)
        self.accepted[name] = []

    @rule(n=st.integers(0, 2), count=st.integers(1, 5))
    def capture(self, n: int, count: int) -> None:
        name = self.names[n]
        inst = self.running.get(name)
        if inst is None:
            stopped = [i for i in self.ever if i.name == name]
            if not stopped:
                return
            inst = stopped[-1]  # a stopped instance: its captures are counted `stopped`
            before = inst.stats()["dropped"].get("stopped", 0)
            for _ in range(count):
                uid, error = bounded(inst.capture, "late", "u")
                assert error is None and uid is None
            assert inst.stats()["dropped"].get("stopped", 0) == before + count
            return
        for i in range(count):
            uid, error = bounded(inst.capture, "e", f"u{i}", {"i": i})
            assert error is None and uid is not None
            self.accepted[name].append(uid)

    @precondition(lambda self: bool(self.running))
    @rule(data=st.data())
    def flush(self, data: st.DataObject) -> None:
        name = data.draw(st.sampled_from(sorted(self.running)))
        inst = self.running[name]
        ok, error = bounded(inst.flush, 5.0)
        assert error is None and ok is True
        assert inst.queue_length() == 0
        recorded = {e["uuid"] for e in phactor.testing.events(name, flush=False)}
        assert set(self.accepted[name]) <= recorded, "a flushed event is missing"

    @precondition(lambda self: bool(self.running))
    @rule(data=st.data(), timeout=st.sampled_from([None, 0.0, 0.5, 2.0]), module=st.booleans())
    def stop(self, data: st.DataObject, timeout: float | None, module: bool) -> None:
        name = data.draw(st.sampled_from(sorted(self.running)))
        inst = self.running.pop(name)
        if module:
            ok, error = bounded(phactor.stop, name, 2.0 if timeout is None else timeout)
        else:
            ok, error = bounded(inst.stop, timeout)
        assert error is None and type(ok) is bool
        assert not inst.running

    @rule(n=st.integers(0, 2))
    def clear(self, n: int) -> None:
        name = self.names[n]
        if name in self.running:
            _, error = bounded(phactor.testing.clear, name)
            assert error is None
            self.accepted[name] = []

    # --- invariants ------------------------------------------------------------------------

    @invariant()
    def registry_lists_the_running_names(self) -> None:
        mine = {n for n in phactor.instances() if n in self.names}
        assert mine == set(self.running)

    @invariant()
    def every_instance_keeps_the_ledger(self) -> None:
        for inst in self.ever:
            ledger(inst)

    def teardown(self) -> None:
        for inst in self.running.values():
            inst.stop(2.0)


def _start_or_already(name: str, *, tracking: bool, sync: bool) -> Any:
    try:
        return phactor.start(
            name, test_mode=True, enable_error_tracking=tracking, sync_mode=sync, flush_at=3
        )
    except phactor.AlreadyStarted:
        return "already"


TestLifecycle = Lifecycle.TestCase
TestLifecycle.settings = settings(settings.default, stateful_step_count=15)


@pytest.fixture(autouse=True)
def _no_leftover_lifecycle_instances() -> Any:
    yield
    for name in phactor.instances():
        if name.startswith(f"lc{os.getpid()}-"):
            phactor.stop(name, timeout=2)
