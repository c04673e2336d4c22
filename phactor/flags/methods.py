"""The feature-flag part of an `Instance`: its flag state, its FlagEvaluator child, evaluation.

`Instance` owns one `InstanceFlags` (`inst._flags`); its public flag methods (the signatures and
docstrings; the module-level twins with `instance=` are `phactor.api`'s) run the few methods of
the last section here, which take their arguments as they come and check them.

Evaluation runs on the caller's thread: it reads the current immutable `Definitions` snapshot
from the instance's `FlagState` and evaluates with the pure core; only what local evaluation
cannot decide goes to the server, in at most one `/flags` request per call. The FlagEvaluator
actor (child "flags") only keeps the snapshot fresh; no call here waits on it except
`reload_feature_flags()`, which exists to wait.

The FlagEvaluator is started when it has something to load: flag definitions (a
`personal_api_key` is set, and `enable_local_evaluation`) or test-mode flag values
(`test_mode=True` with `flags=`). Without either there is nothing to poll, so there is no child
and every evaluation is remote.

Over 500 lines on purpose: one class, the flag state and evaluation shared by every flag call.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import pykka

from phactor._args import timeout_arg
from phactor._log import get_logger
from phactor.buffer import CircuitBreaker
from phactor.context import EMPTY
from phactor.flags.arguments import (
    checked_call,
    checked_extras,
    checked_flag_keys,
    checked_flag_read,
    checked_match_value,
)
from phactor.retry import Verdict, backoff_delay, classify
from phactor.supervisor import ChildSpec

if TYPE_CHECKING:
    from phactor.flags.cache import LastKnownValues
    from phactor.flags.evaluations import FlagEvaluations, decode_payload
    from phactor.flags.evaluator import (
        FlagCalledCache,
        FlagCalledReporter,
        FlagEvaluator,
        FlagState,
        Reload,
        load_definitions,
        load_static_flags,
    )
    from phactor.flags.http import FlagsHttp
    from phactor.flags.matching import FlagResult, evaluate
    from phactor.flags.remote import RemoteFlags, build_flags_request
    from phactor.flags.results import FeatureFlagResult, payload_for_value
    from phactor.instance import Instance

__all__ = ["InstanceFlags", "feature_flag_result", "flags_and_payloads"]

_state_lock = threading.Lock()
_core_loaded = False


def _new_state_lock_after_fork() -> None:
    global _state_lock
    _state_lock = threading.Lock()  # another thread may have held it at fork time


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_state_lock_after_fork)


def _load_core() -> None:
    """Import the flag core into this module on first use.

    This module is imported with `Instance`, so with `import phactor`; the matching engine, the
    actor and the HTTP client load only when an instance first touches flags (one bool check
    per call after that).
    """
    global _core_loaded, FlagEvaluations, decode_payload, FlagCalledCache, FlagCalledReporter
    global FlagEvaluator, FlagState, Reload, load_definitions, load_static_flags, FlagsHttp
    global FlagResult, evaluate, RemoteFlags, build_flags_request
    global FeatureFlagResult, payload_for_value, LastKnownValues
    if _core_loaded:
        return
    from phactor.flags.cache import LastKnownValues  # lazy: start-up time

    # lazy: start-up time (the flag core loads when an instance first touches flags)
    from phactor.flags.evaluations import FlagEvaluations, decode_payload
    from phactor.flags.evaluator import (  # lazy: start-up time
        FlagCalledCache,
        FlagCalledReporter,
        FlagEvaluator,
        FlagState,
        Reload,
        load_definitions,
        load_static_flags,
    )
    from phactor.flags.http import FlagsHttp  # lazy: start-up time
    from phactor.flags.matching import FlagResult, evaluate  # lazy: start-up time
    from phactor.flags.remote import RemoteFlags, build_flags_request  # lazy: start-up time
    from phactor.flags.results import (  # lazy: start-up time
        FeatureFlagResult,
        payload_for_value,
    )

    _core_loaded = True


#: Failed `/flags` calls in a row that open the breaker (one failure can be a blip).
BREAKER_THRESHOLD = 2
#: The shortest cool-down of an open `/flags` breaker, in seconds.
MIN_COOL_DOWN = 1.0
# `RemoteFlags.error` -> the HTTP status the retry policy classifies (None: no answer at all).
_NO_ANSWER = frozenset({"timeout", "connection_error", "request_error"})
#: The most flag keys `strict_local=True` remembers as already logged.
_STRICT_LOGGED_MAX = 10_000


def _status_of(error: str | None) -> int | None:
    """The status behind a `/flags` outcome, for `retry.classify` (200: the server answered)."""
    if error in _NO_ANSWER:
        return None
    if error is None or not error.startswith("api_error_"):
        return 200  # answered (malformed, quota limited) or never sent (invalid_request)
    try:
        return int(error[len("api_error_") :])
    except ValueError:
        return None


_Evaluated = tuple["dict[str, FlagResult]", "dict[str, str]", "str | None", str, Any]


class InstanceFlags:
    """The flags of one instance: state (definitions snapshot, HTTP client, `$feature_flag_called`
    dedup) created on first use, the FlagEvaluator child spec, and the flag methods."""

    def __init__(self, owner: Instance):
        self._owner = owner
        self._flag_state: FlagState | None = None

    # --- wiring ----------------------------------------------------------------------------

    def _get_state(self) -> FlagState:
        state = self._flag_state
        if state is not None:
            return state
        _load_core()
        with _state_lock:
            if self._flag_state is None:
                self._flag_state = self._new_flag_state()
            return self._flag_state

    def _new_flag_state(self) -> FlagState:
        config = self._owner._config
        log = get_logger("flags", instance=self._owner.name)
        http = None
        if not config.test_mode:  # test mode never touches the network
            http = FlagsHttp(
                config.host,
                api_key=config.api_key,
                personal_api_key=config.personal_api_key,
                flags_timeout=config.flags_request_timeout,
                definitions_timeout=config.request_timeout,
                verify=config.verify,
                log=log,
            )
        state = FlagState(http, FlagCalledCache(config.feature_flag_called_cache_size), log)
        state.reporter = FlagCalledReporter(state.called, self._send_flag_called)
        # Same policy object as delivery's (phactor.buffer), its own state: an outage of /flags
        # is not one of /batch.
        state.breaker = CircuitBreaker()
        state.cache = LastKnownValues(config.flags_cache_size, config.flags_cache_ttl)
        self._counts_lock = threading.Lock()
        self._strict_logged: set[str] = set()
        return state

    def stats(self) -> dict[str, Any]:
        """`stats()["flags"]`: definitions age, remote request counts, the /flags breaker."""
        state = self._flag_state
        if state is None:
            return {
                "definitions_loaded_at": None,
                "definitions_etag_age_s": None,
                "remote_requests": 0,
                "remote_failures": 0,
                "breaker": "closed",
            }
        confirmed = state.definitions_confirmed
        return {
            "definitions_loaded_at": state.definitions_loaded_at,
            "definitions_etag_age_s": None
            if confirmed is None
            else round(time.monotonic() - confirmed, 3),
            "remote_requests": state.remote_requests,
            "remote_failures": state.remote_failures,
            "breaker": "open" if state.breaker.failures >= BREAKER_THRESHOLD else "closed",
        }

    def children(self) -> list[ChildSpec]:
        """Child specs this part adds to the instance's tree: the FlagEvaluator, when useful."""
        config = self._owner._config
        polls = bool(config.personal_api_key and config.enable_local_evaluation)
        if not polls and not (config.test_mode and config.flags is not None):
            # No FlagEvaluator: the flag core stays unloaded until a flag call (start-up time).
            if config.flags is not None:
                get_logger("flags", instance=self._owner.name).warning(
                    "flags_ignored", detail="the flags option only applies with test_mode=True"
                )
            state = self._flag_state
            if state is not None and state.pid != os.getpid():
                state.reset_after_fork()
            return []
        state = self._get_state()
        if state.pid != os.getpid():
            state.reset_after_fork()
        config = self._owner._config
        log = state.log
        if config.test_mode:
            source = config.flags
            if source is None:
                return []
            # Loaded now, not in the background: a test reads flags right after start().
            load_static_flags(state, source, log)
            state.first_load.set()
            return [self._flag_evaluator_spec(state, lambda: load_static_flags(state, source, log))]
        if config.flags is not None:
            log.warning("flags_ignored", detail="the flags option only applies with test_mode=True")
        if not config.personal_api_key or not config.enable_local_evaluation:
            return []
        return [
            self._flag_evaluator_spec(
                state, lambda: load_definitions(state, log), poll_interval=config.poll_interval
            )
        ]

    def _flag_evaluator_spec(
        self, state: FlagState, load: Any, poll_interval: float | None = None
    ) -> ChildSpec:
        owner = self._owner

        def start(generation: int) -> pykka.ActorRef[Any]:
            assert owner._supervisor is not None
            return FlagEvaluator.start(
                "flags",
                generation,
                owner._supervisor,
                state=state,
                load=load,
                poll_interval=poll_interval,
                load_at_start=poll_interval is not None,
                log=state.log,
            )

        return ChildSpec("flags", start)

    def stopped(self) -> None:
        """Called once when the instance stops: close the flag HTTP sessions."""
        state = self._flag_state
        if state is not None and state.http is not None:
            state.http.close()

    def _send_flag_called(
        self, distinct_id: str, properties: dict[str, Any], groups: Mapping[str, Any] | None
    ) -> None:
        owner = self._owner
        if owner._state != "running" or owner._disabled:
            return
        owner._capture(
            "$feature_flag_called",
            distinct_id,
            properties,
            EMPTY,
            None,
            None,
            groups or None,
            False,
            None,
        )

    def event_properties(
        self, distinct_id: str, groups: Any, disable_geoip: bool | None = None
    ) -> dict[str, Any]:
        """`$feature/<key>` and `$active_feature_flags` for `capture(..., send_feature_flags=True)`.

        Local only once definitions (or test flags) are there; otherwise one remote request.
        """
        try:
            state = self._get_state()
            local = (
                state.definitions is not None
                or state.static is not None
                or self._owner._config.test_mode
            )
            results, _, _, _, _ = self.evaluate(
                distinct_id, groups, None, None, None, local, None, disable_geoip
            )
        except Exception as error:
            self._get_state().log.error("send_feature_flags_failed", error=repr(error))
            return {}
        return FlagEvaluations(results).event_properties()

    def snapshot_properties(self, flags: Any) -> dict[str, Any]:
        """`capture(flags=...)`: the snapshot's `$feature/<key>` and `$active_feature_flags` (no
        request); TypeError for anything but a `FlagEvaluations`."""
        if not _core_loaded:
            _load_core()
        if not isinstance(flags, FlagEvaluations):
            raise TypeError(f"flags must be a FlagEvaluations, got {type(flags).__name__}")
        return flags.event_properties()

    # --- evaluation ------------------------------------------------------------------------

    def evaluate(
        self,
        distinct_id: Any,
        groups: Any,
        person_properties: Any,
        group_properties: Any,
        flag_keys: Any,
        only_evaluate_locally: Any,
        device_id: Any = None,
        disable_geoip: Any = None,
    ) -> _Evaluated:
        """(results, unresolved, request_id, distinct_id, evaluated_at) — argument checks, local,
        then remote (`request_id`/`evaluated_at`: of the /flags answer, if one was asked).

        Every flag call ends here; `get_all_flags` and `get_all_flags_and_payloads` call it
        directly (results: key -> `FlagResult` of every flag with a value).
        """
        if not _core_loaded:
            _load_core()
        owner = self._owner
        if owner._forked:
            owner._restart_after_fork()
        if distinct_id is None:
            distinct_id = owner._context.current().properties.get("distinct_id")
        if (
            type(distinct_id) is str
            and groups is None
            and person_properties is None
            and group_properties is None
            and type(only_evaluate_locally) is bool
        ):  # the common call: only the keys to check
            did = distinct_id
            keys = None if flag_keys is None else checked_flag_keys(flag_keys)
        else:
            did, keys = checked_call(
                distinct_id,
                groups,
                person_properties,
                group_properties,
                flag_keys,
                only_evaluate_locally,
            )
        if device_id is not None or disable_geoip is not None:
            device_id = checked_extras(device_id, disable_geoip)

        if not did:
            return {}, dict.fromkeys(keys or (), "missing_distinct_id"), None, "", None
        if owner._disabled:
            return {}, dict.fromkeys(keys or (), "disabled"), None, did, None
        state = self._flag_state or self._get_state()
        static = state.static
        if static is not None:
            if keys is None:
                return dict(static), {}, None, did, None
            results = {k: static[k] for k in keys if k in static}
            return results, {k: "flag_missing" for k in keys if k not in static}, None, did, None

        definitions = state.definitions
        if definitions is not None:
            results, unresolved = evaluate(
                definitions,
                did,
                groups=groups,
                person_properties=person_properties,
                group_properties=group_properties,
                flag_keys=keys,
                device_id=device_id,
            )
            if not unresolved or only_evaluate_locally or state.http is None:
                return results, unresolved, None, did, None
            if owner._config.strict_local:
                self._log_strict(state, unresolved)
                return results, unresolved, None, did, None
            ask: list[str] | None = list(unresolved)
        else:
            if only_evaluate_locally or state.http is None or owner._config.strict_local:
                reason = "test_mode" if state.http is None else "definitions_not_loaded"
                unresolved = dict.fromkeys(keys or (), reason)
                if owner._config.strict_local and state.http is not None:
                    self._log_strict(state, unresolved)
                return {}, unresolved, None, did, None
            results, unresolved = {}, {}
            ask = None if keys is None else list(keys)
            if ask == []:
                return {}, {}, None, did, None

        remote = self._remote_flags(
            state, did, groups, person_properties, group_properties, ask, device_id, disable_geoip
        )
        cache = state.cache
        # A group flag's value depends on the groups too: they are part of what is remembered.
        holder = did if not groups else _cache_holder(did, groups)
        if remote.error is None:
            if remote.results:
                cache.store(holder, remote.results.values())
        elif ask is None:  # every flag asked for and no answer: every last known value
            ask = cache.keys_for(holder)
        if ask is None:
            return (
                dict(remote.results),
                dict(remote.unresolved),
                remote.request_id,
                did,
                remote.evaluated_at,
            )
        for key in ask:
            result = remote.results.get(key)
            if result is None and remote.error is not None:
                result = cache.get(holder, key)  # the server could not answer: its last value
            if result is not None:
                results[key] = result
                unresolved.pop(key, None)
            else:
                unresolved[key] = remote.unresolved.get(key) or remote.error or "flag_missing"
        return results, unresolved, remote.request_id, did, remote.evaluated_at

    def _log_strict(self, state: FlagState, unresolved: Mapping[str, str]) -> None:
        """`strict_local=True`: each flag that needed the server is logged once, with why."""
        logged = self._strict_logged
        for key, reason in unresolved.items():
            if key in logged or len(logged) >= _STRICT_LOGGED_MAX:
                continue
            logged.add(key)
            state.log.warning(
                "flag_needs_server",
                flag=key,
                reason=reason,
                effect="strict_local=True: never asked of /flags, reads as None",
            )

    def _remote_flags(
        self,
        state: FlagState,
        distinct_id: str,
        groups: Any,
        person_properties: Any,
        group_properties: Any,
        keys: list[str] | None,
        device_id: str | None = None,
        disable_geoip: bool | None = None,
    ) -> RemoteFlags:
        assert state.http is not None
        config = self._owner._config
        # PostHog adds distinct_id to the person properties (remote as well as local).
        person = {"distinct_id": distinct_id, **(person_properties or {})}
        try:
            body = build_flags_request(
                config.api_key or "",
                distinct_id,
                groups=groups,
                person_properties=person,
                group_properties=group_properties,
                flag_keys=keys,
                geoip_disable=config.disable_geoip if disable_geoip is None else disable_geoip,
                device_id=device_id,
                evaluation_environments=config.evaluation_environments,
            )
        except Exception as error:  # e.g. a group_properties value that is not a mapping
            state.log.error("remote_flags_request_invalid", error=repr(error))
            return RemoteFlags({}, dict.fromkeys(keys or (), "invalid_request"), "invalid_request")
        if keys is not None:
            # An explicit list, even of one key, so the response only holds what we asked for.
            body["flag_keys_to_evaluate"] = keys
        breaker = state.breaker
        holder = f"flags-{threading.get_ident()}"
        if not breaker.try_acquire(holder, BREAKER_THRESHOLD):  # open: fail fast, no request
            return RemoteFlags({}, dict.fromkeys(keys or (), "breaker_open"), "breaker_open")
        try:
            remote = state.http.post_flags(body)
        except BaseException:
            breaker.release(holder)  # no answer either way: the probe slot must not stay taken
            raise
        failed = classify(_status_of(remote.error)) is Verdict.RETRY
        with self._counts_lock:
            state.remote_requests += 1
            state.remote_failures += failed
        if failed:
            # The delivery back-off, half-jittered, at least MIN_COOL_DOWN: then one probe.
            delay = backoff_delay(
                breaker.failures,
                max(config.retry_base_delay, MIN_COOL_DOWN),
                max(config.retry_max_delay, MIN_COOL_DOWN),
                lambda: 0.5 + random.random() / 2,
            )
            opens = breaker.failures + 1 == BREAKER_THRESHOLD
            breaker.failed(holder, delay)
            if opens:
                state.log.warning(
                    "flags_breaker_open",
                    reason=remote.error,
                    cool_down=round(delay, 2),
                    effect="remote flag calls fail fast (last known values answer) until a "
                    "probe succeeds",
                )
        else:
            if breaker.failures >= BREAKER_THRESHOLD:
                state.log.info("flags_breaker_closed")
            breaker.succeeded(holder)
        return remote

    def _report_read(
        self,
        state: FlagState,
        distinct_id: str,
        groups: Any,
        key: str,
        result: FlagResult | None,
        reason: str | None,
        request_id: str | None,
        evaluated_at: Any = None,
    ) -> None:
        reporter = state.reporter
        if reporter is None or not distinct_id:
            return
        try:
            reporter.report(distinct_id, groups, key, result, reason, request_id, evaluated_at)
        except Exception as error:
            state.log.error("feature_flag_called_failed", flag=key, error=repr(error))

    # --- what `Instance`'s flag calls run -------------------------------------------------
    # The signatures, defaults and docstrings are `Instance`'s (and `phactor.api`'s, for IDE
    # help); these (and `evaluate` above) take its arguments positionally, in its order, as the
    # caller gave them: the checks are flags/arguments.py's, run here before anything is
    # evaluated or requested.

    def evaluations(self, evaluated: _Evaluated, groups: Any) -> FlagEvaluations:
        """`evaluate_flags`: what `evaluate` answered (for `groups`) as a `FlagEvaluations`
        snapshot whose reads send `$feature_flag_called`."""
        results, unresolved, request_id, did, evaluated_at = evaluated
        state = self._flag_state or self._get_state()
        reporter = state.reporter
        return FlagEvaluations(
            results,
            unresolved,
            distinct_id=did,
            groups=groups,
            request_id=request_id,
            evaluated_at=evaluated_at,
            on_access=None if reporter is None else reporter.on_access,
        )

    def flag(
        self,
        key: Any,
        distinct_id: Any,
        groups: Any,
        person_properties: Any,
        group_properties: Any,
        only_evaluate_locally: Any,
        send_feature_flag_events: Any,
        device_id: Any,
        disable_geoip: Any,
    ) -> FlagResult | None:
        """`get_feature_flag`, `feature_enabled`, `get_feature_flag_result`: one flag's
        `FlagResult` (None: no value), reported as read when `send_feature_flag_events`."""
        if type(key) is not str or type(send_feature_flag_events) is not bool:
            checked_flag_read(key, send_feature_flag_events)
        results, unresolved, request_id, did, evaluated_at = self.evaluate(
            distinct_id, groups, person_properties, group_properties, (key,),
            only_evaluate_locally, device_id, disable_geoip,
        )  # fmt: skip
        result = results.get(key)
        if send_feature_flag_events and did:
            self._report_read(
                self._flag_state or self._get_state(),
                did,
                groups,
                key,
                result,
                None if result is not None else unresolved.get(key),
                request_id,
                evaluated_at,
            )
        return result

    def payload(
        self,
        key: Any,
        match_value: Any,
        distinct_id: Any,
        groups: Any,
        person_properties: Any,
        group_properties: Any,
        only_evaluate_locally: Any,
        device_id: Any,
        disable_geoip: Any,
    ) -> Any:
        """`get_feature_flag_payload`: the decoded payload (no event); with `match_value`, the
        one the definition holds for that value when the flag was evaluated locally."""
        checked_match_value(match_value)
        result = self.flag(
            key, distinct_id, groups, person_properties, group_properties,
            only_evaluate_locally, False, device_id, disable_geoip,
        )  # fmt: skip
        if result is None:
            return None
        raw = result.payload
        if match_value is not None and result.locally_evaluated:
            state = self._flag_state or self._get_state()
            flag = None if state.definitions is None else state.definitions.flags_by_key.get(key)
            raw = None if flag is None else payload_for_value(flag.payloads, match_value)
        return decode_payload(raw)

    def reload(self, timeout: float | None) -> bool:
        """`reload_feature_flags`: ask the FlagEvaluator to load now and wait for it."""
        given = timeout is not None
        seconds = timeout_arg(timeout, "reload_feature_flags")
        owner = self._owner
        if owner._disabled:
            return False
        if owner._forked:
            owner._restart_after_fork()
        ref = owner._registry.get("flags")
        if ref is None:
            state = self._get_state()
            return state.static is not None
        if not given:
            seconds = 4 * owner._config.request_timeout + 1.0
        try:
            return bool(ref.ask(Reload(), timeout=seconds))  # None: until it is loaded
        except (pykka.ActorDeadError, pykka.Timeout):
            return False


def feature_flag_result(result: FlagResult | None) -> FeatureFlagResult | None:
    """`get_feature_flag_result`'s answer: value, decoded payload and reason (None: no value)."""
    if result is None:
        return None
    return FeatureFlagResult.of(result, decode_payload(result.payload))


def flags_and_payloads(results: Mapping[str, FlagResult]) -> dict[str, dict[str, Any]]:
    """`get_all_flags_and_payloads`' answer, as posthog: values, and the raw JSON payloads of the
    enabled flags that have one."""
    return {
        "featureFlags": {key: result.value for key, result in results.items()},
        "featureFlagPayloads": {
            key: result.payload
            for key, result in results.items()
            if result.value is not False and result.payload is not None
        },
    }


def _cache_holder(distinct_id: str, groups: Mapping[str, Any]) -> str:
    """The last-known-value cache's key for a user within groups (type -> key, in any order)."""
    try:
        parts = sorted(f"{t}={k}" for t, k in groups.items())
    except Exception:  # groups were checked by the caller; never fail a flag call here
        return distinct_id
    return distinct_id + "\x00" + "\x00".join(parts)

