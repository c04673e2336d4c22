"""`Instance`: one named phactor runtime — its supervision tree, buffer, context and API.

The public methods run on the caller's thread. They build the event (pure `events` module),
append its bytes to the `EventBuffer` and return; the actors do the rest. Nothing here raises
into the app except TypeError/ValueError for wrong arguments at the call.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import threading
import time
import weakref
from collections.abc import Mapping
from contextlib import AbstractContextManager
from typing import Any, cast

import pykka

from phactor import events as ev
from phactor._args import described, timeout_arg
from phactor._guard import inside_phactor
from phactor._log import PHACTOR_LOGGER, get_logger
from phactor._sigmask import signals_blocked
from phactor.batcher import ENVELOPE_BYTES, Batcher, FlushNow, Reclaim, Wake
from phactor.buffer import EventBuffer, busy, reentered
from phactor.config import Config
from phactor.context import EMPTY, ContextState, ContextStore
from phactor.errortracking.methods import ErrorTrackingMethods
from phactor.flags.methods import FlagMethods
from phactor.sender import Delivery, Sender, SenderIdle, delivering_for
from phactor.supervisor import (
    ChildSpec,
    Crash,
    Registry,
    StartChild,
    Supervisor,
    WhichChildren,
    shutdown_message,
)
from phactor.transport import HttpTransport, MemoryTransport, Transport

__all__ = ["Instance"]

# How far stop() may run past its deadline waiting for children (a Sender mid-request).
_STOP_GRACE = 0.2


class Instance(FlagMethods, ErrorTrackingMethods):
    """A running (or stopped) named phactor instance. Get one from `phactor.start()`."""

    def __init__(self, name: str, config: Config):
        self.name = name
        self._config = config
        self._disabled = config.disabled
        self._global = dict(config.global_properties)
        from phactor.runtime import lib_properties  # platform, os-release: read once, here

        self._lib_props = lib_properties()
        self._context = ContextStore(name)
        self._log = get_logger("instance", instance=name)
        self._debug_handler = _enable_debug_output(name) if config.debug else None
        self._forked = False
        # Serialises the lazy restart of a forked child's tree (two threads' first calls).
        self._fork_lock = threading.Lock()
        self._state = "stopped"
        # One stop() at a time: a second caller must not report "stopped" mid-drain.
        self._stop_lock = threading.Lock()
        self._test_events: list[dict[str, Any]] = []
        self._test_lock = threading.Lock()
        # Reentrant: `on_error` runs inside a sync_mode delivery and may capture again.
        self._sync_lock = threading.RLock()
        self._sync_delivery: Delivery | None = None
        self._drop_log_at: dict[str, int] = {}
        self._sender_names = [f"sender-{i}" for i in range(config.senders)]
        self._reset_runtime()
        _INSTANCES.add(self)

    # --- lifecycle -------------------------------------------------------------------------

    def _reset_runtime(self) -> None:
        self._pid = os.getpid()
        self._registry = Registry()
        self._abort = threading.Event()
        self._buffer = EventBuffer(
            self._config.max_queue_size, self._config.flush_at, wake=self._wake_batcher
        )
        self._supervisor: pykka.ActorRef[Any] | None = None

    def _start_tree(self) -> None:
        if self._disabled:
            self._state = "running"
            return
        config = self._config
        if not config.test_mode:
            _import_http_stack()
        # The Supervisor's thread starts (and restarts) every child: all inherit its mask.
        with signals_blocked():
            self._supervisor = Supervisor.start(
                self.name,
                self._registry,
                max_restarts=config.max_restarts,
                max_seconds=config.max_seconds,
                on_restart=self._child_restarted,
                on_give_up=self._give_up,
            )
        specs = [self._sender_spec(n) for n in self._sender_names]
        specs.append(self._batcher_spec())
        specs.extend(self._flag_children())
        specs.extend(self._error_tracking_children())
        proxy = self._supervisor
        for spec in specs:
            proxy.ask(StartChild(spec), timeout=10.0)
        self._state = "running"
        self._log.info(
            "started",
            host=config.masked_host(),
            api_key=config.masked_api_key(),
            senders=config.senders,
            test_mode=config.test_mode,
        )

    def _transport(self) -> Transport:
        config = self._config
        if config.test_mode:
            return MemoryTransport(self._test_events, self._test_lock)
        return HttpTransport(
            config.host, timeout=config.request_timeout, gzip=config.gzip, verify=config.verify
        )

    def _delivery(self) -> Delivery:
        return Delivery(
            self._config,
            self._transport(),
            self._buffer,
            self._abort,
            get_logger("sender", instance=self.name),
        )

    def _sender_spec(self, name: str) -> ChildSpec:
        def start(generation: int) -> pykka.ActorRef[Any]:
            assert self._supervisor is not None
            return Sender.start(
                name,
                generation,
                self._supervisor,
                delivery_factory=self._delivery,
                buffer=self._buffer,
                notify_idle=self._sender_idle,
            )

        return ChildSpec(name, start)

    def _batcher_spec(self) -> ChildSpec:
        config = self._config

        def start(generation: int) -> pykka.ActorRef[Any]:
            assert self._supervisor is not None
            return Batcher.start(
                "batcher",
                generation,
                self._supervisor,
                buffer=self._buffer,
                registry=self._registry,
                sender_names=self._sender_names,
                flush_at=config.flush_at,
                flush_interval=config.flush_interval,
                max_batch_bytes=config.max_batch_bytes,
            )

        return ChildSpec("batcher", start)

    def _wake_batcher(self) -> None:
        self._registry.tell("batcher", Wake())

    def _sender_idle(self, name: str) -> None:
        self._registry.tell("batcher", SenderIdle(name))

    def _child_restarted(self, name: str) -> None:
        self._buffer.count_restart()
        if name in self._sender_names or name == "batcher":
            self._registry.tell("batcher", Reclaim())

    def _give_up(self, reason: str) -> None:
        # Called from the Supervisor's thread once restart intensity is exceeded.
        self._state = "failed"
        dropped = self._buffer.close("stopped")
        self._abort.set()
        self._log.error("instance_stopped", reason=reason, dropped_queued=dropped)

    def _after_fork_in_child(self) -> None:
        """Give a forked child its own, consistent state (runs inside os.fork(): cheap, no IO).

        Every lock a parent thread may have held at fork time is new, and the runtime (buffer,
        registry, abort flag) is new and empty: the parent still owns, and sends, what it had
        queued, so no entry point of the child (stats, queue_length, flush...) ever reports it.
        The tree's threads did not come along; the first call that needs them starts a new
        tree (`_restart_after_fork`). Also runs for subprocess's preexec_fn: no threads here.
        """
        self._fork_lock = threading.Lock()
        self._stop_lock = threading.Lock()
        self._sync_lock = threading.RLock()
        self._sync_delivery = None
        self._test_lock = threading.Lock()
        self._test_events = []
        self._drop_log_at = {}
        self._reset_runtime()
        if self._state == "running" and not self._disabled:
            self._forked = True
            return
        self._forked = False
        if self._state == "stopping":
            self._state = "stopped"  # the parent's stop() goes on there, not here
        if not self._disabled:
            # Stopped or given up before the fork: nothing will ever send from this buffer.
            self._buffer.close("stopped")

    def _restart_after_fork(self) -> None:
        """Start the forked child's tree, once, on the first call that needs it."""
        with self._fork_lock:
            if not self._forked:
                return  # another thread of the child did it meanwhile
            self._forked = False
            if self._state == "running":
                self._start_tree()
                self._log.info("restarted_after_fork", pid=self._pid)

    def stop(self, timeout: float | None = None) -> bool:
        """Flush (within `timeout`, default `shutdown_timeout`), then stop the tree.

        Returns True when everything queued was delivered or dropped with a reason before the
        deadline; what was left is counted `shutdown` and logged with the number. `timeout`
        `math.inf` sets no deadline: the drain ends when the queue is delivered or its retries
        ran out. A timeout that is not a number raises TypeError, nan or a negative one
        ValueError, before anything happens (the instance keeps running).
        """
        from phactor import api  # the module registry of instances

        seconds = timeout_arg(timeout, "stop")
        if timeout is None:
            seconds = self._config.shutdown_timeout
        if reentered():
            # A signal handler that interrupted this thread inside phactor (holding a lock the
            # drain needs): stopping here would wait for ever. Keep running; exit drains it.
            self._log.warning("stop_refused_in_signal_handler")
            return False
        api._forget(self)
        timeout = math.inf if seconds is None else seconds
        # Called from on_error, i.e. from inside a delivery of this instance: that delivery
        # cannot finish while we wait for it, so never wait for it (nor for another stop()).
        inside = delivering_for(self._buffer)
        wait: float = 0 if inside else (-1 if seconds is None else timeout + 3 * _STOP_GRACE)
        if not self._stop_lock.acquire(timeout=wait):
            return False  # another stop() is still draining this instance
        try:
            return self._stop(timeout, inside)
        finally:
            self._stop_lock.release()

    def _stop(self, timeout: float, inside: bool) -> bool:
        if self._state != "running" or self._disabled:
            if self._state == "failed":
                self._run_stop_hooks()
                # Batches a dead child held when the tree gave up will never settle.
                left = self._buffer.abandon_in_flight("stopped")
                if left:
                    self._log.warning("stop_dropped", in_flight=left)
            self._state = "stopped"
            self._disable_debug_output()
            return True
        if self._forked and self._never_restarted():
            # A forked child that never used this instance: nothing was ever queued here, and
            # the flag sessions are the parent's (their pool lock may be a dead thread's).
            self._error_tracking_stopped()
            self._buffer.close("shutdown")
            self._state = "stopped"
            self._disable_debug_output()
            return True
        deadline = time.monotonic() + timeout
        self._state = "stopping"
        self._run_stop_hooks()
        ok = self.flush(max(deadline - time.monotonic(), 0.0))
        # From here on: no new events, no more waiting in backoff (the breaker is shut too).
        left_queued = self._buffer.close("shutdown")
        self._abort.set()
        if self._supervisor is not None:
            # A Sender blocked in a request cannot be interrupted: wait only a short grace for
            # it, then count what it holds as `shutdown` (its late settle is ignored).
            # No deadline (inf): the drain is over, a Sender mid-request gets its request time.
            remaining = deadline - time.monotonic() if timeout != math.inf else self._request_time()
            grace = 0.0 if inside else max(remaining, 0.0) + _STOP_GRACE
            try:
                self._supervisor.tell(shutdown_message(grace))
                self._supervisor.stop(block=True, timeout=grace + _STOP_GRACE)
            except (pykka.ActorDeadError, pykka.Timeout):
                pass
        left_in_flight = self._buffer.abandon_in_flight("shutdown")
        if left_queued or left_in_flight:
            self._log.warning("shutdown_dropped", queued=left_queued, in_flight=left_in_flight)
        self._state = "stopped"
        self._log.info("stopped", stats=self.stats())
        self._disable_debug_output()
        return ok and not left_queued and not left_in_flight

    def _request_time(self) -> float:
        return max(self._config.request_timeout, self._config.flags_request_timeout)

    def _never_restarted(self) -> bool:
        with self._fork_lock:
            if not self._forked:
                return False
            self._forked = False
            return True

    def _disable_debug_output(self) -> None:
        handler, self._debug_handler = self._debug_handler, None
        if handler is not None:
            _disable_debug_output(handler)

    def _run_stop_hooks(self) -> None:
        for hook in (self._error_tracking_stopped, self._flags_stopped):
            try:
                hook()
            except Exception as error:
                self._log.error("stop_hook_failed", hook=hook.__name__, error=repr(error))

    @property
    def config(self) -> Config:
        """The frozen configuration."""
        return self._config

    def children(self) -> dict[str, bool]:
        """Each child of the supervision tree and whether it is alive (OTP `which_children`)."""
        if self._forked:
            self._restart_after_fork()
        if self._supervisor is None or not self._supervisor.is_alive():
            return {}
        try:
            answer = self._supervisor.ask(WhichChildren(), timeout=5.0)
        except (pykka.ActorDeadError, pykka.Timeout):
            return {}
        return dict(cast("dict[str, bool]", answer))

    @property
    def running(self) -> bool:
        """True while the tree is up and accepting events."""
        return self._state == "running"

    def _crash_child(self, name: str) -> None:
        """Test hook: make child `name` raise in its own thread (the real failure path)."""
        self._registry.tell(name, Crash())

    # --- events ----------------------------------------------------------------------------

    def capture(
        self,
        event: str,
        distinct_id: Any = None,
        properties: Mapping[str, Any] | None = None,
        *,
        timestamp: Any = None,
        uuid: Any = None,
        groups: Mapping[str, Any] | None = None,
        send_feature_flags: bool = False,
        flags: Any = None,
        disable_geoip: bool | None = None,
    ) -> str | None:
        """Queue an event; returns its uuid, or None when it was dropped (reason counted).

        `flags` (a `FlagEvaluations`) adds its `$feature/<key>` and `$active_feature_flags`
        without a new request (and wins over `send_feature_flags`); `disable_geoip` overrides
        the option for this event. No distinct_id anywhere: a personless event.
        """
        if self._disabled:
            return None
        if type(event) is not str or not event:
            raise TypeError(f"event must be a non-empty str, got {described(event)}")
        if properties is not None and not isinstance(properties, Mapping):
            raise TypeError(f"properties must be a Mapping, got {type(properties).__name__}")
        return self._capture(
            event,
            distinct_id,
            properties,
            self._context.current(),
            timestamp,
            uuid,
            groups,
            send_feature_flags,
            None,
            flags=flags,
            disable_geoip=disable_geoip,
        )

    def bare_capture(
        self,
        event: str,
        distinct_id: Any,
        properties: Mapping[str, Any] | None = None,
        *,
        timestamp: Any = None,
        uuid: Any = None,
        groups: Mapping[str, Any] | None = None,
        send_feature_flags: bool = False,
        flags: Any = None,
        disable_geoip: bool | None = None,
    ) -> str | None:
        """Like `capture`, ignoring context (and `global_properties` still applies)."""
        if self._disabled:
            return None
        if type(event) is not str or not event:
            raise TypeError(f"event must be a non-empty str, got {described(event)}")
        if properties is not None and not isinstance(properties, Mapping):
            raise TypeError(f"properties must be a Mapping, got {type(properties).__name__}")
        return self._capture(
            event,
            distinct_id,
            properties,
            EMPTY,
            timestamp,
            uuid,
            groups,
            send_feature_flags,
            None,
            flags=flags,
            disable_geoip=disable_geoip,
        )

    def identify(
        self,
        distinct_id: Any,
        properties: Mapping[str, Any] | None = None,
        *,
        timestamp: Any = None,
        uuid: Any = None,
        disable_geoip: bool | None = None,
    ) -> str | None:
        """Send `$identify` with `properties` as the person's `$set`."""
        if self._disabled:
            return None
        props = _check_mapping(properties, "properties")
        return self._capture(
            "$identify",
            distinct_id,
            {"$set": props},
            EMPTY,
            timestamp,
            uuid,
            None,
            False,
            None,
            personless=False,
            disable_geoip=disable_geoip,
        )

    def set(
        self,
        distinct_id: Any,
        properties: Mapping[str, Any],
        *,
        timestamp: Any = None,
        uuid: Any = None,
        disable_geoip: bool | None = None,
    ) -> str | None:
        """Send a `$set` event setting person properties."""
        if self._disabled:
            return None
        props = _check_mapping(properties, "properties")
        return self._capture(
            "$set",
            distinct_id,
            None,
            EMPTY,
            timestamp,
            uuid,
            None,
            False,
            {"$set": props},
            personless=False,
            disable_geoip=disable_geoip,
        )

    def set_once(
        self,
        distinct_id: Any,
        properties: Mapping[str, Any],
        *,
        timestamp: Any = None,
        uuid: Any = None,
        disable_geoip: bool | None = None,
    ) -> str | None:
        """Send a `$set_once` event setting person properties only where unset."""
        if self._disabled:
            return None
        props = _check_mapping(properties, "properties")
        return self._capture(
            "$set_once",
            distinct_id,
            None,
            EMPTY,
            timestamp,
            uuid,
            None,
            False,
            {"$set_once": props},
            personless=False,
            disable_geoip=disable_geoip,
        )

    def alias(
        self,
        distinct_id: Any,
        alias: Any,
        *,
        timestamp: Any = None,
        uuid: Any = None,
        disable_geoip: bool | None = None,
    ) -> str | None:
        """Send `$create_alias`: `alias` becomes another id of the person `distinct_id`."""
        if self._disabled:
            return None
        alias_text = ev.distinct_id_text(alias, "alias")
        if alias_text is None:
            raise TypeError(f"alias must be a non-empty str, got {described(alias)}")
        did = ev.distinct_id_text(distinct_id)
        props = {"distinct_id": did, "alias": alias_text}
        return self._capture(
            "$create_alias",
            did,
            props if did is not None else {"alias": alias_text},
            EMPTY,
            timestamp,
            uuid,
            None,
            False,
            None,
            keep_distinct_id_prop=True,
            personless=False,
            disable_geoip=disable_geoip,
        )

    def group_identify(
        self,
        group_type: str,
        group_key: Any,
        properties: Mapping[str, Any] | None = None,
        distinct_id: Any = None,
        *,
        timestamp: Any = None,
        uuid: Any = None,
        disable_geoip: bool | None = None,
    ) -> str | None:
        """Send `$groupidentify` setting the properties of group (`group_type`, `group_key`)."""
        if self._disabled:
            return None
        if not isinstance(group_type, str) or not group_type:
            raise TypeError(f"group_type must be a non-empty str, got {described(group_type)}")
        key_text = ev.distinct_id_text(group_key, "group_key")
        if key_text is None:
            raise TypeError(f"group_key must be a non-empty str, got {described(group_key)}")
        props = {
            "$group_type": group_type,
            "$group_key": key_text,
            "$group_set": _check_mapping(properties, "properties"),
        }
        if ev.distinct_id_text(distinct_id) is None:
            # As the posthog package does: group updates are not a person's action.
            distinct_id = f"${group_type}_{key_text}"
        return self._capture(
            "$groupidentify",
            distinct_id,
            props,
            EMPTY,
            timestamp,
            uuid,
            None,
            False,
            None,
            disable_geoip=disable_geoip,
        )

    def _capture(
        self,
        event: str,
        distinct_id: Any,
        properties: Mapping[str, Any] | None,
        state: ContextState,
        timestamp: Any,
        uuid: Any,
        groups: Any,
        send_feature_flags: bool,
        top_level: Mapping[str, Any] | None,
        *,
        keep_distinct_id_prop: bool = False,
        personless: bool = True,
        flags: Any = None,
        disable_geoip: bool | None = None,
    ) -> str | None:
        if self._forked:
            self._restart_after_fork()
        # Argument checks first: a TypeError must not leave a counted event behind.
        ts = ev.now_iso() if timestamp is None else ev.format_timestamp(timestamp)
        event_uuid = ev.new_uuid() if uuid is None else ev.normalize_uuid(uuid)
        if groups is not None and not isinstance(groups, Mapping):
            raise TypeError(f"groups must be a Mapping, got {type(groups).__name__}")
        if send_feature_flags is not False and send_feature_flags is not True:
            raise TypeError(f"send_feature_flags must be a bool, got {described(send_feature_flags)}")
        if disable_geoip is None:
            disable_geoip = self._config.disable_geoip
        elif disable_geoip is not True and disable_geoip is not False:
            raise TypeError(f"disable_geoip must be a bool or None, got {described(disable_geoip)}")
        if flags is not None:
            flags = _flag_snapshot(flags)

        props: dict[str, Any] = dict(self._global) if self._global else {}
        if state is not EMPTY and state.flags is not None:
            props.update(state.flags.event_properties())
        if flags is not None:
            props.update(flags.event_properties())
            send_feature_flags = False  # the snapshot wins, as in the posthog package
        if state is not EMPTY:
            props.update(state.properties)
            scoped = state.event_properties.get(event)
            if scoped:
                props.update(scoped)
        if properties:
            props.update(properties)
        # argument > properties["distinct_id"] > context; str/int/UUID, else TypeError.
        did = distinct_id if type(distinct_id) is str and distinct_id else None
        if did is None:
            did = ev.distinct_id_text(distinct_id)
        if did is None:
            did = ev.distinct_id_text(props.get("distinct_id"))
        if not keep_distinct_id_prop:
            props.pop("distinct_id", None)
        if did is None:
            if not personless:
                self._drop("missing_distinct_id", event)
                return None
            # As the posthog package: a personless event (a fresh id, no person profile).
            did = ev.new_uuid4()
            props.setdefault("$process_person_profile", False)
        distinct_id = did
        if send_feature_flags:
            props.update(self._feature_flag_properties(distinct_id, groups, disable_geoip))

        message = ev.build_event(
            event,
            distinct_id,
            props,
            timestamp=ts,
            uuid=event_uuid,
            groups=groups,
            top_level=top_level,
            lib_properties=self._lib_props,
        )
        if disable_geoip and "$geoip_disable" not in props:
            props["$geoip_disable"] = True
        if self._config.before_send is not None:
            changed = self._run_before_send(message)
            if changed is None:
                return None
            message = changed
        data = ev.encode(message, self._config.max_event_bytes)
        if len(data) > self._config.max_event_bytes:
            self._drop("event_too_large", event, size=len(data))
            return None
        if not self._buffer.offer(data):
            self._drop_logged("queue_full" if self._state == "running" else "stopped", event)
            return None
        if self._config.sync_mode:
            self._send_now()
        return str(message.get("uuid", event_uuid))

    def _run_before_send(self, message: dict[str, Any]) -> dict[str, Any] | None:
        """The event as the hook left it, or None when dropped (counted and logged here)."""
        hook = self._config.before_send
        assert hook is not None
        # The hook works on its own copy (properties, $set, ... included).
        draft = {k: dict(v) if isinstance(v, dict) else v for k, v in message.items()}
        try:
            # Whatever the hook logs is the hook's business, not an app error to capture.
            with inside_phactor():
                result = hook(draft)
        except Exception as error:
            # The hook is where personal data is removed: a half-scrubbed or unscrubbed event
            # must not be sent. Dropped and counted; the log names the error, never the event.
            self._drop("before_send_error", message["event"], error=repr(error))
            return None
        if result is None:
            self._drop("before_send", message["event"])
            return None
        # One bad event would make the server refuse its whole batch: drop just this one.
        try:
            return ev.checked_event(result, message)
        except ValueError as error:
            problem = str(error)
        except Exception as error:  # a Mapping whose items() raises
            problem = f"result cannot be read: {type(error).__name__}"
        self._drop("before_send_invalid", message["event"], problem=problem)
        return None

    def _drop(self, reason: str, event: str, **details: Any) -> None:
        self._buffer.drop_at_capture(reason)
        self._drop_logged(reason, event, **details)

    def _drop_logged(self, reason: str, event: str, **details: Any) -> None:
        if self._drop_log_due(reason):
            self._log_drop(reason, event, **details)

    def _drop_log_due(self, reason: str) -> bool:
        # Log the 1st, 2nd, 4th, 8th, ... and every 1000th drop of each reason: visible, never
        # a flood.
        n = self._drop_log_at.get(reason, 0) + 1
        self._drop_log_at[reason] = n
        return n & (n - 1) == 0 or n % 1000 == 0

    def _log_drop(self, reason: str, event: str, **details: Any) -> None:
        # `event` is structlog's own positional (the log message): name ours `event_name`.
        count = self._drop_log_at.get(reason, 0)
        self._log.warning("event_dropped", reason=reason, event_name=event, count=count, **details)

    def _send_now(self) -> None:
        # sync_mode: deliver on the caller's thread, one request per capture.
        if reentered():
            return  # from a signal handler inside phactor: it goes with the next flush
        with self._sync_lock:
            if self._sync_delivery is None:
                self._sync_delivery = self._delivery()
            holder = f"sync-{threading.get_ident()}"
            budget = max(self._config.max_batch_bytes - ENVELOPE_BYTES, 1)
            batch = self._buffer.take(holder, self._config.flush_at, budget)
            if batch is None:
                return
            # The send (and the requests/urllib3 logging and on_error it may trigger) runs on
            # the app's thread here: nothing it logs is an app error to capture.
            with inside_phactor():
                outcome = self._sync_delivery.deliver(batch)
            self._buffer.settle(
                holder, sent=outcome.sent, dropped=outcome.dropped, requeue=outcome.requeue or ()
            )

    # --- context ---------------------------------------------------------------------------

    def set_context(self, props: Any) -> None:
        """Merge `props` into this thread's (or task's) context for this instance."""
        self._context.set(props)

    def get_context(self) -> dict[str, Any]:
        """This thread's (or task's) context for this instance."""
        return self._context.get()

    def set_event_context(self, event: str, props: Mapping[str, Any]) -> None:
        """Merge `props` into the context applied only to events named `event`."""
        self._context.set_event(event, props)

    def get_event_context(self, event: str) -> dict[str, Any]:
        """The context applied only to events named `event`."""
        return self._context.get_event(event)

    def context(self, props: Any, event: str | None = None) -> AbstractContextManager[None]:
        """`with inst.context({...}):` — context for the block, restored on exit."""
        return self._context.scoped(props, event)

    # --- delivery --------------------------------------------------------------------------

    def flush(self, timeout: float | None = None) -> bool:
        """Block until what was queued before this call is delivered or dropped (counted).

        Returns False when `timeout` seconds pass first (never blocks past it), or as soon as
        a batch of those events ran out of retries and went back to the queue (the endpoint
        is failing; they are retried later). See docs/delivery.md. Called from `on_error`
        (inside a delivery, which cannot end while it waits) it only starts a flush and
        returns False at once. `timeout` None or `math.inf`: no deadline; not a number:
        TypeError; nan or negative: ValueError.
        """
        timeout = timeout_arg(timeout, "flush")
        if self._disabled or self._state not in ("running", "stopping"):
            return True
        if reentered():
            # A signal handler that interrupted this thread inside phactor: waiting could wait
            # for the interrupted frame. What it captured goes with the next batch.
            return False
        if self._forked:
            self._restart_after_fork()
        if delivering_for(self._buffer):
            self._registry.tell("batcher", FlushNow())
            return False
        deadline = None if timeout is None else time.monotonic() + timeout
        # Exceptions logged before this call may still be snapshots in the LoggerHandler's
        # mailbox: turn them into queued events first, so this flush covers them. Not drained
        # (a stuck LoggerHandler): those exceptions are neither sent nor counted, so not done.
        drained = self._error_tracking_drain(timeout)
        if deadline is not None:
            timeout = max(0.0, deadline - time.monotonic())
        target = self._buffer.high_water()
        if self._config.sync_mode:
            self._send_now()
        with busy():  # the Batcher's mailbox lock: a signal handler must not wait for it
            self._registry.tell("batcher", FlushNow())
        return self._buffer.wait_through(target, timeout) and drained

    def queue_length(self) -> int:
        """Events accepted but not yet handed to a Sender."""
        return self._buffer.queue_length()

    def stats(self) -> dict[str, Any]:
        """Delivery counters; `captured == sent + sum(dropped) + queued + in_flight` always.

        After stop() they stay readable and final, except that later captures still count
        (as dropped `stopped`).
        """
        return self._buffer.stats()

    def __repr__(self) -> str:
        return f"<phactor.Instance {self.name!r} {self._state}>"


# Every Instance, running or not (a stopped one may still be read): a forked child resets each.
_INSTANCES: weakref.WeakSet[Instance] = weakref.WeakSet()

_debug_lock = threading.Lock()
_debug_handlers: list[logging.Handler] = []
_level_before_debug = logging.NOTSET


def _enable_debug_output(name: str) -> logging.Handler:
    """`debug=True`: print this instance's phactor records (every area) to stderr.

    Each area logs to its own `phactor.<area>` logger with the instance name bound, so the
    handler sits on the `phactor` logger and keeps only the records of this instance.
    """
    global _level_before_debug
    marker = f"instance={name!r}"
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s phactor %(levelname)s %(message)s"))
    handler.addFilter(lambda record: marker in record.getMessage())
    logger = logging.getLogger(PHACTOR_LOGGER)
    with _debug_lock:
        if not _debug_handlers:
            _level_before_debug = logger.level
        _debug_handlers.append(handler)
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)
    return handler


def _disable_debug_output(handler: logging.Handler) -> None:
    logger = logging.getLogger(PHACTOR_LOGGER)
    with _debug_lock:
        logger.removeHandler(handler)
        if handler in _debug_handlers:
            _debug_handlers.remove(handler)
        if not _debug_handlers:
            logger.setLevel(_level_before_debug)


def _import_http_stack() -> None:
    """Import here, on the starting thread, what a Sender's first request would import.

    A fork while one of our threads is inside an import leaves the child that module's import
    lock held by a thread that does not exist there: the child's first request would hang on
    it for good. (requests imports netrc on every request, the first time for real.)
    """
    import netrc  # noqa: F401
    import shlex  # noqa: F401

    import requests  # noqa: F401


def _flag_snapshot(value: Any) -> Any:
    """`capture(flags=...)`: a `FlagEvaluations`, else TypeError (the flag core loads lazily)."""
    from phactor.flags.evaluations import FlagEvaluations

    if not isinstance(value, FlagEvaluations):
        raise TypeError(f"flags must be a FlagEvaluations, got {type(value).__name__}")
    return value


def _check_mapping(value: Any, name: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise TypeError(f"{name} must be a Mapping, got {type(value).__name__}")
    return dict(value)


def _after_fork_in_child() -> None:
    """os.fork() hook (in the child): new module locks, then each instance's own reset."""
    global _debug_lock
    _debug_lock = threading.Lock()
    for inst in list(_INSTANCES):
        inst._after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
