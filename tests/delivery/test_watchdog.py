"""The delivery watchdog, `stats()["last_success_at"]` and `stats()["last_error"]`.

Against a real loopback server (down, 401, flapping) with a short `watchdog_interval`; the
watchdog's rule itself (one ERROR per stall, none while idle) by hypothesis with a fake clock.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import StartInstance, assert_ledger
from hypothesis import example, given
from hypothesis import strategies as st

from phactor._log import secret_forms
from phactor.config import mask
from phactor.devserver import DevServer
from phactor.health import MAX_ERROR_CHARS, DeliveryHealth, error_text

API_KEY = "phc_watchdog_test_key_0123456789abcdef"


def options(devserver: DevServer, **overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "api_key": API_KEY,
        "host": devserver.url,
        "flush_at": 10,
        "flush_interval": 0.02,
        "max_retries": 1,
        "retry_base_delay": 0.01,
        "retry_max_delay": 0.02,
        "request_timeout": 2.0,
        "watchdog_interval": 0.3,
        "enable_error_tracking": False,
    }
    base.update(overrides)
    return base


class Records(logging.Handler):
    """Collects phactor.delivery records; `wait(event, n)` blocks until n of them arrived."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.seen: list[tuple[int, str, float]] = []
        self._cond = threading.Condition()

    def emit(self, record: logging.LogRecord) -> None:
        with self._cond:
            self.seen.append((record.levelno, record.getMessage(), time.monotonic()))
            self._cond.notify_all()

    def named(self, event: str) -> list[tuple[int, str, float]]:
        with self._cond:
            return [r for r in self.seen if f"event='{event}'" in r[1]]

    def wait(self, event: str, n: int = 1, timeout: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout
        with self._cond:
            while len([r for r in self.seen if f"event='{event}'" in r[1]]) < n:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
            return True


@pytest.fixture
def records() -> Iterator[Records]:
    logger = logging.getLogger("phactor.delivery")
    handler, level = Records(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def test_an_outage_logs_one_error_after_the_interval_and_one_info_when_it_ends(
    devserver: DevServer, start_instance: StartInstance, records: Records
) -> None:
    devserver.set_mode("down")
    inst = start_instance(**options(devserver))
    queued_at = time.monotonic()
    for i in range(5):
        inst.capture("ev", "user", {"i": i})
    assert records.wait("delivery_stalled")
    [(level, message, logged_at)] = records.named("delivery_stalled")
    assert level == logging.ERROR
    assert logged_at - queued_at >= 0.3  # not before the interval
    assert "queued=" in message and "last_error=" in message
    # The outage goes on (more probes, more ticks): still that one ERROR.
    arrived = devserver.request_count()
    assert devserver.wait_for_arrivals(arrived + 5, timeout=10)
    assert len(records.named("delivery_stalled")) == 1
    stats = inst.stats()
    assert stats["last_success_at"] is None
    assert stats["last_error"]  # the transport error, in short
    assert len(stats["last_error"]) <= MAX_ERROR_CHARS
    devserver.set_mode("up")
    before = time.time()
    assert records.wait("delivery_resumed")
    assert records.named("delivery_resumed")[0][0] == logging.INFO
    assert inst.flush(5.0)
    stats = assert_ledger(inst)
    assert stats["sent"] == 5 and devserver.count() == 5
    assert stats["last_success_at"] is not None and stats["last_success_at"] >= before - 1


def test_a_flapping_server_logs_one_error_and_one_info_per_outage(
    devserver: DevServer, start_instance: StartInstance, records: Records
) -> None:
    inst = start_instance(**options(devserver))
    for outage in (1, 2):
        devserver.set_mode("error", status=503)
        inst.capture("ev", "user")
        assert records.wait("delivery_stalled", outage)
        devserver.set_mode("up")
        assert records.wait("delivery_resumed", outage)
    assert inst.flush(5.0)
    assert len(records.named("delivery_stalled")) == 2
    assert len(records.named("delivery_resumed")) == 2
    stats = assert_ledger(inst)
    assert stats["last_error"].startswith("HTTP 503")
    assert stats["sent"] == 2


def test_an_idle_instance_and_a_healthy_one_never_alarm(
    devserver: DevServer, start_instance: StartInstance, records: Records
) -> None:
    inst = start_instance(**options(devserver, watchdog_interval=0.5))
    for _ in range(20):  # each delivered well within the interval: never a stall
        inst.capture("ev", "user")
        assert inst.flush(5.0)
    assert devserver.count() == 20
    # Idle for a few intervals (each flush is a round trip through the Batcher).
    deadline = time.monotonic() + 1.2
    while time.monotonic() < deadline:
        assert inst.flush(1.0)
    assert records.named("delivery_stalled") == []
    assert inst.stats()["last_error"] is None


def test_last_error_of_a_401_is_short_and_has_the_key_masked(
    devserver: DevServer, start_instance: StartInstance
) -> None:
    body = f'{{"type": "authentication_error", "detail": "invalid key {API_KEY}"}}' + "x" * 500
    devserver.fail_next(1, 401, body=body)
    inst = start_instance(**options(devserver))
    inst.capture("ev", "user")
    assert inst.flush(5.0)
    stats = assert_ledger(inst)
    assert stats["dropped"] == {"unauthorized": 1}
    last_error = stats["last_error"]
    assert last_error.startswith("HTTP 401: ")
    assert API_KEY not in last_error and mask(API_KEY) in last_error
    assert len(last_error) <= MAX_ERROR_CHARS


@given(
    before=st.text(max_size=300),
    after=st.text(max_size=300),
    form=st.sampled_from(sorted(secret_forms(API_KEY))),
    status=st.one_of(st.none(), st.integers(100, 599)),
)
def test_error_text_never_shows_a_key_in_any_spelling(
    before: str, after: str, form: str, status: int | None
) -> None:
    text = error_text(status, before + form + after, (API_KEY, None))
    assert len(text) <= MAX_ERROR_CHARS
    assert "\n" not in text
    for spelling in secret_forms(API_KEY):
        assert spelling not in text
    # A cut never leaves a readable piece of the key either.
    assert API_KEY[7:20] not in text


# --- the watchdog's rule, with a fake clock ------------------------------------------------


class _Log:
    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []

    def error(self, event: str, **kw: Any) -> None:
        self.lines.append(("error", event))

    def info(self, event: str, **kw: Any) -> None:
        self.lines.append(("info", event))


STEP = st.one_of(
    st.tuples(st.just("tick"), st.integers(0, 3)),  # a tick seeing this many events pending
    st.tuples(st.just("success"), st.just(0)),
    st.tuples(st.just("failure"), st.just(0)),
    st.tuples(st.just("advance"), st.integers(0, 200)),  # clock forward, tenths of a second
)


@given(steps=st.lists(STEP, max_size=60))
# Found by CI: a failure, then a success before the tick, left the failure counted at that tick.
@example(steps=[("failure", 0), ("success", 0), ("tick", 0), ("advance", 50), ("tick", 1)])
def test_the_watchdog_alarms_once_per_stall_and_never_while_idle(
    steps: list[tuple[str, int]],
) -> None:
    now = [0.0]
    log = _Log()
    health = DeliveryHealth(
        watchdog_interval=5.0, on_drop=None, log=log, clock=lambda: now[0]
    )
    stats = {"queued": 0, "in_flight": 0, "circuit": "closed", "dropped": {}}
    waiting_since: float | None = None  # the model
    failed = False
    alarmed = False
    for kind, n in steps:
        if kind == "advance":
            now[0] += n / 10
        elif kind == "success":
            health.succeeded()
            if alarmed:
                assert log.lines[-1] == ("info", "delivery_resumed")
            waiting_since, alarmed, failed = None, False, False
        elif kind == "failure":
            health.failed("HTTP 503: down")
            failed = True
            if waiting_since is None:
                waiting_since = now[0]
        else:
            errors_before = log.lines.count(("error", "delivery_stalled"))
            health.tick({**stats, "queued": n})
            if n or failed:
                if waiting_since is None:
                    waiting_since = now[0]
            else:
                waiting_since, alarmed = None, False
            failed = False
            due = waiting_since is not None and not alarmed and now[0] - waiting_since >= 5.0
            errors = log.lines.count(("error", "delivery_stalled")) - errors_before
            assert errors == (1 if due else 0)
            alarmed = alarmed or due
    # Never an ERROR without an event pending or a failure.
    if not any(kind == "failure" or (kind == "tick" and n) for kind, n in steps):
        assert ("error", "delivery_stalled") not in log.lines


def test_a_413_for_one_event_is_the_last_error_but_a_split_is_not(
    devserver: DevServer, start_instance: StartInstance
) -> None:
    devserver.reject_larger_than(3000)
    inst = start_instance(**options(devserver, flush_at=20, flush_interval=60.0, gzip=False))
    for i in range(4):
        inst.capture("small", "user", {"i": i, "pad": "p" * 900})
    assert inst.flush(5.0)  # one batch over the limit: split until each half fits
    assert devserver.request_count() >= 3  # the 413, then the halves
    assert inst.stats()["last_error"] is None and inst.stats()["sent"] == 4
    inst.capture("big", "user", {"blob": "x" * 5000})
    assert inst.flush(5.0)
    stats = assert_ledger(inst)
    assert stats["dropped"] == {"too_large": 1}
    assert stats["last_error"].startswith("HTTP 413")
