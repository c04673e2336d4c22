"""The `posthog` package as a benchmark client: its default settings, pointed at the sink.

Defaults of posthog 7.91 that matter here (read from `posthog.Client.__init__`): gzip=False,
flush_at=100, flush_interval=5.0, max_queue_size=10000, thread=1 consumer, max_retries=3 with
exponential backoff (1 s, 2 s, 4 s), timeout=15 s, capture_mode v0 (`POST /batch/`),
poll_interval=30 s, enable_exception_autocapture=False. The benchmark overrides only what a case
fixes for both clients (host, flush_at, gzip, max_queue_size for the throughput run) and keeps it
off the real network: host is always the sink, feature-flag polling only runs in the flags case
(no personal key otherwise), exception autocapture only in the errors case.
"""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

from benchmarks.clients import NotAvailable

DEFAULTS_NOTE = {
    "gzip": False,
    "flush_at": 100,
    "flush_interval": 5.0,
    "max_queue_size": 10000,
    "thread": 1,
    "max_retries": 3,
    "timeout": 15,
    "capture_mode": "v0 /batch/",
}


class PosthogClient:
    """Adapter giving the benchmark cases one interface over `posthog.Client`."""

    name = "posthog"

    def __init__(self) -> None:
        import posthog

        self._posthog = posthog
        self.version = posthog.VERSION
        self._client: Any = None
        self._options: dict[str, Any] = {}

    def _make(self, host: str, key: str, **options: Any) -> Any:
        kwargs: dict[str, Any] = {"host": host}
        if "flush_at" in options:
            kwargs["flush_at"] = options["flush_at"]
        if options.get("gzip"):
            kwargs["gzip"] = True
        if options.get("max_queue_size"):
            kwargs["max_queue_size"] = options["max_queue_size"]
        if options.get("flags_timeout"):
            kwargs["feature_flags_request_timeout_seconds"] = options["flags_timeout"]
        if options.get("personal_api_key"):
            kwargs["personal_api_key"] = options["personal_api_key"]
        else:
            # Without a personal key there is no poller; say so explicitly anyway.
            kwargs["enable_local_evaluation"] = False
        kwargs["enable_exception_autocapture"] = bool(options.get("error_tracking"))
        self._options = {k: v for k, v in kwargs.items() if k != "personal_api_key"}
        return self._posthog.Client(key, **kwargs)

    def start(self, host: str, key: str, **options: Any) -> None:
        """Create the client (its consumer thread starts eagerly)."""
        self._client = self._make(host, key, **options)

    def capture(self, event: str, distinct_id: str, properties: dict[str, Any]) -> Any:
        """`Client.capture`; returns the uuid or None when the event was not queued."""
        return self._client.capture(event, distinct_id=distinct_id, properties=properties)

    def flush(self, timeout: float) -> None:
        """Block until the queue drained (or `timeout`)."""
        self._client.flush(timeout_seconds=timeout)

    def stop(self, timeout: float) -> None:
        """`Client.shutdown()` (posthog's shutdown takes no timeout)."""
        if self._client is not None:
            self._client.shutdown()

    def stop_bounded(self, timeout: float) -> bool:
        """posthog has no bounded shutdown: with the endpoint down it would sit in retries."""
        return False

    def stats(self) -> dict[str, Any] | None:
        """posthog keeps no delivery counters."""
        return None

    def queue_length(self) -> int | None:
        """Events in the analytics lane's queue."""
        try:
            return int(self._client._analytics_lane.queue.qsize())
        except AttributeError:
            return None

    def max_queue_size(self) -> int:
        """The analytics lane's queue bound."""
        try:
            return int(self._client._analytics_lane.queue.maxsize)
        except AttributeError:
            return 10000

    def load_flags(self) -> None:
        """Fetch definitions now (the poller would do it in the background)."""
        self._client.load_feature_flags()
        if not self._client.feature_flags:
            raise RuntimeError("posthog loaded no flag definitions from the sink")

    def flag_single(self, key: str, distinct_id: str, person_properties: dict[str, Any]) -> Any:
        """`get_feature_flag_result(..., only_evaluate_locally=True)`, the value only."""
        r = self._client.get_feature_flag_result(
            key, distinct_id, person_properties=person_properties, only_evaluate_locally=True
        )
        return None if r is None else r.get_value()

    def flag_snapshot(
        self, distinct_id: str, person_properties: dict[str, Any], keys: tuple[str, ...]
    ) -> list[Any]:
        """`evaluate_flags(..., only_evaluate_locally=True)` then `get_flag` per key."""
        if not hasattr(self._client, "evaluate_flags"):
            raise NotAvailable("posthog has no evaluate_flags")
        snap = self._client.evaluate_flags(
            distinct_id, person_properties=person_properties, only_evaluate_locally=True
        )
        return [snap.get_flag(k) for k in keys]

    def flag_remote(self, key: str, distinct_id: str) -> Any:
        """`Client.get_feature_flag(key, distinct_id)`: no definitions, so asks `/flags`."""
        return self._client.get_feature_flag(key, distinct_id)

    async def flag_snapshot_async(
        self, distinct_id: str, person_properties: dict[str, Any], keys: tuple[str, ...]
    ) -> list[Any]:
        """posthog has no async API: `await asyncio.to_thread(evaluate_flags, ...)`, what an
        app on asyncio writes (the loop's default executor)."""
        if not hasattr(self._client, "evaluate_flags"):
            raise NotAvailable("posthog has no evaluate_flags")
        snap = await asyncio.to_thread(
            self._client.evaluate_flags, distinct_id, person_properties=person_properties
        )
        return [snap.get_flag(k) for k in keys]

    def capture_exception(self, exc: BaseException, distinct_id: str) -> Any:
        """`Client.capture_exception`."""
        return self._client.capture_exception(exc, distinct_id=distinct_id)

    def error_handler_installed(self) -> bool:
        """posthog hooks sys.excepthook / threading.excepthook only, never logging."""
        return False

    def settings(self) -> dict[str, Any]:
        """The settings this run used, and posthog's defaults for everything else."""
        sig = inspect.signature(self._posthog.Client.__init__)
        defaults = {
            k: sig.parameters[k].default
            for k in (
                "gzip",
                "flush_at",
                "flush_interval",
                "max_queue_size",
                "thread",
                "max_retries",
                "timeout",
            )
            if k in sig.parameters
        }
        return {"overrides": self._options, "package_defaults": defaults}

    def new_instance(self, host: str, key: str, index: int) -> Any:
        """A separate client (what an app would create per process or per tenant)."""
        return self._make(host, key, flush_at=100)

    def new_tracking_instance(self, host: str, key: str, index: int) -> Any:
        """A separate client with exception autocapture on."""
        return self._make(host, key, flush_at=100, enable_exception_autocapture=True)

    def stop_instance(self, handle: Any) -> None:
        """Shut one client down."""
        handle.shutdown()

    def instance_capture(
        self, handle: Any, event: str, distinct_id: str, properties: dict[str, Any]
    ) -> Any:
        """`Client.capture` on a client made by `new_instance`."""
        return handle.capture(event, distinct_id=distinct_id, properties=properties)

    def instance_flush(self, handle: Any, timeout: float) -> None:
        """`Client.flush` on a client made by `new_instance`."""
        handle.flush(timeout_seconds=timeout)
