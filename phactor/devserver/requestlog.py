"""The request log: every request to a capture, flags or definitions endpoint, as it reached the wire.

Recorded *before* the response is written, including requests answered with an injected fault and
those dropped without an answer. The log keeps the newest ``max_requests`` (and about 64 MiB);
the counts cover every request.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from phactor.devserver.faults import Endpoint, check_endpoint

# The log also keeps at most about this many bytes (headers, uuids, flags bodies): many requests
# with huge headers must not pile up.
_MAX_LOG_BYTES = 64 * 1024 * 1024
_UUID_COST = 100  # a uuid str in a tuple, roughly


@dataclass(frozen=True)
class ReceivedRequest:
    """One request that reached a capture, flags or definitions endpoint.

    ``status`` is None when the connection was dropped without a response; ``fault`` names the
    injected behaviour that answered it (``"fail"``, ``"drop"``, ``"reset"``, ``"mode:<mode>"``,
    ``"too_large"``) or is None for normal handling. ``uuids`` are the event uuids found in the
    body (capture only, also for rejected requests when the body could be parsed). ``body`` is the
    parsed JSON body of flags requests (None for capture, whose events are in the table).
    ``peer`` is the client's ``host:port``: one peer across requests means one kept-alive
    connection.
    """

    method: str
    path: str
    endpoint: str
    query: Mapping[str, str]
    headers: Mapping[str, str]
    body_bytes: int
    status: int | None
    fault: str | None = None
    api_key: str | None = None
    uuids: tuple[str, ...] = ()
    event_count: int = 0
    error: str | None = None
    body: Any = None
    received_at: str = ""
    peer: str = ""


@dataclass
class ProjectCounts:
    """What one api key's capture requests came to (the viewer's counters); never trimmed."""

    batches: int = 0  # capture requests whose events were stored
    gzip_batches: int = 0  # ... of them sent gzipped
    rejected: collections.Counter[str] = field(default_factory=collections.Counter)
    flags_requests: int = 0

    def as_json(self) -> dict[str, Any]:
        return {
            "batches": self.batches,
            "gzip_batches": self.gzip_batches,
            "gzip_share": self.gzip_batches / self.batches if self.batches else None,
            "rejected": dict(self.rejected),
            "flags_requests": self.flags_requests,
        }


class RequestLog:
    """The bounded log and its exact counters; thread-safe, waiters sleep on one Condition."""

    def __init__(self, max_requests: int) -> None:
        self._cond = threading.Condition()
        self._max_requests = max_requests
        self._requests: collections.deque[tuple[ReceivedRequest, int]] = collections.deque()
        self._log_bytes = 0
        self._recorded: collections.Counter[str] = collections.Counter()
        self._arrivals: collections.Counter[str] = collections.Counter()
        self._projects: dict[str | None, ProjectCounts] = {}

    @property
    def requests(self) -> list[ReceivedRequest]:
        with self._cond:
            return [request for request, _ in self._requests]

    def count(self, endpoint: Endpoint = "capture") -> int:
        check_endpoint(endpoint)
        with self._cond:
            return self._recorded_count(endpoint)

    def _recorded_count(self, endpoint: str) -> int:
        if endpoint == "any":
            return sum(self._recorded.values())
        return self._recorded[endpoint]

    def uuid_counts(self) -> collections.Counter[str]:
        with self._cond:
            return collections.Counter(u for r, _ in self._requests for u in r.uuids)

    def wait_for_requests(self, count: int, timeout: float | None, endpoint: Endpoint) -> bool:
        check_endpoint(endpoint)

        def reached() -> bool:
            return self._recorded_count(endpoint) >= count

        with self._cond:
            return self._cond.wait_for(reached, timeout)

    def wait_for_arrivals(self, count: int, timeout: float | None, endpoint: Endpoint) -> bool:
        check_endpoint(endpoint)

        def reached() -> bool:
            if endpoint == "any":
                return sum(self._arrivals.values()) >= count
            return self._arrivals[endpoint] >= count

        with self._cond:
            return self._cond.wait_for(reached, timeout)

    def arrived(self, endpoint: str) -> None:
        """Count a request to ``endpoint`` as read (before any delay or fault)."""
        with self._cond:
            self._arrivals[endpoint] += 1
            self._cond.notify_all()

    def projects(self) -> dict[str | None, dict[str, Any]]:
        """Per api key (None: requests without one), the counters as JSON-ready dicts."""
        with self._cond:
            return {key: counts.as_json() for key, counts in self._projects.items()}

    def record(
        self,
        request: ReceivedRequest,
        body_cost: int = 0,
        *,
        gzipped: bool = False,
        reason: str | None = None,
    ) -> None:
        """Log ``request``; ``reason`` says why a capture request stored nothing (its error
        code or fault), ``gzipped`` whether its body was gzip."""
        cost = (
            body_cost
            + sum(len(name) + len(value) for name, value in request.headers.items())
            + _UUID_COST * len(request.uuids)
        )
        with self._cond:
            self._requests.append((request, cost))
            self._log_bytes += cost
            self._recorded[request.endpoint] += 1
            project = self._projects.get(request.api_key)
            if project is None:
                project = self._projects[request.api_key] = ProjectCounts()
            if request.endpoint == "flags":
                project.flags_requests += 1
            elif request.endpoint == "capture" and reason is None:
                project.batches += 1
                project.gzip_batches += gzipped
            elif request.endpoint == "capture":
                project.rejected[reason or "unknown"] += 1
            while len(self._requests) > 1 and (
                len(self._requests) > self._max_requests or self._log_bytes > _MAX_LOG_BYTES
            ):
                self._log_bytes -= self._requests.popleft()[1]
            self._cond.notify_all()

    def clear(self) -> None:
        with self._cond:
            self._requests.clear()
            self._log_bytes = 0
            self._recorded.clear()
            self._arrivals.clear()
            self._projects.clear()

    def wake(self) -> None:
        """Wake every waiter (the server stopped)."""
        with self._cond:
            self._cond.notify_all()
