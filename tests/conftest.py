"""Shared fixtures: a real loopback PostHog endpoint, unique instance names, no leaked instances."""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import phactor
from phactor.devserver import DevServer

_names = itertools.count(1)


@pytest.fixture
def devserver() -> Iterator[DevServer]:
    """A started DevServer on a free loopback port, stopped after the test."""
    server = DevServer().start()
    try:
        yield server
    finally:
        # Instances first: their final drain must still find the server up.
        _stop_all_instances()
        server.stop()


@pytest.fixture
def instance_name(request: pytest.FixtureRequest) -> str:
    """A name no other test uses, so instances never collide (or share context)."""
    return f"t{os.getpid()}-{next(_names)}-{request.node.name[:40]}"


@pytest.fixture(autouse=True)
def _stop_leftover_instances() -> Iterator[None]:
    """Stop every instance a test left running, so no thread leaks into the next test."""
    yield
    _stop_all_instances()


def _stop_all_instances() -> None:
    for name in phactor.instances():
        try:
            phactor.stop(name, timeout=2)
        except phactor.NotStarted:
            pass


def assert_ledger(inst: phactor.Instance) -> dict[str, Any]:
    """The stats invariant: every captured event is sent, dropped, queued or in flight."""
    stats = inst.stats()
    accounted = (
        stats["sent"] + sum(stats["dropped"].values()) + stats["queued"] + stats["in_flight"]
    )
    assert stats["captured"] == accounted, stats
    return stats


def stored_uuids(server: DevServer) -> Counter[str]:
    """How many times the server stored each event uuid (duplicates show as counts > 1)."""
    return Counter(e["uuid"] for e in server.events())


def wait_until(predicate: Callable[[], Any], timeout: float = 5.0, interval: float = 0.005) -> Any:
    """Poll `predicate` until it is truthy or `timeout` passes (bounded; returns the last value)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        _tick.wait(interval)


_tick = threading.Event()  # never set: wait() is a bounded pause between polls
