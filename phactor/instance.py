"""`Instance`: one named phactor runtime — its state, lifecycle, context and public methods.

The public methods run on the caller's thread. They build the event (pure `events` module),
append its bytes to the `EventBuffer` and return; the actors do the rest. Nothing here raises
into the app except TypeError/ValueError for wrong arguments at the call.

Parts live in their own modules: the supervision tree in `tree.py`, the flags part in
`flags/methods.py` (`InstanceFlags`), the error-tracking wiring in `errortracking/methods.py`,
`debug=True` output in `_debug.py`, the registry of instances in `registry.py`.
Over 500 lines on purpose: `Instance` carries every public function as a method with its full
signature and docstring (shared/API.md), about 440 lines of them, beside the capture path,
which stays here so `capture()` is one method call deep.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Iterable, Mapping
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from phactor import events as ev
from phactor import registry, tree
from phactor._args import described, timeout_arg
from phactor._debug import disable_debug_output, enable_debug_output
from phactor._guard import inside_phactor
from phactor._log import get_logger
from phactor.batcher import ENVELOPE_BYTES, FlushNow, Wake
from phactor.buffer import EventBuffer, busy, reentered
from phactor.config import Config
from phactor.context import EMPTY, ContextState, ContextStore
from phactor.encoding import EventTooLarge, encode, encoded_pairs
from phactor.errortracking import methods as error_tracking
from phactor.errortracking.methods import _capture_exception
from phactor.flags.methods import InstanceFlags, feature_flag_result, flags_and_payloads
from phactor.health import DeliveryHealth
from phactor.runtime import lib_properties
from phactor.sender import Delivery, delivering_for
from phactor.spooled import SpooledBuffer
from phactor.supervisor import Crash, Registry, Supervisor

if TYPE_CHECKING:
    from phactor.aio import AsyncInstance
    from phactor.errortracking.handler import Intake
    from phactor.flags.evaluations import FlagEvaluations
    from phactor.flags.results import FeatureFlagResult

__all__ = ["Instance"]

# How far stop() may run past its deadline waiting for children (a Sender mid-request).
_STOP_GRACE = 0.2


class Instance:
    """A running (or stopped) named phactor instance. Get one from `phactor.start()`."""

    def __init__(self, name: str, config: Config):
        self.name = name
        self._config = config
        self._disabled = config.disabled
        self._global = dict(config.global_properties)
        self._lib_props = lib_properties()  # runtime properties: read once (per process)
        self._lib_tail = encoded_pairs(self._lib_props)  # ... and encoded once
        self._lib_keys = frozenset(self._lib_props)
        # Where an event's properties start (lowest precedence): `global_properties`, after
        # `$geoip_disable: True` when the event disables GeoIP (anything else may override it).
        self._base_props = {False: self._global, True: {"$geoip_disable": True, **self._global}}
        # Read on every capture: plain attributes (the config is frozen).
        self._before_send = config.before_send
        self._max_event_bytes = config.max_event_bytes
        self._sync_mode = config.sync_mode
        self._disable_geoip = config.disable_geoip
        self._context = ContextStore(name)
        self._log = get_logger("instance", instance=name)
        self._debug_handler = enable_debug_output(name) if config.debug else None
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
        # The flags part (state made on first use) and the error-tracking part (the Intake, made
        # when the tree starts; `_error_intake_off` serves capture_exception with tracking off).
        self._flags = InstanceFlags(self)
        self._error_intake: Intake | None = None
        self._error_intake_off: Intake | None = None
        self._reset_runtime()
        registry.track(self)

    # --- lifecycle -------------------------------------------------------------------------

    def _reset_runtime(self) -> None:
        self._pid = os.getpid()
        self._registry = Registry()
        self._abort = threading.Event()
        config = self._config
        if config.spool_dir is None or config.disabled:
            self._buffer = EventBuffer(
                config.max_queue_size, config.flush_at, wake=self._wake_batcher
            )
        else:
            self._buffer = SpooledBuffer(
                config.max_queue_size, config.flush_at, wake=self._wake_batcher,
                spool_dir=config.spool_dir, name=self.name, sync=config.spool_sync,
                interval=config.spool_interval, max_bytes=config.spool_max_bytes,
                log=get_logger("spool", instance=self.name),
            )  # fmt: skip
        self._buffer.wake_on_drop = config.on_drop is not None
        self._supervisor: Supervisor | None = None
        self._health = DeliveryHealth(
            watchdog_interval=self._config.watchdog_interval,
            on_drop=self._config.on_drop,
            log=get_logger("delivery", instance=self.name),
        )

    def _start_tree(self) -> None:
        if self._disabled:
            self._state = "running"
            return
        self._buffer.open_storage()
        tree.start(self)
        self._state = "running"
        config = self._config
        self._log.info(
            "started",
            host=config.masked_host(),
            api_key=config.masked_api_key(),
            senders=config.senders,
            test_mode=config.test_mode,
        )

    def _wake_batcher(self) -> None:
        self._registry.tell("batcher", Wake())

    def _give_up(self, reason: str) -> None:
        # Called from the Supervisor's thread once restart intensity is exceeded.
        self._state = "failed"
        dropped = self._buffer.close("stopped")
        self._abort.set()
        self._log.error("instance_stopped", reason=reason, dropped_queued=dropped)
        self._health.report_drops(self._buffer.stats()["dropped"])  # no Batcher runs any more

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
        self._buffer.forget_after_fork()
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
        seconds = timeout_arg(timeout, "stop")
        if timeout is None:
            seconds = self._config.shutdown_timeout
        if reentered():
            # A signal handler that interrupted this thread inside phactor (holding a lock the
            # drain needs): stopping here would wait for ever. Keep running; exit drains it.
            self._log.warning("stop_refused_in_signal_handler")
            return False
        registry.forget(self)
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
                    self._health.report_drops(self._buffer.stats()["dropped"])
                self._buffer.close_storage()
            self._state = "stopped"
            self._disable_debug_output()
            return True
        if self._forked and self._never_restarted():
            # A forked child that never used this instance: nothing was ever queued here, and
            # the flag sessions are the parent's (their pool lock may be a dead thread's).
            error_tracking.stopped(self)
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
            tree.stop(self._supervisor, 0.0 if inside else max(remaining, 0.0) + _STOP_GRACE)
        left_in_flight = self._buffer.abandon_in_flight("shutdown")
        self._buffer.close_storage()
        if left_queued or left_in_flight:
            self._log.warning("shutdown_dropped", queued=left_queued, in_flight=left_in_flight)
        self._state = "stopped"
        final = self.stats()
        self._health.report_drops(final["dropped"])  # what stopping dropped: no Batcher left
        self._log.info("stopped", stats=final)
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
            disable_debug_output(handler)

    def _run_stop_hooks(self) -> None:
        hooks = (
            ("_error_tracking_stopped", lambda: error_tracking.stopped(self)),
            ("_flags_stopped", self._flags.stopped),
        )
        for name, hook in hooks:
            try:
                hook()
            except Exception as error:
                self._log.error("stop_hook_failed", hook=name, error=repr(error))

    @property
    def config(self) -> Config:
        """The frozen configuration."""
        return self._config

    def children(self) -> dict[str, bool]:
        """Each child of the supervision tree and whether it is alive (OTP `which_children`).

        An on-demand child that is not running now (a spare Sender, a LoggerHandler no
        exception has needed yet) is not listed (docs/architecture.md)."""
        if self._forked:
            self._restart_after_fork()
        return tree.which_children(self._supervisor)

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
        if (
            properties is not None
            and type(properties) is not dict  # the common case, without an ABC check
            and not isinstance(properties, Mapping)
        ):
            raise TypeError(f"properties must be a Mapping, got {type(properties).__name__}")
        return self._capture(
            event, distinct_id, properties, self._context.current(), timestamp, uuid, groups,
            send_feature_flags, None, flags, disable_geoip,
        )  # fmt: skip

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
            event, distinct_id, properties, EMPTY, timestamp, uuid, groups, send_feature_flags,
            None, flags=flags, disable_geoip=disable_geoip,
        )  # fmt: skip

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
            "$identify", distinct_id, {"$set": props}, EMPTY, timestamp, uuid, None, False, None,
            personless=False, disable_geoip=disable_geoip,
        )  # fmt: skip

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
            "$set", distinct_id, None, EMPTY, timestamp, uuid, None, False, {"$set": props},
            personless=False, disable_geoip=disable_geoip,
        )  # fmt: skip

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
            "$set_once", distinct_id, None, EMPTY, timestamp, uuid, None, False,
            {"$set_once": props}, personless=False, disable_geoip=disable_geoip,
        )  # fmt: skip

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
            "$create_alias", did, props if did is not None else {"alias": alias_text}, EMPTY,
            timestamp, uuid, None, False, None, keep_distinct_id_prop=True, personless=False,
            disable_geoip=disable_geoip,
        )  # fmt: skip

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
            "$groupidentify", distinct_id, props, EMPTY, timestamp, uuid, None, False, None,
            disable_geoip=disable_geoip,
        )  # fmt: skip

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
        flags: Any = None,
        disable_geoip: bool | None = None,
        *,
        keep_distinct_id_prop: bool = False,
        personless: bool = True,
    ) -> str | None:
        if self._forked:
            self._restart_after_fork()
        # Argument checks first: a TypeError must not leave a counted event behind.
        if timestamp is None and uuid is None:
            event_uuid, ts = ev.stamp()  # one clock reading for both
        else:
            ts = ev.now_iso() if timestamp is None else ev.format_timestamp(timestamp)
            event_uuid = ev.new_uuid() if uuid is None else ev.normalize_uuid(uuid)
        if groups is not None and not isinstance(groups, Mapping):
            raise TypeError(f"groups must be a Mapping, got {type(groups).__name__}")
        if send_feature_flags is not False and send_feature_flags is not True:
            raise TypeError(
                f"send_feature_flags must be a bool, got {described(send_feature_flags)}"
            )
        if disable_geoip is None:
            disable_geoip = self._disable_geoip
        elif disable_geoip is not True and disable_geoip is not False:
            raise TypeError(f"disable_geoip must be a bool or None, got {described(disable_geoip)}")
        # capture(flags=...): a FlagEvaluations snapshot, else TypeError.
        snapshot = None if flags is None else self._flags.snapshot_properties(flags)

        props: dict[str, Any] = self._base_props[disable_geoip].copy()
        if state is not EMPTY and state.flags is not None:
            props.update(state.flags.event_properties())
        if snapshot is not None:
            props.update(snapshot)
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
            props.update(self._flags.event_properties(distinct_id, groups, disable_geoip))

        if (
            self._before_send is None
            and top_level is None
            and props.keys().isdisjoint(self._lib_keys)
        ):  # the constant properties are appended to the encoded event as bytes
            message = ev.wire_event(event, distinct_id, props, ts, event_uuid, groups)
            tail = self._lib_tail
        else:
            message = ev.build_event(
                event, distinct_id, props, ts, event_uuid, groups, top_level, self._lib_props
            )
            tail = b""
        if self._before_send is not None:
            changed = self._run_before_send(message)
            if changed is None:
                return None
            message = changed
            event_uuid = str(message.get("uuid", event_uuid))
        try:
            data = encode(message, self._max_event_bytes, tail)
        except EventTooLarge as too_large:  # shared containers: measured, never written
            self._drop("event_too_large", event, min_size=too_large.size)
            return None
        if len(data) > self._max_event_bytes:
            self._drop("event_too_large", event, size=len(data))
            return None
        if not self._buffer.offer(data):
            self._drop_logged("queue_full" if self._state == "running" else "stopped", event)
            return None
        if self._sync_mode:
            self._send_now()
        return event_uuid

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
                self._sync_delivery = tree.delivery(self)
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

    @property
    def aio(self) -> AsyncInstance:
        """The async view: `await inst.aio.evaluate_flags(...)`, `flush`, `stop` (docs/async.md)."""
        from phactor.aio import AsyncInstance  # lazy: start-up time (asyncio)

        return AsyncInstance(self)

    def stats(self) -> dict[str, Any]:
        """Delivery counters; `captured == sent + sum(dropped) + queued + in_flight` always.

        Also `last_success_at` (seconds since the epoch, None before the first delivery) and
        `last_error` (short text, keys masked; None before the first failure): docs/delivery.md.

        After stop() they stay readable and final, except that later captures still count
        (as dropped `stopped`).
        """
        stats = self._buffer.stats()
        stats.update(self._health.stats())
        stats["flags"] = self._flags.stats()  # definitions age, /flags requests, its breaker
        return stats

    def _error_tracking_drain(self, timeout: float | None = 5.0) -> bool:
        """Block until every exception handed to the LoggerHandler so far is a queued event
        (see `errortracking.methods.drain`)."""
        return error_tracking.drain(self, timeout)

    # --- feature flags (the flags part, phactor/flags/methods.py) --------------------------

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
        evaluated = self._flags.evaluate(
            distinct_id, groups, person_properties, group_properties, flag_keys,
            only_evaluate_locally, device_id, disable_geoip,
        )  # fmt: skip
        return self._flags.evaluations(evaluated, groups)

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
        result = self._flags.flag(
            key, distinct_id, groups, person_properties, group_properties,
            only_evaluate_locally, send_feature_flag_events, device_id, disable_geoip,
        )  # fmt: skip
        return None if result is None else result.value

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
        result = self._flags.flag(
            key, distinct_id, groups, person_properties, group_properties,
            only_evaluate_locally, send_feature_flag_events, device_id, disable_geoip,
        )  # fmt: skip
        return None if result is None else result.value is not False

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
        result = self._flags.flag(
            key, distinct_id, groups, person_properties, group_properties,
            only_evaluate_locally, send_feature_flag_events, device_id, disable_geoip,
        )  # fmt: skip
        return feature_flag_result(result)

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
        return self._flags.payload(
            key, match_value, distinct_id, groups, person_properties, group_properties,
            only_evaluate_locally, device_id, disable_geoip,
        )  # fmt: skip

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
        results, _, _, _, _ = self._flags.evaluate(
            distinct_id, groups, person_properties, group_properties, flag_keys,
            only_evaluate_locally, device_id, disable_geoip,
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
        """`{"featureFlags": key -> value, "featureFlagPayloads": key -> payload}`, as posthog
        (payloads: the raw JSON text of the enabled flags that have one). No event."""
        results, _, _, _, _ = self._flags.evaluate(
            distinct_id, groups, person_properties, group_properties, flag_keys,
            only_evaluate_locally, device_id, disable_geoip,
        )  # fmt: skip
        return flags_and_payloads(results)

    def reload_feature_flags(self, timeout: float | None = None) -> bool:
        """Load the flag definitions now and block until they are loaded or the load failed.

        Returns True when current definitions (or test-mode flags) are in place. Without a
        FlagEvaluator (no `personal_api_key`, no test flags) there is nothing to load: False.
        `timeout` defaults to a few `request_timeout`s (`math.inf`: no deadline); on timeout the
        load goes on in the background and this returns False. A timeout that is not a number
        raises TypeError, nan or a negative one ValueError.
        """
        return self._flags.reload(timeout)

    # --- error tracking (phactor/errortracking/methods.py) ---------------------------------

    def capture_exception(
        self,
        exc: BaseException | None = None,
        distinct_id: Any = None,
        properties: Mapping[str, Any] | None = None,
    ) -> str | None:
        """Send `exc` (None: the exception being handled) as an `$exception` event.

        Returns the event uuid once queued; None when there is no exception to capture, when this
        instance already captured this exception object (logging handler, hook), or when the
        event was dropped (reason counted in `stats()["dropped"]`). An exception that was never
        raised gets the caller's stack, marked synthetic. Works with error tracking off too.
        """
        return _capture_exception(self, exc, distinct_id, properties, skip=1)

    def __repr__(self) -> str:
        return f"<phactor.Instance {self.name!r} {self._state}>"


def _check_mapping(value: Any, name: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise TypeError(f"{name} must be a Mapping, got {type(value).__name__}")
    return dict(value)
