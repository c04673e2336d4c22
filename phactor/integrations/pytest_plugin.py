"""pytest plugin: the `phactor_events` fixture, its assertion helpers, and a no-network guard.

Installed with phactor (entry point `pytest11: phactor`); it does nothing until a test asks for
it. Disable it with `-p no:phactor`.

    def test_signup(phactor_events):
        signup("u1")                                   # code under test calls phactor.capture
        phactor_events.assert_captured("signed_up", distinct_id="u1", plan="pro")
        assert len(phactor_events.find("$pageview")) == 0

- `phactor_events` starts a `test_mode` instance called "default" for the test (or attaches to
  a running test-mode instance of that name) and stops what it started afterwards. Choose the
  name and options with `@pytest.mark.phactor(instance="web", flags={"beta": True})`. It is a
  live, read-only list of the wire-format events captured *during this test* (each read
  flushes first, so events from threads and tasks the test started and joined are there).
- `.find(event, **props)` -> the matching events (`distinct_id=` matches the event's
  distinct_id, every other keyword a property); `.assert_captured(event, distinct_id=...,
  **props)` -> the first match, or an AssertionError that shows what was captured instead.
- The guard fails a test that starts a non-test-mode instance sending to a host that is not
  loopback, before anything is sent: no test reaches the real PostHog by accident. It is on for
  tests that use `phactor_events` or carry `@pytest.mark.phactor_guard`, and for every test with
  the ini option `phactor_guard = true`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator, Sequence
from typing import Any, overload
from urllib.parse import urlsplit

import pytest

__all__ = ["CapturedEvents", "phactor_events"]

_ANY = object()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        "phactor_guard",
        "fail every test that starts a non-test-mode phactor instance aimed at a non-loopback host",
        type="bool",
        default=False,
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "phactor(instance='default', **config): the phactor_events fixture's instance"
    )
    config.addinivalue_line(
        "markers", "phactor_guard: fail the test if it starts an instance aimed at a real host"
    )


class CapturedEvents(Sequence[dict[str, Any]]):
    """The events a test-mode instance captured since this object was made (a live view)."""

    def __init__(self, instance: Any):
        self.instance = instance
        self._offset = 0
        self._offset = len(self._all())

    def _all(self) -> list[dict[str, Any]]:
        from phactor import testing  # lazy: start-up time (pytest loads this plugin in every run)

        return testing.events(self.instance.name)

    def _events(self) -> list[dict[str, Any]]:
        events = self._all()
        if len(events) < self._offset:  # phactor.testing.clear() was called meanwhile
            self._offset = 0
        return events[self._offset :]

    def clear(self) -> None:
        """Forget what was captured so far (later reads show only newer events)."""
        self._offset = len(self._all())

    def __len__(self) -> int:
        return len(self._events())

    @overload
    def __getitem__(self, index: int) -> dict[str, Any]: ...

    @overload
    def __getitem__(self, index: slice) -> list[dict[str, Any]]: ...

    def __getitem__(self, index: int | slice) -> Any:
        return self._events()[index]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self._events())

    def __eq__(self, other: object) -> bool:
        return self._events() == other

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"<phactor events of {self.instance.name!r}: {_names(self._events())}>"

    def find(self, event: str, **props: Any) -> list[dict[str, Any]]:
        """The captured events named `event` whose properties equal `props` (`distinct_id=`:
        the event's distinct_id)."""
        return [e for e in self._events() if e.get("event") == event and not _diff(e, props)]

    def assert_captured(self, event: str, distinct_id: Any = _ANY, **props: Any) -> dict[str, Any]:
        """The first event named `event` with these values; AssertionError showing the closest
        candidates otherwise."""
        __tracebackhide__ = True
        if distinct_id is not _ANY:
            props = {"distinct_id": distinct_id, **props}
        events = self._events()
        named = [e for e in events if e.get("event") == event]
        for candidate in named:
            if not _diff(candidate, props):
                return candidate
        wanted = ", ".join(f"{k}={v!r}" for k, v in props.items())
        lines = [f"no {event!r} event captured with {wanted or 'any values'}"]
        if named:
            lines.append(f"{len(named)} {event!r} event(s) captured, none matching:")
            for n, candidate in enumerate(named[:10]):
                lines.append(f"  #{n}: " + "; ".join(_diff(candidate, props)))
        lines.append(f"captured in this test: {_names(events)}")
        raise AssertionError("\n".join(lines))


def _diff(event: dict[str, Any], props: dict[str, Any]) -> list[str]:
    problems = []
    properties = event.get("properties") or {}
    for key, want in props.items():
        got = event.get("distinct_id", _ANY) if key == "distinct_id" else properties.get(key, _ANY)
        if got is _ANY:
            problems.append(f"{key} missing (expected {want!r})")
        elif got != want:
            problems.append(f"{key}={got!r} (expected {want!r})")
    return problems


def _names(events: list[dict[str, Any]]) -> list[str]:
    return [str(e.get("event")) for e in events]


@pytest.fixture
def phactor_events(request: pytest.FixtureRequest) -> Iterator[CapturedEvents]:
    """A live list of the events captured during this test by a test-mode instance."""
    import phactor  # lazy: start-up time (pytest loads this plugin in every run)

    marker = request.node.get_closest_marker("phactor")
    options = dict(marker.kwargs) if marker else {}
    name = options.pop("instance", "default")
    started = None
    try:
        inst = phactor.instance(name)
    except phactor.NotStarted:
        options.setdefault("test_mode", True)
        inst = started = phactor.start(name, **options)
    if not inst.config.test_mode:
        pytest.fail(
            f"phactor_events: instance {name!r} is running but not in test_mode", pytrace=False
        )
    try:
        yield CapturedEvents(inst)
    finally:
        if started is not None:
            started.stop(timeout=5)


@pytest.fixture(autouse=True)
def _phactor_guard(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail a test that starts an instance aimed at a real host (see the module docstring)."""
    active = (
        "phactor_events" in request.fixturenames
        or request.node.get_closest_marker("phactor_guard") is not None
        or request.config.getini("phactor_guard")
    )
    if not active:
        yield
        return
    from phactor.instance import Instance  # lazy: start-up time (as above)

    # Every start (and a restart after fork) builds its tree here, after the config is final.
    original = Instance._start_tree

    def guarded_start_tree(self: Any) -> None:
        config = self.config
        if not (self._disabled or config.test_mode or _is_loopback(config.host)):
            pytest.fail(
                f"phactor instance {self.name!r} would send to {config.masked_host()} from a "
                "test: use test_mode=True or a loopback host (e.g. phactor.devserver)",
                pytrace=False,
            )
        original(self)

    mp = pytest.MonkeyPatch()
    mp.setattr(Instance, "_start_tree", guarded_start_tree)
    try:
        yield
    finally:
        mp.undo()


def _is_loopback(host: str) -> bool:
    hostname = urlsplit(host).hostname or ""
    if hostname == "localhost" or hostname.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(hostname).is_loopback
    except ValueError:
        return False
