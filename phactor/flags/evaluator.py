"""The FlagEvaluator actor and the flag state it keeps up to date.

Why the split: evaluation happens on the app's request path and must never wait behind a
definitions download. So the actor only *loads* (at start, every ``poll_interval``, on
``reload_feature_flags()``) and publishes an immutable ``Definitions`` snapshot into a
``FlagState`` with one attribute assignment; callers read that attribute on their own thread and
evaluate with the pure core. The ``FlagState`` belongs to the Instance, not to the actor, so a
crashed and restarted FlagEvaluator carries on with the definitions, ETag and
``$feature_flag_called`` cache of its predecessor.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import pykka

from phactor.flags.definitions import Definitions
from phactor.flags.evaluations import FlagEvaluations, decode_payload
from phactor.flags.http import FlagsHttp, LogThrottle
from phactor.flags.results import FlagResult
from phactor.supervisor import SupervisedActor
from phactor.timer import scheduler

__all__ = [
    "FlagCalledCache",
    "FlagCalledReporter",
    "FlagEvaluator",
    "FlagState",
    "Poll",
    "Reload",
    "flag_called_properties",
    "flag_error",
    "load_definitions",
    "load_static_flags",
    "static_flag_results",
]


@dataclass(frozen=True)
class Poll:
    """Timer tick (and the first load at start): load definitions, then schedule the next."""


@dataclass(frozen=True)
class Reload:
    """Ask: load now; the answer is True when current definitions are in place."""


class FlagCalledCache:
    """Bounded LRU of (distinct_id, key, response) already reported by ``$feature_flag_called``.

    ``size`` 0 keeps nothing, so every read is reported.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._seen: OrderedDict[tuple[str, str, Any], None] = OrderedDict()
        self._lock = threading.Lock()

    def first_time(self, entry: tuple[str, str, Any]) -> bool:
        """True (and remembered) when ``entry`` was not reported recently."""
        seen = self._seen
        with self._lock:
            if entry in seen:
                seen.move_to_end(entry)
                return False
            seen[entry] = None
            if len(seen) > self.size:
                seen.popitem(last=False)
            return True

    def __len__(self) -> int:
        return len(self._seen)

    def reset_after_fork(self) -> None:
        """A fresh lock: the parent's may have been held at fork time."""
        self._lock = threading.Lock()


# Unresolved reasons that already are one of PostHog's `$feature_flag_error` values.
_ERROR_NAMES = frozenset(
    {
        "quota_limited",
        "errors_while_computing_flags",
        "evaluation_failed",
        "flag_missing",
        "timeout",
        "connection_error",
        "malformed_response",
    }
)
_MISSING_REASONS = frozenset(
    {"unknown_flag", "definitions_not_loaded", "test_mode", "missing_distinct_id", "disabled"}
)


def flag_error(reason: str | None) -> str | None:
    """The ``$feature_flag_error`` value for an unresolved flag's reason (PostHog's names)."""
    if reason is None:
        return "flag_missing"
    if reason in _ERROR_NAMES or reason.startswith("api_error_"):
        return reason
    if reason in _MISSING_REASONS:
        return "flag_missing"
    if reason.startswith("malformed_record"):
        return "malformed_response"
    if reason in ("request_error", "invalid_request"):
        return "unknown_error"
    # Everything else is a local-evaluation cause (missing_property:..., static_cohort:..., ...).
    return "local_evaluation_inconclusive"


def flag_called_properties(
    key: str,
    result: FlagResult | None,
    reason: str | None,
    request_id: str | None,
    evaluated_at: Any = None,
) -> dict[str, Any]:
    """The properties of one ``$feature_flag_called`` event, as the posthog package sends them.

    ``$feature_flag_reason`` is our reason code (``condition_match``, ...) for local and remote
    values alike; ``$feature_flag_payload`` is the decoded payload.
    """
    response = None if result is None else result.value
    props: dict[str, Any] = {
        "$feature_flag": key,
        "$feature_flag_response": response,
        f"$feature/{key}": response,
        "locally_evaluated": bool(result is not None and result.locally_evaluated),
    }
    if result is not None:
        if result.payload is not None:
            payload = decode_payload(result.payload)
            if payload is not None:
                props["$feature_flag_payload"] = payload
        if result.flag_id:
            props["$feature_flag_id"] = result.flag_id
        if result.version:
            props["$feature_flag_version"] = result.version
        if result.reason:
            props["$feature_flag_reason"] = result.reason
        if not result.locally_evaluated:
            _add_request(props, request_id, evaluated_at)
    else:
        _add_request(props, request_id, evaluated_at)
        props["$feature_flag_error"] = flag_error(reason)
    return props


def _add_request(props: dict[str, Any], request_id: str | None, evaluated_at: Any) -> None:
    """The /flags answer's `requestId` and `evaluatedAt` (ms since the epoch), when known."""
    if request_id:
        props["$feature_flag_request_id"] = request_id
    if isinstance(evaluated_at, int) and not isinstance(evaluated_at, bool) and evaluated_at:
        props["$feature_flag_evaluated_at"] = evaluated_at


class FlagCalledReporter:
    """Sends ``$feature_flag_called`` for flag reads, once per (distinct_id, key, response).

    ``send(distinct_id, properties, groups)`` queues the event (the Instance's normal capture
    path); it is only called for reads not reported recently.
    """

    def __init__(
        self, cache: FlagCalledCache, send: Callable[[str, dict[str, Any], Any], Any]
    ) -> None:
        self.cache = cache
        self.send = send

    def report(
        self,
        distinct_id: str,
        groups: Mapping[str, Any] | None,
        key: str,
        result: FlagResult | None,
        reason: str | None,
        request_id: str | None,
        evaluated_at: Any = None,
    ) -> None:
        """Report one read of ``key`` (``result`` None when it had no value, with ``reason``)."""
        if not distinct_id:
            return
        response = None if result is None else result.value
        if not self.cache.first_time((distinct_id, key, response)):
            return
        self.send(
            distinct_id,
            flag_called_properties(key, result, reason, request_id, evaluated_at),
            groups,
        )

    def on_access(self, key: str, result: FlagResult | None, snapshot: FlagEvaluations) -> None:
        """The ``FlagEvaluations`` access hook."""
        self.report(
            snapshot.distinct_id,
            snapshot.groups,
            key,
            result,
            None if result is not None else snapshot.unresolved.get(key),
            snapshot.request_id,
            snapshot.evaluated_at,
        )


class FlagState:
    """What survives FlagEvaluator restarts: the definitions snapshot, ETag, cache, test flags.

    ``definitions`` is None until a load succeeds (and again after a 401/402): evaluation then
    goes to the server. It is only ever replaced whole, so a reader that took it once sees one
    consistent set. ``static`` holds the test-mode flag values (None outside test mode).
    """

    def __init__(self, http: FlagsHttp | None, called: FlagCalledCache, log: Any) -> None:
        self.log = log
        self.definitions: Definitions | None = None
        self.etag: str | None = None
        self.static: dict[str, FlagResult] | None = None
        self.http = http
        self.called = called
        self.reporter: FlagCalledReporter | None = None
        self.first_load = threading.Event()
        self.last_outcome: str | None = None
        self.loads = 0
        self.throttle = LogThrottle()
        self.pid = os.getpid()
        # The outage part (set by flags/methods.py): the /flags breaker, the last-known values,
        # the remote request counters, and when the definitions were last loaded / confirmed.
        self.breaker: Any = None
        self.cache: Any = None
        self.remote_requests = 0
        self.remote_failures = 0
        self.definitions_loaded_at: float | None = None  # time.time() of the last load
        self.definitions_confirmed: float | None = None  # time.monotonic(): loaded or 304

    def reset_after_fork(self) -> None:
        """Fresh locks and sessions in a forked child; the definitions stay."""
        self.pid = os.getpid()
        self.called.reset_after_fork()
        self.first_load = threading.Event()
        if self.definitions is not None or self.static is not None:
            self.first_load.set()
        self.throttle = LogThrottle()
        if self.http is not None:
            self.http.reset_after_fork()


def _uncompilable_reporter(log: Any) -> Any:
    """One warning per flag whose definition cannot be compiled, when it is first evaluated
    (flags compile lazily: a load does not look inside them)."""

    def report(key: str) -> None:
        log.warning(
            "flag_definitions_uncompilable",
            count=1,
            flags=[key],
            effect="this flag is unresolved locally (malformed_definition); others are not",
        )

    return report


def load_definitions(state: FlagState, log: Any) -> bool:
    """Fetch definitions once and publish them into ``state``; True when current ones are in
    place (loaded or 304). Never raises."""
    assert state.http is not None
    fetch = state.http.fetch_definitions(state.etag)
    previous, state.last_outcome = state.last_outcome, fetch.outcome
    if fetch.outcome == "loaded":
        definitions = Definitions.from_response(fetch.body, _uncompilable_reporter(log))
        state.definitions = definitions  # the atomic swap readers rely on
        state.etag = fetch.etag
        state.loads += 1
        state.definitions_loaded_at = time.time()
        state.definitions_confirmed = time.monotonic()
        log.info(
            "flag_definitions_loaded",
            flags=len(definitions),
            skipped=definitions.skipped,
            path=fetch.path,
        )
        return True
    if fetch.outcome == "not_modified":
        state.definitions_confirmed = time.monotonic()
        if previous != "not_modified":
            log.debug("flag_definitions_not_modified")
        return state.definitions is not None
    if fetch.outcome == "unauthorized":
        had = state.definitions is not None
        state.definitions = None
        state.etag = None
        if previous != "unauthorized":
            log.error(
                "flag_definitions_unauthorized",
                status=fetch.status,
                detail=fetch.detail,
                effect=(
                    "flag definitions cleared, local evaluation off until the key is accepted"
                    if had
                    else "local evaluation off until the key is accepted"
                ),
            )
        return False
    count = state.throttle.should_log(fetch.detail)
    if count or previous not in ("failed", None):
        log.warning(
            "flag_definitions_failed",
            detail=fetch.detail,
            count=count,
            effect="keeping the last good definitions"
            if state.definitions is not None
            else "no definitions yet: flags are evaluated remotely",
        )
    return False


def static_flag_results(values: Mapping[str, Any], log: Any) -> dict[str, FlagResult]:
    """Test-mode values -> results. A value is True/False, a variant str, or
    ``{"value": ..., "payload": ...}``; anything else is logged and skipped."""
    results: dict[str, FlagResult] = {}
    for key, raw in values.items():
        payload = None
        value = raw
        if isinstance(raw, Mapping) and "value" in raw:
            value, payload = raw["value"], raw.get("payload")
            if payload is not None and not isinstance(payload, str):
                payload = json.dumps(payload)
        if not isinstance(key, str) or not (
            isinstance(value, bool) or (isinstance(value, str) and value)
        ):
            log.error("test_flag_invalid", flag=str(key), value=repr(raw)[:100])
            continue
        results[key] = FlagResult(
            key, value, payload if value is not False else None, "test_mode", None, None, None
        )
    return results


def load_static_flags(state: FlagState, source: Mapping[str, Any] | str, log: Any) -> bool:
    """Load test-mode flag values from a mapping or a JSON file into ``state``. Never raises;
    an unreadable file keeps the previous values (empty at first) and logs why."""
    values: Any = source
    if isinstance(source, str):
        try:
            with open(source, encoding="utf-8") as file:
                values = json.load(file)
        except (OSError, ValueError) as error:
            log.error("test_flags_unreadable", path=source, error=repr(error))
            if state.static is None:
                state.static = {}
            return False
    if not isinstance(values, Mapping):
        log.error("test_flags_invalid", detail="expected a JSON object of flag key -> value")
        if state.static is None:
            state.static = {}
        return False
    state.static = static_flag_results(values, log)
    return True


class FlagEvaluator(SupervisedActor):
    """Loads flag definitions in the background and every ``poll_interval`` (None: never polls).

    ``load()`` does one load into the shared state and returns True when current definitions are
    in place; the actor never evaluates flags itself.
    """

    def __init__(
        self,
        child_name: str,
        generation: int,
        supervisor: Any,
        *,
        state: FlagState,
        load: Callable[[], bool],
        poll_interval: float | None,
        load_at_start: bool,
        log: Any,
    ) -> None:
        super().__init__(child_name, generation, supervisor)
        self.state = state
        self.load = load
        self.poll_interval = poll_interval
        self.load_at_start = load_at_start
        self.log = log
        self._timer: int | None = None

    def started(self) -> None:
        # Never load here: start() must not wait on the network. A message runs it right after.
        if self.load_at_start:
            self.actor_ref.tell(Poll())

    def stopped(self) -> None:
        if self._timer is not None:
            scheduler.cancel(self._timer)

    def handle(self, message: Any) -> Any:
        if isinstance(message, Poll):
            self._load()
            self._schedule()
            return None
        if isinstance(message, Reload):
            return self._load()
        return None

    def _load(self) -> bool:
        try:
            return bool(self.load())
        except Exception as error:
            # A bug in loading must not cost the app its flags: keep what is there.
            self.log.exception("flag_load_failed", error=repr(error))
            return False
        finally:
            self.state.first_load.set()

    def _schedule(self) -> None:
        if self.poll_interval is None:
            return
        ref = self.actor_ref

        def tick() -> None:
            try:
                ref.tell(Poll())
            except pykka.ActorDeadError:
                pass  # this incarnation is gone; its successor polls on its own timer

        self._timer = scheduler.call_later(self.poll_interval, tick)
