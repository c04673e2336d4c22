"""Fault injection: how the devserver misbehaves on purpose, for tests and for people.

Precedence per request: the persistent mode (:meth:`FaultPlan.set_mode`) > queued one-shot faults
(FIFO) > the size limit (:meth:`FaultPlan.reject_larger_than`) > normal handling. A delay applies
on top of any of them.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

Endpoint = Literal["capture", "flags", "definitions", "any"]
"""Which requests a fault, a count or a wait applies to."""

Mode = Literal["up", "down", "reset", "error"]
"""Persistent behaviour: serve, close without an answer, reset, or answer an error status."""

ENDPOINTS = ("capture", "flags", "definitions", "any")
MODES = ("up", "down", "reset", "error")


@dataclass
class Fault:
    """A queued one-shot fault for the next ``remaining`` requests to ``endpoint``."""

    kind: Literal["fail", "drop", "reset"]
    remaining: int
    endpoint: str
    status: int = 500
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""
    store: bool = False


@dataclass(frozen=True)
class Decision:
    """What the fault plan says about one request (taken once, when it arrives)."""

    mode: str
    mode_status: int
    fault: Fault | None
    delay: float


class FaultPlan:
    """The faults in force; thread-safe. :class:`~phactor.devserver.DevServer` delegates here."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []
        self._mode = "up"
        self._mode_status = 503
        self._delay: tuple[float, str] = (0.0, "any")
        self._size_limit: int | None = None

    def fail_next(
        self,
        n: int,
        status: int,
        *,
        headers: Mapping[str, str] | None,
        body: bytes | str,
        endpoint: Endpoint,
        store: bool,
    ) -> None:
        check_endpoint(endpoint)
        if not isinstance(status, int) or not 100 <= status <= 599:
            raise TypeError("status must be an HTTP status code")
        payload = body.encode() if isinstance(body, str) else bytes(body)
        self._queue(Fault("fail", n, endpoint, status, dict(headers or {}), payload, store))

    def drop_next(self, n: int, *, reset: bool, endpoint: Endpoint, store: bool) -> None:
        check_endpoint(endpoint)
        self._queue(Fault("reset" if reset else "drop", n, endpoint, store=store))

    def set_mode(self, mode: Mode, *, status: int = 503) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        with self._lock:
            self._mode, self._mode_status = mode, status

    def delay(self, seconds: float, *, endpoint: Endpoint = "any") -> None:
        check_endpoint(endpoint)
        if seconds < 0:
            raise ValueError("seconds must be >= 0")
        with self._lock:
            self._delay = (float(seconds), endpoint)

    def reject_larger_than(self, limit: int | None) -> None:
        if limit is not None and (not isinstance(limit, int) or limit < 0):
            raise TypeError("limit must be a non-negative int or None")
        with self._lock:
            self._size_limit = limit

    def reset(self) -> None:
        with self._lock:
            self._faults.clear()
            self._mode, self._mode_status = "up", 503
            self._delay = (0.0, "any")
            self._size_limit = None

    @property
    def size_limit(self) -> int | None:
        with self._lock:
            return self._size_limit

    def snapshot(self) -> dict[str, Any]:
        """The faults in force as JSON-ready data (``GET /api/faults``)."""
        with self._lock:
            return {
                "mode": self._mode,
                "status": self._mode_status,
                "delay": {"seconds": self._delay[0], "endpoint": self._delay[1]},
                "queued": [
                    {"kind": f.kind, "remaining": f.remaining, "endpoint": f.endpoint}
                    for f in self._faults
                ],
                "reject_larger_than": self._size_limit,
            }

    def _queue(self, fault: Fault) -> None:
        if not isinstance(fault.remaining, int) or fault.remaining < 1:
            raise ValueError("n must be a positive int")
        with self._lock:
            self._faults.append(fault)

    def take(self, endpoint: str) -> Decision:
        """Decide for one request to ``endpoint``, using up a queued fault if one matches."""
        with self._lock:
            seconds, delayed = self._delay
            delay = seconds if matches(delayed, endpoint) else 0.0
            for fault in self._faults:
                if matches(fault.endpoint, endpoint):
                    fault.remaining -= 1
                    if fault.remaining == 0:
                        self._faults.remove(fault)
                    return Decision(self._mode, self._mode_status, fault, delay)
            return Decision(self._mode, self._mode_status, None, delay)


def matches(selector: str, endpoint: str) -> bool:
    return selector == "any" or selector == endpoint


def check_endpoint(endpoint: str) -> None:
    if endpoint not in ENDPOINTS:
        raise ValueError(f"endpoint must be one of {ENDPOINTS}, got {endpoint!r}")
