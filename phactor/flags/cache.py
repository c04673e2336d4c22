"""The last-known-value cache: the latest value the server gave for (distinct_id + groups, flag key).

When `/flags` cannot answer (its breaker is open, a timeout, a 5xx), a flag that needs the
server reads its last value from here instead of None; that result says so in its reason
(``last_known_value``). Bounded (LRU, ``flags_cache_size`` entries) and aged
(``flags_cache_ttl`` seconds). The clock is passed in, so the rules are tested directly.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable

from phactor.flags.results import FlagResult

__all__ = ["CACHED_REASON", "LastKnownValues"]

#: The reason a value answered from the cache carries (its `FlagResult.reason`).
CACHED_REASON = "last_known_value"


class LastKnownValues:
    """LRU of (distinct_id, key) -> (FlagResult, stored at); thread-safe, size 0 = off."""

    def __init__(self, size: int, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.size = size
        self.ttl = ttl
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: OrderedDict[tuple[str, str], tuple[FlagResult, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def store(self, distinct_id: str, results: Iterable[FlagResult]) -> None:
        """Remember the server's answers for one user (the oldest entries go past `size`)."""
        if self.size <= 0:
            return
        now = self._clock()
        entries = self._entries
        with self._lock:
            for result in results:
                key = (distinct_id, result.key)
                entries[key] = (result, now)
                entries.move_to_end(key)
            while len(entries) > self.size:
                entries.popitem(last=False)

    def get(self, distinct_id: str, key: str) -> FlagResult | None:
        """The last value for (distinct_id, key), younger than `ttl`, marked as cached; or None."""
        if self.size <= 0:
            return None
        with self._lock:
            entry = self._entries.get((distinct_id, key))
            if entry is None:
                return None
            result, stored = entry
            if self._clock() - stored > self.ttl:
                del self._entries[(distinct_id, key)]
                return None
            self._entries.move_to_end((distinct_id, key))
        return result._replace(reason=CACHED_REASON, locally_evaluated=False)

    def keys_for(self, distinct_id: str) -> list[str]:
        """The flag keys with a value for `distinct_id` (a scan: only when the server is down)."""
        with self._lock:
            return [key for did, key in self._entries if did == distinct_id]

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
