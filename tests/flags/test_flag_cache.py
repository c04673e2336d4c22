"""The last-known-value cache (`phactor.flags.cache`) against a plain model, and the
non-blocking `CircuitBreaker.try_acquire` the `/flags` path uses: property-based, no I/O."""

from __future__ import annotations

from collections import OrderedDict

from hypothesis import given
from hypothesis import strategies as st

from phactor.buffer import CircuitBreaker
from phactor.flags.cache import CACHED_REASON, LastKnownValues
from phactor.flags.results import FlagResult

users = st.sampled_from(["u1", "u2", "u3", "u4"])
keys = st.sampled_from(["a", "b", "c"])
values = st.one_of(st.booleans(), st.sampled_from(["x", "y"]))
ops = st.lists(
    st.one_of(
        st.tuples(st.just("store"), users, keys, values),
        st.tuples(st.just("get"), users, keys, st.none()),
        st.tuples(st.just("tick"), st.floats(0, 5), st.none(), st.none()),
    ),
    max_size=60,
)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@given(ops, st.integers(0, 6), st.floats(0, 10))
def test_the_cache_is_a_bounded_aged_lru(operations: list, size: int, ttl: float) -> None:
    clock = Clock()
    cache = LastKnownValues(size, ttl, clock)
    model: OrderedDict[tuple[str, str], tuple[object, float]] = OrderedDict()
    for op, a, b, c in operations:
        if op == "tick":
            clock.now += a
        elif op == "store":
            cache.store(a, [FlagResult(b, c, reason="condition_match", locally_evaluated=False)])
            if size:
                model[(a, b)] = (c, clock.now)
                model.move_to_end((a, b))
                while len(model) > size:
                    model.popitem(last=False)
        else:
            got = cache.get(a, b)
            entry = model.get((a, b))
            if entry is not None and clock.now - entry[1] > ttl:
                del model[(a, b)]
                entry = None
            if entry is None:
                assert got is None
            else:
                model.move_to_end((a, b))
                assert got is not None and got.value == entry[0]
                assert got.reason == CACHED_REASON and not got.locally_evaluated
        assert len(cache) <= size
        assert len(cache) == len(model)


@given(st.lists(st.sampled_from(["try", "fail", "succeed", "tick"]), max_size=40))
def test_try_acquire_never_blocks_and_lets_one_probe_through(steps: list[str]) -> None:
    clock = Clock()
    breaker = CircuitBreaker(clock)
    holders = iter(range(1_000))
    probing: set[str] = set()
    for step in steps:
        if step == "tick":
            clock.now += 1.0
        elif step == "try":
            holder = f"h{next(holders)}"
            was_closed = breaker.failures < 2
            if breaker.try_acquire(holder, threshold=2) and not was_closed:
                probing.add(holder)
            assert len(probing) <= 1  # at most one probe at a time while open
        elif step == "fail":
            holder = next(iter(probing), "other")
            probing.discard(holder)
            breaker.failed(holder, 0.5)
        else:
            holder = next(iter(probing), "other")
            probing.discard(holder)
            breaker.succeeded(holder)
            assert breaker.failures == 0
            assert breaker.try_acquire("after", threshold=2)
