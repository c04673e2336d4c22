"""The durable spool's journal: accepted events kept in SQLite (WAL) until their batch settled.

One journal file per instance name and process (`<name>.<pid>.journal` in `spool_dir`), owned
by the process that holds the exclusive `flock` of its `.lock` file. A lock that can be taken
means its owner is gone (crash, SIGKILL, OOM, deploy): the journal is *adopted* by the next
process (`adopt_dead`), whose Spool then delivers it. Rows are keyed by the adopting process's
sequence numbers, so a row is one event of the in-memory ledger (`phactor.spooled`).

`Journal` is the small, synchronous API over one file: append, delete, read oldest, evict
oldest (with a count). It does I/O but owns no thread; the group commit runs elsewhere.

`python -m phactor.spool inspect PATH` prints what a journal holds (read only).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import sqlite3
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from typing import Any

__all__ = ["Journal", "JournalError", "adopt_dead", "dead_journals", "journal_path", "lock_path"]

_SCHEMA = "CREATE TABLE IF NOT EXISTS events (seq INTEGER PRIMARY KEY, data BLOB NOT NULL)"
_SYNC = {"always": "FULL", "batch": "NORMAL", "off": "OFF"}
_SAFE = re.compile(r"[^A-Za-z0-9_-]")
_OWNER = re.compile(r"[0-9]+-[0-9]+")


# Rows per statement. Many rows per statement, not one statement per row: sqlite3 releases the
# GIL around every step, and getting it back behind a busy thread costs up to the switch
# interval (5 ms) each time -- per row that made the writer crawl while the app captures.
_CHUNK = 400


def _parts(items: list[Any], size: int) -> Iterable[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _chunked(
    head: str, one: str, rows: Sequence[tuple[int, bytes]]
) -> Iterable[tuple[str, list[Any]]]:
    for part in _parts(list(rows), _CHUNK):
        yield head + ",".join([one] * len(part)), [v for row in part for v in row]


class JournalError(Exception):
    """The journal cannot be used (corrupt, unreadable, disk full or read-only)."""


def journal_path(spool_dir: str, name: str, pid: int, token: int | None = None) -> str:
    """A new journal of instance `name` in process `pid`.

    `token` (default: the time in ns) makes it unique: a pid is reused (every container's
    main process is pid 1; a restart in the same process), a journal name never is.
    """
    token = time.time_ns() if token is None else token
    return os.path.join(spool_dir, f"{_safe(name)}.{pid}-{token}.journal")


def lock_path(journal: str) -> str:
    return journal + ".lock"


def _safe(name: str) -> str:
    # An instance name is any str: keep the file name portable and unambiguous.
    return _SAFE.sub(lambda m: f"%{ord(m.group()):02x}", name)


def _try_lock(path: str) -> int | None:
    """An fd holding the exclusive flock of `path` (created if missing), or None if held."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


class Journal:
    """One journal file, opened by the process that owns it (its lock taken first)."""

    def __init__(self, path: str, sync: str = "batch", *, lock: bool = True):
        self.path = path
        self._lock_fd: int | None = None
        self._mutex = threading.Lock()
        if lock:
            fd = _try_lock(lock_path(path))
            if fd is None:
                raise JournalError(f"journal {path} is locked by a live process")
            self._lock_fd = fd
        try:
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._db.text_factory = bytes  # group_concat of blobs: raw bytes, never decoded
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={_SYNC[sync]}")
            self._db.execute(_SCHEMA)
            # Any damage shows here, not later in the middle of a delivery.
            self._db.execute("SELECT count(*) FROM events").fetchone()
        except sqlite3.Error as error:
            self._release_lock()
            raise JournalError(f"{type(error).__name__}: {error}") from error

    def _release_lock(self) -> None:
        if self._lock_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._lock_fd)
            self._lock_fd = None

    def _write(self, statements: Iterable[tuple[str, Sequence[Any]]]) -> None:
        with self._mutex:
            try:
                self._db.execute("BEGIN")
                for sql, params in statements:
                    self._db.execute(sql, params)
                self._db.execute("COMMIT")
            except sqlite3.Error as error:
                with contextlib.suppress(sqlite3.Error):
                    self._db.execute("ROLLBACK")
                raise JournalError(f"{type(error).__name__}: {error}") from error

    def append(self, items: Sequence[tuple[int, bytes]]) -> None:
        """Write (seq, data) rows in one transaction (the group commit)."""
        if items:
            self._write(_chunked("INSERT OR REPLACE INTO events (seq, data) VALUES ", "(?,?)", items))

    def delete(self, seqs: Sequence[int]) -> None:
        """Remove settled events (delivered, or dropped with a counted reason)."""
        if seqs:
            statements = (
                (f"DELETE FROM events WHERE seq IN ({','.join('?' * len(part))})", part)
                for part in _parts(list(seqs), _CHUNK)
            )
            self._write(statements)

    def read_oldest(self, n: int, after: int = 0) -> list[tuple[int, bytes]]:
        """Up to `n` rows with seq > `after`, oldest first."""
        # One result row for the lot (see _CHUNK: a step per row would hand the GIL over per
        # row): the seqs, the lengths and the payloads concatenated, split here.
        with self._mutex:
            try:
                seqs, sizes, blob = self._db.execute(
                    "SELECT group_concat(seq), group_concat(length(CAST(data AS BLOB))), "
                    "group_concat(CAST(data AS BLOB), '') FROM "
                    "(SELECT seq, data FROM events WHERE seq > ? ORDER BY seq LIMIT ?)",
                    (after, n),
                ).fetchone()
            except sqlite3.Error as error:
                raise JournalError(f"{type(error).__name__}: {error}") from error
        if seqs is None:
            return []
        rows = []
        pos = 0
        blob = bytes(blob)
        for seq, size in zip(bytes(seqs).split(b","), bytes(sizes).split(b","), strict=True):
            end = pos + int(size)
            rows.append((int(seq), blob[pos:end]))
            pos = end
        return rows

    def evict_oldest(self, n: int, after: int = 0) -> tuple[int, int]:
        """Delete the `n` oldest rows with seq > `after`: (rows removed, their bytes)."""
        rows = self.read_oldest(n, after)
        self.delete([seq for seq, _ in rows])
        return len(rows), sum(len(d) for _, d in rows)

    def count(self) -> tuple[int, int]:
        """(rows, payload bytes) in the journal."""
        with self._mutex:
            row = self._db.execute("SELECT count(*), coalesce(sum(length(data)), 0) FROM events")
            n, size = row.fetchone()
        return int(n), int(size)

    def close(self, *, remove_if_empty: bool = True) -> None:
        """Checkpoint and close; an empty journal is removed (nothing to replay)."""
        with self._mutex:
            empty = False
            with contextlib.suppress(sqlite3.Error):
                empty = self._db.execute("SELECT 1 FROM events LIMIT 1").fetchone() is None
            with contextlib.suppress(sqlite3.Error):
                self._db.close()
            if empty and remove_if_empty:
                _remove(self.path)
                with contextlib.suppress(OSError):
                    os.unlink(lock_path(self.path))
            self._release_lock()

    def discard(self) -> None:
        """Close and remove the journal (the spool failed: memory holds or counted it all)."""
        with self._mutex:
            with contextlib.suppress(sqlite3.Error):
                self._db.close()
            _remove(self.path)
            with contextlib.suppress(OSError):
                os.unlink(lock_path(self.path))
            self._release_lock()

    def forget_after_fork(self) -> None:
        """In a forked child: let go of the parent's journal without touching the file.

        The lock fd is closed (the parent keeps its lock); the SQLite connection is kept
        referenced for ever: closing it here could checkpoint and delete the parent's WAL.
        """
        _INHERITED.append(self._db)
        if self._lock_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._lock_fd)
            self._lock_fd = None


# Connections inherited across fork: never closed (see Journal.forget_after_fork).
_INHERITED: list[Any] = []


def _remove(path: str) -> None:
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(OSError):
            os.unlink(path + suffix)


def dead_journals(spool_dir: str, name: str, own: str) -> list[str]:
    """Journals of instance `name` in `spool_dir` other than `own` (oldest first by mtime)."""
    prefix = _safe(name) + "."
    try:
        entries = os.listdir(spool_dir)
    except OSError:
        return []
    found = []
    for entry in entries:
        if entry.startswith(prefix) and entry.endswith(".journal"):
            middle = entry[len(prefix) : -len(".journal")]
            path = os.path.join(spool_dir, entry)
            if _OWNER.fullmatch(middle) and path != own:
                with contextlib.suppress(OSError):
                    found.append((os.stat(path).st_mtime, path))
    return [path for _, path in sorted(found)]


def adopt_dead(path: str, into: Journal, first_seq: Any) -> tuple[int, str | None]:
    """Move the rows of a dead process's journal `path` into `into`, renumbered.

    `first_seq(n)` reserves n sequence numbers and returns the first. Returns (rows moved,
    None), (0, None) when the journal is locked by a live process (left alone) or already
    adopted, or (0, moved_aside_path) when it is corrupt (renamed `.corrupt`, never retried).
    The journal is removed only after its rows are committed in `into`: a crash in between
    delivers them twice (same uuids), never zero times.
    """
    fd = _try_lock(lock_path(path))
    if fd is None:
        return 0, None
    try:
        if not os.path.exists(path):
            return 0, None  # another process adopted it just before us
        try:
            old = sqlite3.connect(path, isolation_level=None)
            try:
                old.execute("PRAGMA journal_mode=WAL")
                rows = old.execute("SELECT data FROM events ORDER BY seq").fetchall()
            finally:
                old.close()
        except sqlite3.Error:
            aside = path + ".corrupt"
            with contextlib.suppress(OSError):
                os.replace(path, aside)
            for suffix in ("-wal", "-shm"):
                with contextlib.suppress(OSError):
                    os.replace(path + suffix, aside + suffix)
            return 0, aside
        n = len(rows)
        if n:
            first = first_seq(n)
            into.append([(first + i, bytes(row[0])) for i, row in enumerate(rows)])
        _remove(path)
        return n, None
    finally:
        with contextlib.suppress(OSError):
            os.unlink(lock_path(path))
        os.close(fd)


def inspect(path: str) -> dict[str, Any]:
    """What a journal holds, read only: rows, bytes, oldest and newest event (name, uuid)."""
    import orjson  # lazy: only the inspect command decodes events

    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        n, size = db.execute(
            "SELECT count(*), coalesce(sum(length(data)), 0) FROM events"
        ).fetchone()
        ends = db.execute(
            "SELECT data FROM events WHERE seq IN ((SELECT min(seq) FROM events), "
            "(SELECT max(seq) FROM events)) ORDER BY seq"
        ).fetchall()
    finally:
        db.close()
    summary: dict[str, Any] = {"path": path, "events": n, "bytes": size}
    for label, row in zip(("oldest", "newest"), ends, strict=False):
        try:
            event = orjson.loads(row[0])
            summary[label] = {k: event.get(k) for k in ("event", "uuid", "timestamp")}
        except orjson.JSONDecodeError:
            summary[label] = "<not JSON>"
    if n == 1 and "oldest" in summary:
        summary["newest"] = summary["oldest"]
    lock = _try_lock(lock_path(path)) if os.path.exists(lock_path(path)) else None
    summary["owner_alive"] = os.path.exists(lock_path(path)) and lock is None
    if lock is not None:
        os.close(lock)
    return summary


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] != "inspect":
        print("usage: python -m phactor.spool inspect PATH", file=sys.stderr)
        return 2
    try:
        summary = inspect(argv[1])
    except sqlite3.Error as error:
        print(f"{argv[1]}: not a readable journal ({error})", file=sys.stderr)
        return 1
    for key, value in summary.items():
        print(f"{key}: {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
