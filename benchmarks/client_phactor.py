"""phactor as a benchmark client, used only through its public API (docs: /work/shared/API.md).

Settings per run: host = the sink (or the down URL), flush_at 100, gzip off unless the case asks
for it (posthog's default is off; phactor's is on), error tracking off unless the errors case
asks for it (it is on by default in phactor, off in posthog). Everything else is phactor's default.
"""

from __future__ import annotations

import logging
from typing import Any

from benchmarks.clients import NotAvailable
from benchmarks.workload import EVENT, workload

INSTANCE = "bench"


def availability() -> str | None:
    """None when phactor's runtime can be started; otherwise why not (used to report n/a)."""
    try:
        import phactor
    except Exception as e:  # pragma: no cover - depends on the tree under development
        return f"import phactor failed: {e!r}"
    for name in ("start", "stop", "capture", "flush"):
        if not hasattr(phactor, name):
            return f"phactor.{name} does not exist yet"
    return None


class PhactorClient:
    """Adapter giving the benchmark cases one interface over a phactor `Instance`."""

    name = "phactor"

    def __init__(self) -> None:
        why = availability()
        if why:
            raise NotAvailable(why)
        import phactor

        self._phactor = phactor
        self.version = phactor.__version__
        self._inst: Any = None
        self._options: dict[str, Any] = {}
        self._root_handlers_before: list[logging.Handler] = []

    def _config(self, host: str, key: str, **options: Any) -> dict[str, Any]:
        config: dict[str, Any] = {
            "api_key": key,
            "host": host,
            "flush_at": options.get("flush_at", 100),
            "gzip": bool(options.get("gzip", False)),
            "enable_error_tracking": bool(options.get("error_tracking", False)),
        }
        if options.get("max_queue_size"):
            config["max_queue_size"] = options["max_queue_size"]
        if options.get("personal_api_key"):
            config["personal_api_key"] = options["personal_api_key"]
        if options.get("flags_timeout"):
            config["flags_request_timeout"] = options["flags_timeout"]
        return config

    def start(self, host: str, key: str, **options: Any) -> None:
        """`phactor.start(name="bench", ...)`."""
        config = self._config(host, key, **options)
        self._options = {
            k: v for k, v in config.items() if k not in ("api_key", "personal_api_key")
        }
        self._root_handlers_before = list(logging.getLogger().handlers)
        try:
            self._inst = self._phactor.start(name=INSTANCE, **config)
        except self._phactor.ConfigError as e:
            raise NotAvailable(f"phactor.start rejected the config: {e}") from e

    def capture(self, event: str, distinct_id: str, properties: dict[str, Any]) -> Any:
        """`Instance.capture`; returns the uuid or None when the event was not queued."""
        return self._inst.capture(event, distinct_id, properties)

    def flush(self, timeout: float) -> None:
        """`Instance.flush(timeout)`; a False return (timeout) is not an error here."""
        self._inst.flush(timeout)

    def stop(self, timeout: float) -> None:
        """`Instance.stop(timeout)` (flushes first)."""
        if self._inst is not None:
            self._inst.stop(timeout)

    def stop_bounded(self, timeout: float) -> bool:
        """phactor's stop never blocks past its timeout, even with the endpoint down."""
        self.stop(timeout)
        return True

    def stats(self) -> dict[str, Any] | None:
        """`Instance.stats()` (captured, sent, dropped by reason, ...)."""
        try:
            return dict(self._inst.stats())
        except Exception as e:
            return {"error": repr(e)}

    def queue_length(self) -> int | None:
        """`Instance.queue_length()`."""
        try:
            return int(self._inst.queue_length())
        except Exception:
            return None

    def max_queue_size(self) -> int:
        """The instance's configured queue bound."""
        return int(self._inst.config.max_queue_size)

    def load_flags(self) -> None:
        """`Instance.reload_feature_flags()` (blocks until loaded or failed)."""
        if not hasattr(self._inst, "evaluate_flags"):
            raise NotAvailable("phactor has no evaluate_flags yet")
        if not hasattr(self._inst, "reload_feature_flags"):
            raise NotAvailable("phactor has no reload_feature_flags yet")
        self._inst.reload_feature_flags()

    def flag_single(self, key: str, distinct_id: str, person_properties: dict[str, Any]) -> Any:
        """`Instance.get_feature_flag(key, distinct_id, only_evaluate_locally=True, ...)`."""
        fn = getattr(self._inst, "get_feature_flag", None)
        if fn is None:
            raise NotAvailable("phactor has no get_feature_flag yet")
        return fn(key, distinct_id, person_properties=person_properties, only_evaluate_locally=True)

    def flag_snapshot(
        self, distinct_id: str, person_properties: dict[str, Any], keys: tuple[str, ...]
    ) -> list[Any]:
        """`Instance.evaluate_flags(..., only_evaluate_locally=True)` then `get_flag` per key."""
        snap = self._inst.evaluate_flags(
            distinct_id, person_properties=person_properties, only_evaluate_locally=True
        )
        return [snap.get_flag(k) for k in keys]

    def flag_remote(self, key: str, distinct_id: str) -> Any:
        """`Instance.get_feature_flag(key, distinct_id)`: no definitions, so asks `/flags`."""
        return self._inst.get_feature_flag(key, distinct_id)

    async def flag_snapshot_async(
        self, distinct_id: str, person_properties: dict[str, Any], keys: tuple[str, ...]
    ) -> list[Any]:
        """`await Instance.aio.evaluate_flags(...)` then `get_flag` per key."""
        if not hasattr(self._inst, "aio"):
            raise NotAvailable("phactor has no async API yet")
        snap = await self._inst.aio.evaluate_flags(distinct_id, person_properties=person_properties)
        return [snap.get_flag(k) for k in keys]

    def capture_exception(self, exc: BaseException, distinct_id: str) -> Any:
        """`Instance.capture_exception(exc, distinct_id)`."""
        fn = getattr(self._inst, "capture_exception", None)
        if fn is None:
            raise NotAvailable("phactor has no capture_exception yet")
        return fn(exc, distinct_id)

    def error_handler_installed(self) -> bool:
        """True when start(enable_error_tracking=True) added a handler to the root logger."""
        now = logging.getLogger().handlers
        return any(h not in self._root_handlers_before for h in now)

    def settings(self) -> dict[str, Any]:
        """The options this run passed; phactor's defaults apply to the rest."""
        return {"overrides": self._options}

    def new_instance(self, host: str, key: str, index: int) -> Any:
        """A separately named instance (its own supervision tree)."""
        return self._phactor.start(name=f"bench-{index}", **self._config(host, key, flush_at=100))

    def new_tracking_instance(self, host: str, key: str, index: int) -> Any:
        """A separately named instance with error tracking on (its logging handler)."""
        options = self._config(host, key, flush_at=100)
        options["enable_error_tracking"] = True
        return self._phactor.start(name=f"bench-et-{index}", **options)

    def stop_instance(self, handle: Any) -> None:
        """Stop one instance."""
        handle.stop(10.0)

    def instance_capture(
        self, handle: Any, event: str, distinct_id: str, properties: dict[str, Any]
    ) -> Any:
        """`Instance.capture` on an instance made by `new_instance`."""
        return handle.capture(event, distinct_id, properties)

    def instance_flush(self, handle: Any, timeout: float) -> None:
        """`Instance.flush(timeout)` on an instance made by `new_instance`."""
        handle.flush(timeout)


def profile_capture(sink: str, calls: int = 20_000, top: int = 15) -> str:
    """cProfile of the caller's thread during `calls` captures (sorted by tottime), as text."""
    import cProfile
    import io
    import pstats

    client = PhactorClient()
    client.start(sink, "phc_bench_profile", flush_at=100)
    work = workload()
    for i in range(2000):
        did, props = work[i % len(work)]
        client.capture(EVENT, did, props)
    client.flush(30)
    prof = cProfile.Profile()
    capture = client.capture
    done = 0
    while done < calls:
        prof.enable()
        for i in range(done, done + 1000):
            did, props = work[i % len(work)]
            capture(EVENT, did, props)
        prof.disable()
        done += 1000
        client.flush(30)
    client.stop(10)
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(top)
    return out.getvalue()
