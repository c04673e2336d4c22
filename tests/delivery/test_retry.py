"""The pure retry policy: verdicts per status, backoff bounds, Retry-After parsing."""

from __future__ import annotations

import email.utils

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from phactor.retry import Verdict, backoff_delay, classify, parse_retry_after


@pytest.mark.parametrize(
    ("status", "verdict"),
    [
        (None, Verdict.RETRY),
        (408, Verdict.RETRY),
        (429, Verdict.RETRY),
        (500, Verdict.RETRY),
        (502, Verdict.RETRY),
        (503, Verdict.RETRY),
        (599, Verdict.RETRY),
        (200, Verdict.SENT),
        (204, Verdict.SENT),
        (400, Verdict.REJECTED),
        (415, Verdict.REJECTED),
        (422, Verdict.REJECTED),
        (302, Verdict.REJECTED),
        (401, Verdict.UNAUTHORIZED),
        (403, Verdict.UNAUTHORIZED),
        (413, Verdict.SPLIT),
    ],
)
def test_classify(status: int | None, verdict: Verdict) -> None:
    assert classify(status) is verdict


def test_backoff_is_full_jitter_of_an_exponential_ceiling() -> None:
    assert backoff_delay(0, 0.5, 30.0, rand=lambda: 1.0) == 0.5
    assert backoff_delay(3, 0.5, 30.0, rand=lambda: 1.0) == 4.0
    assert backoff_delay(10, 0.5, 30.0, rand=lambda: 1.0) == 30.0
    assert backoff_delay(10_000, 0.5, 30.0, rand=lambda: 1.0) == 30.0
    assert backoff_delay(3, 0.5, 30.0, rand=lambda: 0.0) == 0.0
    assert backoff_delay(3, 0.5, 30.0, rand=lambda: 0.25) == 1.0


@settings(max_examples=200, deadline=None)
@given(
    attempt=st.integers(0, 200),
    base=st.floats(0, 10, allow_nan=False),
    cap=st.floats(0, 100, allow_nan=False),
)
def test_backoff_stays_within_zero_and_cap(attempt: int, base: float, cap: float) -> None:
    delay = backoff_delay(attempt, base, cap)
    assert 0.0 <= delay <= cap


def test_retry_after_seconds() -> None:
    assert parse_retry_after("3", now=0.0) == 3.0
    assert parse_retry_after(" 1.5 ", now=0.0) == 1.5
    assert parse_retry_after("-4", now=0.0) == 0.0


def test_retry_after_http_date() -> None:
    now = 1_700_000_000.0
    header = email.utils.formatdate(now + 7, usegmt=True)
    assert parse_retry_after(header, now=now) == pytest.approx(7.0)
    past = email.utils.formatdate(now - 60, usegmt=True)
    assert parse_retry_after(past, now=now) == 0.0


@pytest.mark.parametrize("value", [None, "", "soon", "nan", "Mon, 99 Foo 2020"])
def test_retry_after_garbage_is_ignored(value: str | None) -> None:
    assert parse_retry_after(value, now=0.0) is None
