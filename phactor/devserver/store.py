"""Event storage: one SQLite table ``events``, in memory (``":memory:"``) or in a file (``--db``).

Bounded by ``max_events`` and ``max_stored_bytes``: beyond either the oldest events are evicted,
so the newest stay visible. One lock serialises every use of the single connection.
"""

from __future__ import annotations

import collections
import logging
import os
import sqlite3
import threading
from dataclasses import dataclass
from typing import Any

import orjson
import structlog

_log = structlog.wrap_logger(logging.getLogger("phactor.devserver"))

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    api_key TEXT NOT NULL,
    uuid TEXT,
    event TEXT NOT NULL,
    distinct_id TEXT NOT NULL,
    timestamp TEXT,
    properties TEXT NOT NULL,
    received_at TEXT NOT NULL,
    raw TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_event ON events (event);
CREATE INDEX IF NOT EXISTS events_distinct_id ON events (distinct_id);
CREATE INDEX IF NOT EXISTS events_api_key ON events (api_key);
"""

_FILTER_COLUMNS = ("event", "distinct_id", "api_key")

_COLUMNS = "id, api_key, uuid, event, distinct_id, timestamp, properties, received_at, raw"


@dataclass(frozen=True)
class Query:
    """Which stored events to list: exact ``event``/``distinct_id``/``api_key``, ``q`` a
    case-insensitive substring of the event's JSON, and the id cursor ``after < id < before``."""

    event: str | None = None
    distinct_id: str | None = None
    api_key: str | None = None
    q: str | None = None
    after: int | None = None
    before: int | None = None

    def where(self) -> tuple[str, list[Any]]:
        clauses: list[str] = []
        params: list[Any] = []
        for column in _FILTER_COLUMNS:
            value = getattr(self, column)
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        if self.q:
            clauses.append("raw LIKE ? ESCAPE '\\'")
            params.append(_like_pattern(self.q))
        if self.after is not None:
            clauses.append("id > ?")
            params.append(self.after)
        if self.before is not None:
            clauses.append("id < ?")
            params.append(self.before)
        return (" WHERE " + " AND ".join(clauses) if clauses else ""), params


class EventStore:
    """The stored events and their counts; thread-safe."""

    def __init__(
        self, db: str | os.PathLike[str], max_events: int | None, max_stored_bytes: int | None
    ) -> None:
        self.max_events = max_events
        self.max_stored_bytes = max_stored_bytes
        self.path = os.fspath(db)
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        if self.path != ":memory:":
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        # One lock serialises every use of the single connection; waiters sleep on its Condition.
        self._db_lock = threading.Lock()
        self._stored = threading.Condition(self._db_lock)
        self._stored_count = self._db.execute("SELECT COUNT(*) FROM events").fetchone()[0]
        self._stored_bytes = self._db.execute(
            "SELECT COALESCE(SUM(length(properties) + length(raw)), 0) FROM events"
        ).fetchone()[0]
        self._evicted = 0
        self._per_key: collections.Counter[str] = collections.Counter(
            dict(self._db.execute("SELECT api_key, COUNT(*) FROM events GROUP BY api_key"))
        )

    def close(self) -> None:
        self._db.close()

    def events(
        self,
        limit: int | None = None,
        event: str | None = None,
        distinct_id: str | None = None,
        api_key: str | None = None,
        *,
        offset: int = 0,
    ) -> list[dict[str, Any]]:
        """Stored events matching every given filter, oldest first, as plain dicts."""
        return self.page(Query(event, distinct_id, api_key), limit, offset=offset)[0]

    def page(
        self,
        query: Query,
        limit: int | None = None,
        *,
        offset: int = 0,
        newest_first: bool = False,
        with_count: bool = False,
    ) -> tuple[list[dict[str, Any]], int | None]:
        """One page of the events matching ``query``, and (``with_count``) how many match.

        Every filter is an index lookup or a scan from the cursor end (``ORDER BY id`` is the
        rowid), so a page costs about its own size, whatever the number of stored events; only
        the count (and ``q``, when it rarely matches) scans every matching row.
        """
        where, params = query.where()
        order = "DESC" if newest_first else "ASC"
        sql = f"SELECT {_COLUMNS} FROM events{where} ORDER BY id {order} LIMIT ? OFFSET ?"
        with self._db_lock:
            rows = self._db.execute(
                sql, [*params, -1 if limit is None else int(limit), int(offset)]
            ).fetchall()
            count = None
            if with_count:
                count = (
                    self._stored_count
                    if not params
                    else self._db.execute(f"SELECT COUNT(*) FROM events{where}", params).fetchone()[
                        0
                    ]
                )
        return [_event_dict(row) for row in rows], count

    def latest_id(self) -> int:
        """The id of the newest stored event (0 when empty): a cursor for ``after``."""
        with self._db_lock:
            return int(self._db.execute("SELECT COALESCE(MAX(id), 0) FROM events").fetchone()[0])

    def per_key(self) -> dict[str, int]:
        """How many events each api key has stored now."""
        with self._db_lock:
            return {key: n for key, n in self._per_key.items() if n}

    def flag_calls(self, api_key: str | None = None) -> list[tuple[Any, str, str, int]]:
        """``$feature_flag_called`` events grouped: (flag, response JSON, distinct_id, count)."""
        sql = (
            "SELECT json_extract(properties, '$.\"$feature_flag\"') AS flag,"
            " CASE json_type(properties, '$.\"$feature_flag_response\"')"
            " WHEN 'true' THEN 'true' WHEN 'false' THEN 'false'"
            " WHEN 'object' THEN json_extract(properties, '$.\"$feature_flag_response\"')"
            " WHEN 'array' THEN json_extract(properties, '$.\"$feature_flag_response\"')"
            " ELSE json_quote(json_extract(properties, '$.\"$feature_flag_response\"')) END"
            " AS response, distinct_id, COUNT(*) FROM events WHERE event = '$feature_flag_called'"
            + (" AND api_key = ?" if api_key is not None else "")
            + " GROUP BY flag, response, distinct_id ORDER BY flag, response, MIN(id)"
        )
        with self._db_lock:
            return self._db.execute(sql, [] if api_key is None else [api_key]).fetchall()

    def count(
        self, event: str | None = None, distinct_id: str | None = None, api_key: str | None = None
    ) -> int:
        """How many stored events match every given filter."""
        count = self.page(Query(event, distinct_id, api_key), 0, with_count=True)[1]
        assert count is not None
        return count

    @property
    def stored_bytes(self) -> int:
        """The bytes of event JSON (properties and raw) stored now."""
        with self._db_lock:
            return self._stored_bytes

    @property
    def evicted(self) -> int:
        """How many events were evicted to stay within the store's limits (since clear())."""
        with self._db_lock:
            return self._evicted

    def wait_for(self, count: int, timeout: float | None = 5.0) -> bool:
        """Block until ``count`` events were stored (evicted ones included); False on timeout."""
        with self._stored:
            return self._stored.wait_for(
                lambda: self._stored_count + self._evicted >= count, timeout
            )

    def clear(self) -> None:
        """Forget every stored event and the eviction count."""
        with self._stored:
            self._db.execute("DELETE FROM events")
            self._stored_count = 0
            self._stored_bytes = 0
            self._evicted = 0
            self._per_key.clear()

    def store(self, rows: list[tuple[Any, ...]]) -> None:
        if not rows:
            return
        max_count, max_bytes = self.max_events, self.max_stored_bytes
        sizes = [_row_bytes(row) for row in rows]
        # A batch that alone overflows a limit keeps its newest events that fit.
        keep = len(rows) if max_count is None else min(len(rows), max_count)
        if max_bytes is not None:
            total, fit = 0, 0
            for size in reversed(sizes[len(sizes) - keep :]):
                if total + size > max_bytes:
                    break
                total, fit = total + size, fit + 1
            keep = fit
        skipped = len(rows) - keep
        rows, sizes = rows[skipped:], sizes[skipped:]
        new_bytes = sum(sizes)
        with self._stored:
            over_count = 0 if max_count is None else self._stored_count + len(rows) - max_count
            over_bytes = 0 if max_bytes is None else self._stored_bytes + new_bytes - max_bytes
            removed = freed = 0
            # One transaction per request: per-event commits would cap throughput far too low.
            self._db.execute("BEGIN")
            try:
                if over_count > 0 or over_bytes > 0:
                    oldest = self._db.execute(
                        "SELECT length(properties) + length(raw), api_key FROM events ORDER BY id"
                    )
                    for size, key in oldest:
                        if removed >= over_count and freed >= over_bytes:
                            break
                        removed, freed = removed + 1, freed + size
                        self._per_key[key] -= 1
                    oldest.close()
                    self._db.execute(
                        "DELETE FROM events WHERE id IN "
                        "(SELECT id FROM events ORDER BY id LIMIT ?)",
                        (removed,),
                    )
                self._db.executemany(
                    "INSERT INTO events (api_key, uuid, event, distinct_id, timestamp, "
                    "properties, received_at, raw) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    rows,
                )
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
            self._per_key.update(row[0] for row in rows)
            self._stored_count += len(rows) - removed
            self._stored_bytes += new_bytes - freed
            self._evicted += removed + skipped
            self._stored.notify_all()
        if removed + skipped:
            _log.debug(
                "devserver_evicted",
                events=removed + skipped,
                max_events=max_count,
                max_stored_bytes=max_bytes,
            )


def _row_bytes(row: tuple[Any, ...]) -> int:
    """What a stored row weighs: its properties and raw JSON in characters (as SQL length())."""
    return len(row[5]) + len(row[7])


def _event_dict(row: tuple[Any, ...]) -> dict[str, Any]:
    return {
        "id": row[0],
        "api_key": row[1],
        "uuid": row[2],
        "event": row[3],
        "distinct_id": row[4],
        "timestamp": row[5],
        "properties": orjson.loads(row[6]),
        "received_at": row[7],
        "raw": orjson.loads(row[8]),
    }


def _like_pattern(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"
