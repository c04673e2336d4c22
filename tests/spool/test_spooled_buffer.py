"""SpooledBuffer: the ledger with a journal. Every unsettled event is on disk exactly once.

Driven step by step on the test's thread (the writer's group commit is `_cycle()`), so each
property is checked at a well-defined point.
"""

from __future__ import annotations

import logging
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from phactor.spool import Journal
from phactor.spooled import SpooledBuffer

log = logging.getLogger("test-spool")


class Log:
    def __getattr__(self, level: str):  # structlog-style: log.error("event", key=value)
        return lambda event, **kw: getattr(log, level if level != "warning" else "warning")(
            "%s %s", event, kw
        )


def make(tmp: Path, max_queue_size: int = 5, max_bytes: int = 1 << 30) -> SpooledBuffer:
    buf = SpooledBuffer(
        max_queue_size, 3, spool_dir=str(tmp), name="p", sync="batch", interval=60,
        max_bytes=max_bytes, log=Log(),
    )  # fmt: skip
    buf._journal = Journal(str(tmp / "p.1-1.journal"))
    return buf


def on_disk(buf: SpooledBuffer) -> list[int]:
    assert buf._journal is not None
    return [seq for seq, _ in buf._journal.read_oldest(1 << 30)]


ops = st.lists(
    st.one_of(
        st.tuples(st.just("offer"), st.integers(1, 8)),
        st.tuples(st.just("take"), st.sampled_from(["a", "b"])),
        st.tuples(st.just("settle"), st.sampled_from(["a", "b"]), st.sampled_from(["sent", "drop", "requeue"])),
        st.tuples(st.just("cycle")),
    ),
    max_size=40,
)  # fmt: skip


@given(ops)
def test_every_unsettled_event_is_on_disk_once_and_the_ledger_holds(tmp_path_factory, steps):
    buf = make(tmp_path_factory.mktemp("spool"))
    held: dict[str, list[int]] = {}
    for step in steps:
        if step[0] == "offer":
            for i in range(step[1]):
                assert buf.offer(b'{"i":%d}' % i)  # never queue_full: beyond memory, disk
        elif step[0] == "take":
            batch = buf.take(step[1], 4, 1 << 20)
            if batch is not None:
                held[step[1]] = [seq for seq, _ in batch.items]
        elif step[0] == "settle" and step[1] in held:
            items = buf._in_flight[step[1]].items
            del held[step[1]]
            if step[2] == "sent":
                buf.settle(step[1], sent=len(items))
            elif step[2] == "drop":
                buf.settle(step[1], dropped={"rejected": len(items)})
            else:
                buf.settle(step[1], requeue=items)
        else:
            buf._cycle()
        stats = buf.stats()
        accounted = (
            stats["sent"] + sum(stats["dropped"].values()) + stats["queued"]
            + stats["in_flight"] + stats["spooled"]
        )  # fmt: skip
        assert stats["captured"] == accounted, stats
        assert stats["queued"] <= 5 + 8  # memory bound: max_queue_size plus requeued batches
    buf._cycle()
    stats = buf.stats()
    unsettled = stats["queued"] + stats["in_flight"] + stats["spooled"]
    disk = on_disk(buf)
    assert len(disk) == len(set(disk)) == unsettled
    assert stats["dropped"].keys() <= {"rejected"}
    # Drain: everything comes back from disk, oldest first, and ends delivered.
    for holder in held:
        buf.settle(holder, sent=len(buf._in_flight[holder].items))
    order = []
    for _ in range(1000):
        batch = buf.take("a", 4, 1 << 20)
        if batch is None:
            buf._cycle()
            if not buf.stats()["queued"] and not buf.stats()["spooled"]:
                break
            continue
        order.extend(seq for seq, _ in batch.items)
        buf.settle("a", sent=len(batch.items))
        buf._cycle()
    assert order == sorted(order)
    assert on_disk(buf) == []
    assert buf.stats()["captured"] == buf.stats()["sent"] + sum(buf.stats()["dropped"].values())


def test_past_spool_max_bytes_the_oldest_disk_only_events_are_evicted(tmp_path):
    buf = make(tmp_path, max_queue_size=2, max_bytes=1000)
    for i in range(50):
        assert buf.offer(b"x" * 99 + b"%d" % (i % 10))
    buf._cycle()
    stats = buf.stats()
    assert stats["dropped"]["spool_full"] > 0
    assert buf._disk_bytes <= 1000
    assert stats["captured"] == stats["queued"] + stats["spooled"] + stats["dropped"]["spool_full"]
    # The newest are kept: the memory queue (the two oldest) plus the disk's tail.
    disk = on_disk(buf)
    assert disk[-1] == 50 and disk[:2] == [1, 2]
