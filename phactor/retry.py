"""Pure retry policy: what a response means for a batch, and how long to wait before retrying.

No I/O and no clock of its own (callers pass `now` and a random source), so every rule is
tested directly.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Callable

__all__ = ["Verdict", "backoff_delay", "classify", "parse_retry_after"]


class Verdict(enum.Enum):
    """What to do with a batch after one attempt."""

    SENT = "sent"
    RETRY = "retry"
    SPLIT = "split"  # 413: halve the batch and send each half
    REJECTED = "rejected"  # 400/415/422/other 4xx: the server will never take it
    UNAUTHORIZED = "unauthorized"  # 401/403: bad project key


def classify(status: int | None) -> Verdict:
    """The verdict for an HTTP status (None = network error: no response at all)."""
    if status is None or status == 408 or status == 429 or status >= 500:
        return Verdict.RETRY
    if 200 <= status < 300:
        return Verdict.SENT
    if status in (401, 403):
        return Verdict.UNAUTHORIZED
    if status == 413:
        return Verdict.SPLIT
    return Verdict.REJECTED


def backoff_delay(
    attempt: int, base: float, cap: float, rand: Callable[[], float] = random.random
) -> float:
    """Exponential backoff with full jitter: uniform in [0, min(cap, base * 2**attempt)]."""
    ceiling = min(cap, base * (2 ** min(attempt, 32)))
    return ceiling * rand()


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date), or None."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        import email.utils  # only for the rare HTTP-date form; costs ~10 ms to import

        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:
            return None
        seconds = when.timestamp() - now
    if seconds != seconds:
        return None
    return max(0.0, seconds)
