"""Shared fixtures: a real loopback PostHog endpoint, unique instance names, no leaked instances."""

from __future__ import annotations

import contextlib
import itertools
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import pytest
from hypothesis import HealthCheck, settings

import phactor
import phactor.testing
from phactor.devserver import DevServer

_names = itertools.count(1)

# Property-based (fuzz) tests: modest example counts by default, derandomized so a run is
# reproducible (CI lands or not on the code, not on a draw); PHACTOR_FUZZ=explore draws new
# examples with the same count, PHACTOR_FUZZ=long thousands. What a draw finds is pinned with
# @example or a deterministic sweep. A test picks its own count only where it must.
settings.register_profile(
    "ci",
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "explore", max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "long", max_examples=5000, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("PHACTOR_FUZZ", "ci"))


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


class StartInstance(Protocol):
    """Starts an instance with the given options (see the `start_instance` fixture)."""

    def __call__(self, **config: Any) -> phactor.Instance: ...


@pytest.fixture
def start_instance(instance_name: str) -> Iterator[StartInstance]:
    """Start instances; every one started is stopped after the test, pass or fail.

    The first is called `instance_name`, later ones `f"{instance_name}-{n}"` (n = 2, 3, ...).
    """
    numbers = itertools.count(1)
    with contextlib.ExitStack() as stops:

        def start(**config: Any) -> phactor.Instance:
            n = next(numbers)
            name = instance_name if n == 1 else f"{instance_name}-{n}"
            instance = phactor.start(name, **config)
            # Last started, first stopped; a failing stop still lets the others run.
            stops.callback(instance.stop, timeout=5)
            return instance

        yield start


@pytest.fixture
def start_test_mode(start_instance: StartInstance) -> StartInstance:
    """`start_instance` with `test_mode=True`."""

    def start(**config: Any) -> phactor.Instance:
        return start_instance(test_mode=True, **config)

    return start


def exception_events(instance: phactor.Instance, *, flush: bool = True) -> list[dict[str, Any]]:
    """The `$exception` events of a test-mode instance.

    With `flush`, the LoggerHandler is drained and the instance flushed first; without it, only
    what the actor turned into events on its own so far.
    """
    if flush:
        assert instance._error_tracking_drain(5.0)
    events = phactor.testing.events(instance.name, flush=flush)
    return [e for e in events if e["event"] == "$exception"]


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
        + stats.get("spooled", 0)
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
