"""`SpooledBuffer`: the `EventBuffer` of an instance with `spool_dir` set (the durable spool).

Every accepted event is also written to this process's journal (`phactor.spool`) and removed
from it only once its batch settled: delivered (2xx) or dropped with a counted reason. The
caller only appends to a pending list under the buffer lock it already holds; a writer thread
does the group commit every `spool_interval` (`spool_sync="batch"`, or `"off"`: the same
without fsync), or at once with the caller waiting for it (`"always"`).

Beyond `max_queue_size` events are kept on disk only ("disk-only"): from the first such event
on, every new event goes to disk only until the writer has loaded the backlog into memory
again, oldest first, as room frees. So memory stays bounded and the order is kept. Disk-only
rows are exactly the rows with a sequence number above `_disk_after` while `_disk_only > 0`.
Past `spool_max_bytes` (payload bytes in the journal) the oldest disk-only rows are evicted,
counted `spool_full`.

The ledger grows one term: `captured == sent + sum(dropped) + queued + in_flight + spooled`,
`spooled` being the events held on disk only (disk-only now, or left for the next process at
stop). A journal left by a dead process is adopted at start (its events counted captured and
`replayed`) and delivered in order before the new ones.

A disk that fails (read-only, full, corrupt) turns the spool off: one ERROR log, `spool_errors`
counted, the instance goes on in memory; disk-only events that do not fit in memory are
dropped as `spool_error`.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any

from phactor.buffer import EventBuffer, Item, _thread
from phactor.spool import Journal, JournalError, adopt_dead, dead_journals, journal_path

__all__ = ["SpooledBuffer"]

# Rows loaded from disk into memory per step (the writer loops while there is room).
_LOAD_CHUNK = 2000
# How long a spool_sync="always" capture waits for its commit before going on (disk stuck).
_ALWAYS_WAIT = 5.0


class SpooledBuffer(EventBuffer):
    """An EventBuffer whose events are also journaled on disk until they settle."""

    def __init__(
        self,
        max_queue_size: int,
        flush_at: int,
        wake: Callable[[], None] | None = None,
        *,
        spool_dir: str,
        name: str,
        sync: str,
        interval: float,
        max_bytes: int,
        log: Any,
    ):
        super().__init__(max_queue_size, flush_at, wake)
        self.spool_dir = spool_dir
        self.spool_name = name
        self.sync = sync
        self.interval = interval
        self.max_bytes = max_bytes
        self.log = log
        self._journal: Journal | None = None
        self._writer: threading.Thread | None = None
        self._kick = threading.Event()
        self._stopping = False
        self._failed = False
        self._pending: list[Item] = []
        self._settled: list[tuple[int, int]] = []  # (seq, bytes) settled: delete from disk
        self._disk_only = 0
        self._disk_after = 0
        self._left = 0  # left on disk at stop, for the next process
        self._disk_bytes = 0
        self._committed = 0
        self._written = threading.Condition(threading.Lock())
        # Events waiting for the writer beyond which a capture waits for it (backpressure).
        self._pending_bound = max(max_queue_size, 1000)
        self.replayed = 0
        self._adopting = False
        self.evicted = 0
        self._evictions = 0
        self.spool_errors = 0

    # --- life -------------------------------------------------------------------------------

    def open_storage(self) -> None:
        """Open this process's journal and start the writer (which first adopts dead ones)."""
        if self._journal is not None or self._failed:
            return
        try:
            os.makedirs(self.spool_dir, exist_ok=True)
            path = journal_path(self.spool_dir, self.spool_name, os.getpid())
            self._journal = Journal(path, self.sync)
        except (OSError, JournalError) as error:
            self._fail("spool_unavailable", error)
            return
        self._adopting = True
        self._writer = threading.Thread(
            target=self._run, name=f"phactor-spool-{self.spool_name}", daemon=True
        )
        self._writer.start()

    def close_storage(self) -> None:
        """After close(): write what is pending, close the journal (kept if not empty)."""
        writer = self._writer
        if writer is None:
            return
        self._stopping = True
        self._kick.set()
        writer.join(10.0)
        if self._left:
            self.log.warning("spooled_for_next_start", events=self._left, path=self._path())

    def forget_after_fork(self) -> None:
        """In a forked child: the parent's journal and writer are the parent's."""
        if self._journal is not None:
            self._journal.forget_after_fork()
            self._journal = None
        self._writer = None

    def _path(self) -> str | None:
        return None if self._journal is None else self._journal.path

    def _fail(self, what: str, error: BaseException) -> None:
        """Turn the spool off (once): the instance goes on in memory."""
        with self._lock:
            if self._failed:
                return
            self._failed = True
            self._adopting = False
            self.spool_errors += 1
            lost = self._disk_only
            self._disk_only = 0
            # Disk-only events still pending can go to memory while there is room.
            disk_only = [item for item in self._pending if item[0] > self._disk_after]
            self._pending = []
            self._settled = []
            room = max(self.max_queue_size - len(self._queue), 0)
            keep = disk_only[:room] if lost else []
            for item in keep:
                self._queue.append(item)
                self._queued_bytes += len(item[1])
            lost -= len(keep)
            if lost:
                self.dropped["spool_error"] += lost
            self._done_cond_notify()
        with self._written:
            self._committed = 1 << 62
            self._written.notify_all()
        self.log.error(
            what,
            error=f"{type(error).__name__}: {error}",
            path=self._path(),
            effect="the spool is off: events are kept in memory only",
            dropped=lost,
        )

    def _done_cond_notify(self) -> None:
        # Under the lock: flush() waiters re-check (disk-only events moved or gone).
        self._done.notify_all()

    # --- callers ----------------------------------------------------------------------------

    def offer(self, data: bytes) -> bool:
        if self._failed:
            return super().offer(data)
        state = _thread
        if state.busy:
            self._handoff.append(data)
            return True
        state.busy = True
        try:
            with self._lock:
                if self._handoff:
                    self._merge_locked()
                self._seq += 1
                seq = self._seq
                if self._closed:
                    self.dropped["stopped"] += 1
                    return False
                wake = False
                if self._disk_only or len(self._queue) >= self.max_queue_size:
                    if not self._disk_only:
                        self._disk_after = seq - 1
                    self._disk_only += 1
                else:
                    self._queue.append((seq, data))
                    self._queued_bytes += len(data)
                    wake = len(self._queue) >= self.flush_at and not self._wake_pending
                    if wake:
                        self._wake_pending = True
                    if not self._armed:  # the first event since the Batcher went idle
                        self._armed = wake = True
                self._pending.append((seq, data))
                backlog = len(self._pending)
            if wake and self.wake is not None:
                self.wake()
            if self.sync == "always":
                self._wait_written(seq)
            elif backlog > self._pending_bound:
                # The writer fell behind (an outage captured faster than the disk takes it):
                # wait for it, so memory stays bounded (only while it is behind).
                self._wait_written(seq - self._pending_bound // 2)
            return True
        finally:
            state.busy = False

    def _wait_written(self, seq: int) -> None:
        self._kick.set()
        with self._written:
            self._written.wait_for(lambda: self._committed >= seq, _ALWAYS_WAIT)

    def _merge_locked(self) -> None:
        # Re-entered captures (signal handlers): queued as usual and journaled too.
        start = self._seq
        super()._merge_locked()
        if not self._failed:
            self._pending.extend(item for item in self._queue if item[0] > start)

    # --- hooks of EventBuffer ---------------------------------------------------------------

    def _settled_locked(self, items: list[Item], back: list[Item]) -> None:
        if self._failed:
            return
        requeued = {seq for seq, _ in back}
        self._settled.extend((seq, len(d)) for seq, d in items if seq not in requeued)
        if self._disk_only:
            self._kick.set()  # room freed: load the next disk-only events now

    def _requeue_locked(self, items: list[Item]) -> None:
        if self._failed:
            super()._requeue_locked(items)
            return
        if self._closed:
            # Stays in the journal: the next process delivers it.
            self._left += len(items)
            return
        # Still on disk: never dropped for want of room (memory stays within max_queue_size
        # plus the batches in flight, as before the requeue).
        bound = self.max_queue_size
        self.max_queue_size = 1 << 62
        try:
            super()._requeue_locked(items)
        finally:
            self.max_queue_size = bound

    def _oldest_pending_locked(self) -> int:
        oldest = super()._oldest_pending_locked()
        if self._adopting:
            return 0  # a flush() right after start() covers the replay too
        if self._disk_only and not self._closed:
            oldest = min(oldest, self._disk_after + 1)
        return oldest

    def close(self, reason: str) -> int:
        if self._failed or self._journal is None:
            return super().close(reason)
        with self._lock:
            if self._handoff:
                self._merge_locked()
            self._closed = True
            self._close_reason = reason
            # Queued and disk-only events stay in the journal for the next process.
            self._left += len(self._queue) + self._disk_only
            self._disk_only = 0
            self._queue.clear()
            self._queued_bytes = 0
            self._done_cond_notify()
        self.breaker.shut()
        return 0

    def abandon_in_flight(self, reason: str) -> int:
        if self._failed or self._journal is None:
            return super().abandon_in_flight(reason)
        with self._lock:
            n = sum(len(b.items) for b in self._in_flight.values())
            self._left += n
            self._in_flight.clear()
            self._done_cond_notify()
        return 0

    def _snapshot(self, handoff: list[bytes | str]) -> dict[str, Any]:
        snap = super()._snapshot(handoff)
        snap["spooled"] = self._disk_only + self._left
        snap["replayed"] = self.replayed
        snap["spool_errors"] = self.spool_errors
        return snap

    # --- the writer thread ------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._adopt()
            while True:
                stopping = self._stopping
                self._cycle()
                if stopping or self._failed:
                    break
                self._kick.wait(self.interval)
                self._kick.clear()
        except (OSError, JournalError) as error:
            self._fail("spool_failed", error)
        except Exception as error:  # a bug must not leave captures waiting on "always"
            self._fail("spool_failed", error)
        journal = self._journal
        if journal is not None:
            if self._failed:
                # Memory now holds what was pending (or it was counted `spool_error`): the
                # next process must not deliver those events again.
                journal.discard()
            else:
                journal.close()

    def _adopt(self) -> None:
        journal = self._journal
        assert journal is not None
        for path in dead_journals(self.spool_dir, self.spool_name, journal.path):
            moved, aside = adopt_dead(path, journal, self._reserve)
            if aside is not None:
                self.log.error("spool_corrupt_journal", path=path, moved_to=aside)
            elif moved:
                self.log.info("spool_replay", path=path, events=moved)
        self._disk_bytes = journal.count()[1]
        with self._lock:
            self._adopting = False
            self._done.notify_all()
        self._load()

    def _reserve(self, n: int) -> int:
        """Sequence numbers for `n` adopted events: counted captured, disk-only."""
        with self._lock:
            first = self._seq + 1
            self.replayed += n
            if self._closed:
                self._seq += n
                self._left += n  # stopped meanwhile: still on disk, for the next process
                return first
            if not self._disk_only:
                self._disk_after = self._seq
            self._seq += n
            self._disk_only += n
            return first

    def _cycle(self) -> None:
        """One group commit: write pending, delete settled, evict, load disk-only events."""
        journal = self._journal
        assert journal is not None
        with self._lock:
            pending, self._pending = self._pending, []
            done, self._settled = self._settled, []
        if pending:
            finished = {seq for seq, _ in done}
            rows = [item for item in pending if item[0] not in finished]
            journal.append(rows)
            self._disk_bytes += sum(len(d) for _, d in rows)
            fresh = {seq for seq, _ in pending}
            done = [(seq, n) for seq, n in done if seq not in fresh]
            with self._written:
                self._committed = pending[-1][0]
                self._written.notify_all()
        if done:
            journal.delete([seq for seq, _ in done])
            self._disk_bytes -= sum(n for _, n in done)
        self._evict()
        self._load()

    def _evict(self) -> None:
        """Past spool_max_bytes: delete the oldest disk-only rows, just enough, counted."""
        journal = self._journal
        assert journal is not None
        while self._disk_bytes > self.max_bytes and self._disk_only:
            excess = self._disk_bytes - self.max_bytes
            with self._lock:
                after = self._disk_after
                chunk = min(self._disk_only, _LOAD_CHUNK)
            rows = journal.read_oldest(chunk, after)
            victims: list[int] = []
            size = 0
            for seq, data in rows:
                if size >= excess:
                    break
                victims.append(seq)
                size += len(data)
            if not victims:
                return  # the disk-only backlog is still pending: written next cycle
            journal.delete(victims)
            n = len(victims)
            with self._lock:
                self._disk_only -= n
                self._disk_after = max(self._disk_after, victims[-1])
                self.dropped["spool_full"] += n
                self.evicted += n
                self._done.notify_all()
            self._disk_bytes -= size
            self._evictions += 1
            k = self._evictions
            if k & (k - 1) == 0 or k % 1000 == 0:  # visible, never a flood
                self.log.warning(
                    "spool_full", evicted=n, total=self.evicted, max_bytes=self.max_bytes
                )

    def _load(self) -> None:
        """Move disk-only events into memory, oldest first, while there is room."""
        journal = self._journal
        assert journal is not None
        while True:
            with self._lock:
                if self._closed or not self._disk_only:
                    return
                room = min(self.max_queue_size - len(self._queue), _LOAD_CHUNK, self._disk_only)
                after = self._disk_after
            if room <= 0:
                return
            rows = journal.read_oldest(room, after)
            if not rows:
                return  # still pending (written next cycle)
            with self._lock:
                if self._closed:
                    return
                self._queue.extend(rows)
                self._queued_bytes += sum(len(d) for _, d in rows)
                self._disk_only -= len(rows)
                self._disk_after = rows[-1][0]
                wake = len(self._queue) >= self.flush_at or not self._disk_only
                self._done_cond_notify()
            if wake and self.wake is not None:
                self.wake()
