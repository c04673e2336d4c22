"""Feature-flag methods of `Instance` (mixed in), and their module-level twins (`instance=`).

Evaluation runs on the caller's thread: it reads the current immutable `Definitions` snapshot
from the instance's `FlagState` and evaluates with the pure core; only what local evaluation
cannot decide goes to the server, in at most one `/flags` request per call. The FlagEvaluator
actor (child "flags") only keeps the snapshot fresh; no call here waits on it except
`reload_feature_flags()`, which exists to wait.

The FlagEvaluator is started when it has something to load: flag definitions (a
`personal_api_key` is set) or test-mode flag values (`test_mode=True` with `flags=`). Without
either there is nothing to poll, so there is no child and every evaluation is remote.
"""

from __future__ import annotations

import os
import threading
import uuid as uuid_module
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import pykka

from phactor._args import timeout_arg
from phactor._log import get_logger
from phactor.context import EMPTY
from phactor.supervisor import ChildSpec

if TYPE_CHECKING:
    from phactor.config import Config
    from phactor.context import ContextStore
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
    from phactor.flags.result import FeatureFlagResult, check_match_value, payload_for_value
    from phactor.instance import Instance
    from phactor.supervisor import Registry

__all__ = [
    "FlagMethods",
    "evaluate_flags",
    "feature_enabled",
    "get_all_flags",
    "get_all_flags_and_payloads",
    "get_feature_flag",
    "get_feature_flag_payload",
    "get_feature_flag_result",
    "reload_feature_flags",
]

_state_lock = threading.Lock()
_core_loaded = False


def _new_state_lock_after_fork() -> None:
    global _state_lock
    _state_lock = threading.Lock()  # another thread may have held it at fork time


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_state_lock_after_fork)


def _load_core() -> None:
    """Import the flag core into this module on first use.

    This mixin is imported with `Instance`, so with `import phactor`; the matching engine, the
    actor and the HTTP client load only when an instance first touches flags (one bool check
    per call after that).
    """
    global _core_loaded, FlagEvaluations, decode_payload, FlagCalledCache, FlagCalledReporter
    global FlagEvaluator, FlagState, Reload, load_definitions, load_static_flags, FlagsHttp
    global FlagResult, evaluate, RemoteFlags, build_flags_request
    global FeatureFlagResult, check_match_value, payload_for_value
    if _core_loaded:
        return
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
    from phactor.flags.result import FeatureFlagResult, check_match_value, payload_for_value

    _core_loaded = True


_Evaluated = tuple["dict[str, FlagResult]", "dict[str, str]", "str | None", str, Any]


class FlagMethods:
    """Instance methods for feature flags."""

    if TYPE_CHECKING:
        name: str
        _config: Config
        _context: ContextStore
        _registry: Registry
        _supervisor: pykka.ActorRef[Any] | None
        _disabled: bool
        _state: str
        _forked: bool

        def _restart_after_fork(self) -> None: ...
        def _capture(self, *args: Any, **kwargs: Any) -> str | None: ...

    _flag_state: FlagState | None = None

    # --- wiring ----------------------------------------------------------------------------

    def _flags(self) -> FlagState:
        state = self._flag_state
        if state is not None:
            return state
        _load_core()
        with _state_lock:
            if self._flag_state is None:
                self._flag_state = self._new_flag_state()
            return self._flag_state

    def _new_flag_state(self) -> FlagState:
        config = self._config
        log = get_logger("flags", instance=self.name)
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
        return state

    def _flag_children(self) -> list[ChildSpec]:
        """Child specs this layer adds to the instance's tree: the FlagEvaluator, when useful."""
        state = self._flags()
        if state.pid != os.getpid():
            state.reset_after_fork()
        config = self._config
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
        def start(generation: int) -> pykka.ActorRef[Any]:
            assert self._supervisor is not None
            return FlagEvaluator.start(
                "flags",
                generation,
                self._supervisor,
                state=state,
                load=load,
                poll_interval=poll_interval,
                load_at_start=poll_interval is not None,
                log=state.log,
            )

        return ChildSpec("flags", start)

    def _flags_stopped(self) -> None:
        """Called once when the instance stops: close the flag HTTP sessions."""
        state = self._flag_state
        if state is not None and state.http is not None:
            state.http.close()

    def _send_flag_called(
        self, distinct_id: str, properties: dict[str, Any], groups: Mapping[str, Any] | None
    ) -> None:
        if self._state != "running" or self._disabled:
            return
        self._capture(
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

    def _feature_flag_properties(
        self, distinct_id: str, groups: Any, disable_geoip: bool | None = None
    ) -> dict[str, Any]:
        """`$feature/<key>` and `$active_feature_flags` for `capture(..., send_feature_flags=True)`.

        Local only once definitions (or test flags) are there; otherwise one remote request.
        """
        try:
            state = self._flags()
            local = (
                state.definitions is not None or state.static is not None or self._config.test_mode
            )
            results, _, _, _, _ = self._evaluate_flags(
                distinct_id, groups, None, None, None, local, disable_geoip=disable_geoip
            )
        except Exception as error:
            self._flags().log.error("send_feature_flags_failed", error=repr(error))
            return {}
        return FlagEvaluations(results).event_properties()

    # --- evaluation ------------------------------------------------------------------------

    def _evaluate_flags(
        self,
        distinct_id: Any,
        groups: Any,
        person_properties: Any,
        group_properties: Any,
        flag_keys: Any,
        only_evaluate_locally: Any,
        *,
        device_id: Any = None,
        disable_geoip: Any = None,
    ) -> _Evaluated:
        """(results, unresolved, request_id, distinct_id, evaluated_at) — argument checks, local,
        then remote (`request_id`/`evaluated_at`: of the /flags answer, if one was asked)."""
        if not _core_loaded:
            _load_core()
        if self._forked:
            self._restart_after_fork()
        if distinct_id is None:
            distinct_id = self._context.current().properties.get("distinct_id")
        did = _distinct_id(distinct_id)
        if groups is not None:
            if type(groups) is not dict and not isinstance(groups, Mapping):
                raise TypeError(f"groups must be a Mapping, got {type(groups).__name__}")
            for group_type in groups:
                if type(group_type) is not str:
                    raise TypeError(f"group types must be str, got {type(group_type).__name__}")
        if person_properties is not None and (
            type(person_properties) is not dict and not isinstance(person_properties, Mapping)
        ):
            raise TypeError(
                f"person_properties must be a Mapping, got {type(person_properties).__name__}"
            )
        if group_properties is not None and (
            type(group_properties) is not dict and not isinstance(group_properties, Mapping)
        ):
            raise TypeError(
                f"group_properties must be a Mapping, got {type(group_properties).__name__}"
            )
        if group_properties:
            for props in group_properties.values():
                if props is not None and type(props) is not dict and not isinstance(props, Mapping):
                    raise TypeError(
                        "group_properties must map a group type to a Mapping, got "
                        f"{type(props).__name__}"
                    )
        keys = None if flag_keys is None else _flag_keys(flag_keys)
        if type(only_evaluate_locally) is not bool:
            raise TypeError("only_evaluate_locally must be True or False")
        if device_id is not None:
            device_id = _distinct_id(device_id, "device_id") or None
        if disable_geoip is not None and type(disable_geoip) is not bool:
            raise TypeError("disable_geoip must be True, False or None")

        if not did:
            return {}, dict.fromkeys(keys or (), "missing_distinct_id"), None, "", None
        if self._disabled:
            return {}, dict.fromkeys(keys or (), "disabled"), None, did, None
        state = self._flag_state or self._flags()
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
            ask: list[str] | None = list(unresolved)
        else:
            if only_evaluate_locally or state.http is None:
                reason = "test_mode" if state.http is None else "definitions_not_loaded"
                return {}, dict.fromkeys(keys or (), reason), None, did, None
            results, unresolved = {}, {}
            ask = None if keys is None else list(keys)
            if ask == []:
                return {}, {}, None, did, None

        remote = self._remote_flags(
            state, did, groups, person_properties, group_properties, ask, device_id, disable_geoip
        )
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
            if result is not None:
                results[key] = result
                unresolved.pop(key, None)
            else:
                unresolved[key] = remote.unresolved.get(key) or remote.error or "flag_missing"
        return results, unresolved, remote.request_id, did, remote.evaluated_at

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
        config = self._config
        # PostHog adds distinct_id to the person properties (remote as well as local).
        person = {"distinct_id": distinct_id, **(person_properties or {})}
        try:
            body = build_flags_request(
                self._config.api_key or "",
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
        return state.http.post_flags(body)

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

    # --- public API ------------------------------------------------------------------------

    def evaluate_flags(
        self,
        distinct_id: Any = None,
        *,
        groups: Mapping[str, Any] | None = None,
        person_properties: Mapping[str, Any] | None = None,
        group_properties: Mapping[str, Mapping[str, Any]] | None = None,
        flag_keys: Iterable[str] | None = None,
        only_evaluate_locally: bool = False,
        device_id: Any = None,
        disable_geoip: bool | None = None,
    ) -> FlagEvaluations:
        """Evaluate flags for one user into an immutable `FlagEvaluations` snapshot.

        Local first (from the polled definitions), then at most one `/flags` request for what
        local evaluation could not decide, unless `only_evaluate_locally`. `distinct_id`
        defaults to the context's. Server errors never raise: those flags read as None and
        `.unresolved` says why. Wrong argument types raise TypeError.
        """
        results, unresolved, request_id, did, evaluated_at = self._evaluate_flags(
            distinct_id, groups, person_properties, group_properties, flag_keys,
            only_evaluate_locally, device_id=device_id, disable_geoip=disable_geoip,
        )  # fmt: skip
        state = self._flag_state or self._flags()
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

    def get_feature_flag(
        self,
        key: str,
        distinct_id: Any = None,
        *,
        groups: Mapping[str, Any] | None = None,
        person_properties: Mapping[str, Any] | None = None,
        group_properties: Mapping[str, Mapping[str, Any]] | None = None,
        only_evaluate_locally: bool = False,
        send_feature_flag_events: bool = True,
        device_id: Any = None,
        disable_geoip: bool | None = None,
    ) -> bool | str | None:
        """The flag's value for one user: True/False, the variant key, or None when unknown.

        Sends `$feature_flag_called` (deduplicated) unless `send_feature_flag_events=False`.
        """
        result = self._flag_result(
            key, distinct_id, groups, person_properties, group_properties,
            only_evaluate_locally, send_feature_flag_events, device_id, disable_geoip,
        )  # fmt: skip
        return None if result is None else result.value

    def _flag_result(
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
        """One flag's `FlagResult` (None: no value), reported as read when asked to."""
        if type(key) is not str:
            raise TypeError(f"flag key must be a str, not {type(key).__name__}")
        if type(send_feature_flag_events) is not bool:
            raise TypeError("send_feature_flag_events must be True or False")
        results, unresolved, request_id, did, evaluated_at = self._evaluate_flags(
            distinct_id, groups, person_properties, group_properties, (key,),
            only_evaluate_locally, device_id=device_id, disable_geoip=disable_geoip,
        )  # fmt: skip
        result = results.get(key)
        if send_feature_flag_events and did:
            self._report_read(
                self._flag_state or self._flags(),
                did,
                groups,
                key,
                result,
                None if result is not None else unresolved.get(key),
                request_id,
                evaluated_at,
            )
        return result

    def feature_enabled(
        self,
        key: str,
        distinct_id: Any = None,
        *,
        groups: Mapping[str, Any] | None = None,
        person_properties: Mapping[str, Any] | None = None,
        group_properties: Mapping[str, Mapping[str, Any]] | None = None,
        only_evaluate_locally: bool = False,
        send_feature_flag_events: bool = True,
        device_id: Any = None,
        disable_geoip: bool | None = None,
    ) -> bool | None:
        """Whether the flag is on for one user (a variant counts as on); None when unknown.

        Sends `$feature_flag_called` (deduplicated) unless `send_feature_flag_events=False`.
        """
        value = self.get_feature_flag(
            key,
            distinct_id,
            groups=groups,
            person_properties=person_properties,
            group_properties=group_properties,
            only_evaluate_locally=only_evaluate_locally,
            send_feature_flag_events=send_feature_flag_events,
            device_id=device_id,
            disable_geoip=disable_geoip,
        )
        return None if value is None else value is not False

    def get_feature_flag_result(
        self,
        key: str,
        distinct_id: Any = None,
        *,
        groups: Mapping[str, Any] | None = None,
        person_properties: Mapping[str, Any] | None = None,
        group_properties: Mapping[str, Mapping[str, Any]] | None = None,
        only_evaluate_locally: bool = False,
        send_feature_flag_events: bool = True,
        device_id: Any = None,
        disable_geoip: bool | None = None,
    ) -> FeatureFlagResult | None:
        """Value, decoded payload and reason of one flag in one object (None when unknown).

        Sends `$feature_flag_called` once (deduplicated) unless `send_feature_flag_events=False`.
        """
        result = self._flag_result(
            key, distinct_id, groups, person_properties, group_properties,
            only_evaluate_locally, send_feature_flag_events, device_id, disable_geoip,
        )  # fmt: skip
        return None if result is None else FeatureFlagResult.of(result)

    def get_feature_flag_payload(
        self,
        key: str,
        distinct_id: Any = None,
        *,
        match_value: bool | str | None = None,
        groups: Mapping[str, Any] | None = None,
        person_properties: Mapping[str, Any] | None = None,
        group_properties: Mapping[str, Mapping[str, Any]] | None = None,
        only_evaluate_locally: bool = False,
        device_id: Any = None,
        disable_geoip: bool | None = None,
    ) -> Any:
        """The decoded JSON payload of the flag's value for one user, or None. No event.

        `match_value` (a variant key or True/False): the payload the definition holds for that
        value instead of the evaluated one, when the flag was evaluated locally (as posthog).
        """
        check_match_value(match_value)
        result = self._flag_result(
            key, distinct_id, groups, person_properties, group_properties,
            only_evaluate_locally, False, device_id, disable_geoip,
        )  # fmt: skip
        if result is None:
            return None
        raw = result.payload
        if match_value is not None and result.locally_evaluated:
            state = self._flag_state or self._flags()
            flag = None if state.definitions is None else state.definitions.flags_by_key.get(key)
            raw = None if flag is None else payload_for_value(flag.payloads, match_value)
        return decode_payload(raw)

    def get_all_flags(
        self,
        distinct_id: Any = None,
        *,
        groups: Mapping[str, Any] | None = None,
        person_properties: Mapping[str, Any] | None = None,
        group_properties: Mapping[str, Mapping[str, Any]] | None = None,
        flag_keys: Iterable[str] | None = None,
        only_evaluate_locally: bool = False,
        device_id: Any = None,
        disable_geoip: bool | None = None,
    ) -> dict[str, bool | str]:
        """Flag key -> value (False included) for every flag that has a value. No event."""
        results, _, _, _, _ = self._evaluate_flags(
            distinct_id, groups, person_properties, group_properties, flag_keys,
            only_evaluate_locally, device_id=device_id, disable_geoip=disable_geoip,
        )  # fmt: skip
        return {key: result.value for key, result in results.items()}

    def get_all_flags_and_payloads(
        self,
        distinct_id: Any = None,
        *,
        groups: Mapping[str, Any] | None = None,
        person_properties: Mapping[str, Any] | None = None,
        group_properties: Mapping[str, Mapping[str, Any]] | None = None,
        flag_keys: Iterable[str] | None = None,
        only_evaluate_locally: bool = False,
        device_id: Any = None,
        disable_geoip: bool | None = None,
    ) -> dict[str, dict[str, Any]]:
        """`{"featureFlags": key -> value, "featureFlagPayloads": key -> payload}`, as posthog.

        Payloads are the raw JSON text of the enabled flags that have one. No event.
        """
        results, _, _, _, _ = self._evaluate_flags(
            distinct_id, groups, person_properties, group_properties, flag_keys,
            only_evaluate_locally, device_id=device_id, disable_geoip=disable_geoip,
        )  # fmt: skip
        return {
            "featureFlags": {key: result.value for key, result in results.items()},
            "featureFlagPayloads": {
                key: result.payload
                for key, result in results.items()
                if result.value is not False and result.payload is not None
            },
        }

    def reload_feature_flags(self, timeout: float | None = None) -> bool:
        """Load the flag definitions now and block until they are loaded or the load failed.

        Returns True when current definitions (or test-mode flags) are in place. Without a
        FlagEvaluator (no `personal_api_key`, no test flags) there is nothing to load: False.
        `timeout` defaults to a few `request_timeout`s (`math.inf`: no deadline); on timeout the
        load goes on in the background and this returns False. A timeout that is not a number
        raises TypeError, nan or a negative one ValueError.
        """
        given = timeout is not None
        seconds = timeout_arg(timeout, "reload_feature_flags")
        if self._disabled:
            return False
        if self._forked:
            self._restart_after_fork()
        ref = self._registry.get("flags")
        if ref is None:
            state = self._flags()
            return state.static is not None
        if not given:
            seconds = 4 * self._config.request_timeout + 1.0
        try:
            return bool(ref.ask(Reload(), timeout=seconds))  # None: until it is loaded
        except (pykka.ActorDeadError, pykka.Timeout):
            return False


def _distinct_id(value: Any, name: str = "distinct_id") -> str:
    if type(value) is str:
        return value
    if value is None:
        return ""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, uuid_module.UUID):
        return str(value)
    raise TypeError(f"{name} must be a str, int or uuid.UUID, got {type(value).__name__}")


def _flag_keys(flag_keys: Any) -> tuple[str, ...]:
    if type(flag_keys) is tuple and len(flag_keys) == 1 and type(flag_keys[0]) is str:
        return flag_keys  # get_feature_flag's own (key,): the per-call fast path
    if isinstance(flag_keys, str) or not isinstance(flag_keys, Iterable):
        raise TypeError("flag_keys must be an iterable of str (not a str)")
    keys = tuple(flag_keys)
    for key in keys:
        if type(key) is not str:
            raise TypeError(f"flag_keys must hold str keys, got {type(key).__name__}")
    return keys


# --- module-level API (the lead re-exports these from phactor) -----------------------------


def _instance(name: str) -> Instance | None:
    """The running instance; None (one warning per name) when it was never started."""
    # Imported here: phactor.api imports Instance, which imports this module.
    from phactor.api import _instances
    from phactor.unstarted import warn_unstarted

    inst = _instances.get(name)
    if inst is None:
        warn_unstarted(name)
    return inst


def evaluate_flags(
    distinct_id: Any = None,
    *,
    groups: Mapping[str, Any] | None = None,
    person_properties: Mapping[str, Any] | None = None,
    group_properties: Mapping[str, Mapping[str, Any]] | None = None,
    flag_keys: Iterable[str] | None = None,
    only_evaluate_locally: bool = False,
    device_id: Any = None,
    disable_geoip: bool | None = None,
    instance: str = "default",
) -> FlagEvaluations:
    """Evaluate flags through the named instance (see `Instance.evaluate_flags`)."""
    inst = _instance(instance)
    if inst is None:
        return _empty_evaluations()
    return inst.evaluate_flags(
        distinct_id,
        groups=groups,
        person_properties=person_properties,
        group_properties=group_properties,
        flag_keys=flag_keys,
        only_evaluate_locally=only_evaluate_locally,
        device_id=device_id,
        disable_geoip=disable_geoip,
    )


def feature_enabled(
    key: str,
    distinct_id: Any = None,
    *,
    groups: Mapping[str, Any] | None = None,
    person_properties: Mapping[str, Any] | None = None,
    group_properties: Mapping[str, Mapping[str, Any]] | None = None,
    only_evaluate_locally: bool = False,
    send_feature_flag_events: bool = True,
    device_id: Any = None,
    disable_geoip: bool | None = None,
    instance: str = "default",
) -> bool | None:
    """Whether a flag is on, through the named instance (see `Instance.feature_enabled`)."""
    inst = _instance(instance)
    if inst is None:
        return None
    return inst.feature_enabled(
        key,
        distinct_id,
        groups=groups,
        person_properties=person_properties,
        group_properties=group_properties,
        only_evaluate_locally=only_evaluate_locally,
        send_feature_flag_events=send_feature_flag_events,
        device_id=device_id,
        disable_geoip=disable_geoip,
    )


def get_feature_flag(
    key: str,
    distinct_id: Any = None,
    *,
    groups: Mapping[str, Any] | None = None,
    person_properties: Mapping[str, Any] | None = None,
    group_properties: Mapping[str, Mapping[str, Any]] | None = None,
    only_evaluate_locally: bool = False,
    send_feature_flag_events: bool = True,
    device_id: Any = None,
    disable_geoip: bool | None = None,
    instance: str = "default",
) -> bool | str | None:
    """A flag's value, through the named instance (see `Instance.get_feature_flag`)."""
    inst = _instance(instance)
    if inst is None:
        return None
    return inst.get_feature_flag(
        key,
        distinct_id,
        groups=groups,
        person_properties=person_properties,
        group_properties=group_properties,
        only_evaluate_locally=only_evaluate_locally,
        send_feature_flag_events=send_feature_flag_events,
        device_id=device_id,
        disable_geoip=disable_geoip,
    )


def get_feature_flag_result(
    key: str,
    distinct_id: Any = None,
    *,
    groups: Mapping[str, Any] | None = None,
    person_properties: Mapping[str, Any] | None = None,
    group_properties: Mapping[str, Mapping[str, Any]] | None = None,
    only_evaluate_locally: bool = False,
    send_feature_flag_events: bool = True,
    device_id: Any = None,
    disable_geoip: bool | None = None,
    instance: str = "default",
) -> FeatureFlagResult | None:
    """A flag's value, payload and reason, through the named instance."""
    inst = _instance(instance)
    if inst is None:
        return None
    return inst.get_feature_flag_result(
        key,
        distinct_id,
        groups=groups,
        person_properties=person_properties,
        group_properties=group_properties,
        only_evaluate_locally=only_evaluate_locally,
        send_feature_flag_events=send_feature_flag_events,
        device_id=device_id,
        disable_geoip=disable_geoip,
    )


def get_feature_flag_payload(
    key: str,
    distinct_id: Any = None,
    *,
    match_value: bool | str | None = None,
    groups: Mapping[str, Any] | None = None,
    person_properties: Mapping[str, Any] | None = None,
    group_properties: Mapping[str, Mapping[str, Any]] | None = None,
    only_evaluate_locally: bool = False,
    device_id: Any = None,
    disable_geoip: bool | None = None,
    instance: str = "default",
) -> Any:
    """A flag's decoded payload, through the named instance (no event)."""
    inst = _instance(instance)
    if inst is None:
        return None
    return inst.get_feature_flag_payload(
        key,
        distinct_id,
        match_value=match_value,
        groups=groups,
        person_properties=person_properties,
        group_properties=group_properties,
        only_evaluate_locally=only_evaluate_locally,
        device_id=device_id,
        disable_geoip=disable_geoip,
    )


def get_all_flags(
    distinct_id: Any = None,
    *,
    groups: Mapping[str, Any] | None = None,
    person_properties: Mapping[str, Any] | None = None,
    group_properties: Mapping[str, Mapping[str, Any]] | None = None,
    flag_keys: Iterable[str] | None = None,
    only_evaluate_locally: bool = False,
    device_id: Any = None,
    disable_geoip: bool | None = None,
    instance: str = "default",
) -> dict[str, bool | str]:
    """Every flag's value for one user, through the named instance (no event)."""
    inst = _instance(instance)
    if inst is None:
        return {}
    return inst.get_all_flags(
        distinct_id,
        groups=groups,
        person_properties=person_properties,
        group_properties=group_properties,
        flag_keys=flag_keys,
        only_evaluate_locally=only_evaluate_locally,
        device_id=device_id,
        disable_geoip=disable_geoip,
    )


def get_all_flags_and_payloads(
    distinct_id: Any = None,
    *,
    groups: Mapping[str, Any] | None = None,
    person_properties: Mapping[str, Any] | None = None,
    group_properties: Mapping[str, Mapping[str, Any]] | None = None,
    flag_keys: Iterable[str] | None = None,
    only_evaluate_locally: bool = False,
    device_id: Any = None,
    disable_geoip: bool | None = None,
    instance: str = "default",
) -> dict[str, dict[str, Any]]:
    """Every flag's value and payload for one user, through the named instance (no event)."""
    inst = _instance(instance)
    if inst is None:
        return {"featureFlags": {}, "featureFlagPayloads": {}}
    return inst.get_all_flags_and_payloads(
        distinct_id,
        groups=groups,
        person_properties=person_properties,
        group_properties=group_properties,
        flag_keys=flag_keys,
        only_evaluate_locally=only_evaluate_locally,
        device_id=device_id,
        disable_geoip=disable_geoip,
    )


def reload_feature_flags(*, timeout: float | None = None, instance: str = "default") -> bool:
    """Reload the named instance's flag definitions now; blocks until loaded or failed."""
    inst = _instance(instance)
    if inst is None:
        return False
    return inst.reload_feature_flags(timeout)


def _empty_evaluations() -> FlagEvaluations:
    _load_core()
    return FlagEvaluations()
