"""The rate limit of error tracking: a token bucket per exception type (or call site).

`TokenBuckets` is shared by every capture source of one instance; the keys are built here too:
`type_key` (an exception type by name), `refusal_key` (what the app's threads look up in
`Intake.refusing` without building a string) and `key_name` (a key as logs show it).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

__all__ = [
    "RATE_LIMIT_BURST",
    "RATE_LIMIT_PER_SECOND",
    "TokenBuckets",
    "key_name",
    "refusal_key",
    "type_key",
]

#: Captures of one exception type allowed at once (the bucket size); the default of the config
#: option `exception_rate_limit_burst`.
RATE_LIMIT_BURST = 50
#: Tokens refilled per second for each exception type (PostHog's Python SDK refills 10 per 10 s).
#: The default of the config option `exception_rate_limit_per_second`.
RATE_LIMIT_PER_SECOND = 1.0


class TokenBuckets:
    """A token bucket per key: `burst` captures at once, then `per_second` on average.

    Thread-safe; `clock` (seconds, monotonic) is injectable for tests. At most `max_keys`
    buckets are kept: past that, full buckets (which carry no information) are forgotten.
    """

    def __init__(
        self,
        burst: int = RATE_LIMIT_BURST,
        per_second: float = RATE_LIMIT_PER_SECOND,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 1000,
    ) -> None:
        self.burst = float(max(0, burst))
        self.per_second = max(0.0, float(per_second))
        self.clock = clock
        self.max_keys = max_keys
        self._buckets: dict[Any, list[float]] = {}  # key -> [tokens, last refill time]
        self._lock = threading.Lock()

    def allow(self, key: Any) -> bool:
        """Take a token for `key`; False when its bucket is empty."""
        now = self.clock()
        buckets = self._buckets
        bucket = buckets.get(key)
        if bucket is None:
            if len(buckets) >= self.max_keys:
                with self._lock:
                    self._forget_full(now)
                buckets = self._buckets
            bucket = buckets.setdefault(key, [self.burst, now])
        # No lock: a race between two threads (on one bucket, or a bucket added while the
        # buckets are replaced) can only let one extra capture through, which a rate limit can
        # afford; a lock on every record costs more.
        tokens = bucket[0]
        elapsed = now - bucket[1]
        if elapsed > 0.0:
            tokens += elapsed * self.per_second
            if tokens > self.burst:
                tokens = self.burst
            bucket[1] = now
        if tokens >= 1.0:
            bucket[0] = tokens - 1.0
            return True
        bucket[0] = tokens
        return False

    def next_token_in(self, key: Any) -> float:
        """Seconds until `key`'s bucket has a token again (0 when it has one; inf: never)."""
        bucket = self._buckets.get(key)
        if bucket is None:
            return 0.0
        tokens = bucket[0] + max(0.0, self.clock() - bucket[1]) * self.per_second
        if tokens >= 1.0:
            return 0.0
        if self.per_second <= 0.0:
            return float("inf")
        return (1.0 - tokens) / self.per_second

    def _forget_full(self, now: float) -> None:
        # Under the lock. Replaced, not mutated: `allow` reads and adds without the lock (so
        # the items are copied in one C-level step before they are looked at).
        if len(self._buckets) < self.max_keys:
            return  # another thread just did it
        kept = {
            k: v
            for k, v in list(self._buckets.items())
            if v[0] + (now - v[1]) * self.per_second < self.burst
        }
        self._buckets = kept if len(kept) < self.max_keys else {}


def type_key(cls: type) -> str:
    # By name, not by class object: a class statement run per call (a retry helper, an error
    # factory) makes a new class each time, and a flood of it must share one bucket (the
    # limiter would also keep those classes alive). Both reads go through `type`'s own
    # descriptors, so a new class costs no lookup through its MRO.
    return f"{cls.__module__}.{cls.__qualname__}"


def key_name(key: Any) -> str:
    """A rate-limit key for logs: `module.Qualname` for an exception type, else `str(key)`."""
    return type_key(key) if isinstance(key, type) else str(key)


def refusal_key(exc: BaseException | None, logger_name: Any, function: Any) -> Any:
    # The key of `Intake.refusing`: the exception's class (no string to build on the app's
    # thread), or the call site of a record without an exception.
    return type(exc) if exc is not None else (logger_name, function)
