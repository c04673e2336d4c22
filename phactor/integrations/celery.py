"""Celery: the caller's phactor context travels with each task, failing tasks become
`$exception` events, and worker processes flush before they exit.

    import phactor
    from phactor.integrations.celery import PhactorCelery

    phactor.start(api_key="phc_...")          # in the module that builds the Celery app
    PhactorCelery(instance="default").instrument()

- **Context propagation**: when a task is published, the publisher's context of each chosen
  instance (`get_context()`: distinct_id, properties; JSON-safe values) goes into the message's
  headers; the worker restores it around the task in one `context()` scope per instance, with
  `celery_task_name`, `celery_task_id` and `celery_retry_count` added, and ends the scope when
  the task ends (`task_postrun`), so nothing leaks to the next task of the worker process.
- **Failures**: an exception that fails a task (`task_failure`) is captured once per instance
  with that context (task name, id and retries included); the `celery.app.trace` log record of
  the same exception is not sent again. `Retry`, `Ignore`, `Reject` and the exceptions a task
  declares in `throws=` are not failures to track.
- **Shutdown**: every worker process that ran a task (prefork child, `--max-tasks-per-child`
  recycle included) and the process that called `instrument()` (the main process, on a warm
  shutdown) flush the instances before they exit; a prefork child leaves with `os._exit`, which
  skips atexit, so without this its last events were lost.
- **Lifecycle events** (off by default): `celery task started`, `celery task succeeded`,
  `celery task failed`, with the task properties and `celery_duration_ms` on the last two.

Each hook is guarded: a phactor problem is logged and never fails a task or a publish.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Mapping
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

import orjson

from phactor import api
from phactor._log import get_logger
from phactor.errors import ConfigError
from phactor.integrations._scope import instance_names

if TYPE_CHECKING:
    from phactor.instance import Instance

__all__ = ["HEADER", "PhactorCelery", "instrument"]

#: The message header that carries the publisher's context: {instance name: properties}.
HEADER = "phactor_context"
_STATE = "_phactor_state"

_log = get_logger("integrations")


class PhactorCelery:
    """Celery signal handlers for the chosen instance(s); `instrument()` connects them."""

    def __init__(
        self,
        instance: str | Iterable[str] = "default",
        *,
        propagate_context: bool = True,
        capture_exceptions: bool = True,
        lifecycle_events: bool = False,
        flush_on_shutdown: bool = True,
    ):
        self.names = instance_names(instance)
        for option, value in (
            ("propagate_context", propagate_context),
            ("capture_exceptions", capture_exceptions),
            ("lifecycle_events", lifecycle_events),
            ("flush_on_shutdown", flush_on_shutdown),
        ):
            if not isinstance(value, bool):
                raise ConfigError(option, "True or False", value)
        self.propagate_context = propagate_context
        self.capture_exceptions = capture_exceptions
        self.lifecycle_events = lifecycle_events
        self.flush_on_shutdown = flush_on_shutdown
        self._connected = False
        # The processes where this integration saw work: only they have anything to flush. A
        # prefork child that never ran a task must not build a new tree on its way out.
        self._active_pids: set[int] = set()

    # -- setup ------------------------------------------------------------------------------

    def _signals(self) -> list[tuple[Any, Any]]:
        from celery import signals

        return [
            (signals.before_task_publish, self._on_publish),
            (signals.task_prerun, self._on_prerun),
            (signals.task_success, self._on_success),
            (signals.task_failure, self._on_failure),
            (signals.worker_process_shutdown, self._on_shutdown),
            (signals.worker_shutdown, self._on_shutdown),
        ]

    def instrument(self) -> PhactorCelery:
        """Connect the signal handlers (idempotent); returns self."""
        if not self._connected:
            from celery import signals

            # One process-wide receiver ends every task's scope, and stays connected: a task
            # that started while an integration was connected ends its scope even if the
            # integration is disconnected meanwhile.
            signals.task_postrun.connect(_end_task_scope, weak=False)
            for signal, handler in self._signals():
                signal.connect(handler, weak=False)
            self._connected = True
            self._active_pids.add(os.getpid())
        return self

    def uninstrument(self) -> None:
        """Disconnect the signal handlers."""
        if self._connected:
            for signal, handler in self._signals():
                signal.disconnect(handler)
            self._connected = False

    def _instances(self) -> list[Instance]:
        running = api.instances()
        return [api.instance(name) for name in self.names if name in running]

    # -- publisher --------------------------------------------------------------------------

    def _on_publish(self, sender: Any = None, headers: Any = None, **_: Any) -> None:
        if not self.propagate_context or not isinstance(headers, dict):
            return
        try:
            carried = {}
            for inst in self._instances():
                context = inst.get_context()
                if context:
                    carried[inst.name] = _json_safe(context)
            if carried:
                headers[HEADER] = carried
                # Protocol 2: custom headers reach task.request reliably only when nested here.
                nested = headers.setdefault("headers", {})
                if isinstance(nested, dict):
                    nested[HEADER] = carried
        except Exception as error:
            _log.warning("celery_publish_context_failed", error=repr(error))

    # -- worker -----------------------------------------------------------------------------

    def _on_prerun(self, sender: Any = None, task_id: Any = None, task: Any = None, **_: Any) -> None:
        task = task or sender
        request = getattr(task, "request", None)
        if request is None:
            return
        entered: list[AbstractContextManager[None]] = []
        self._active_pids.add(os.getpid())
        try:
            carried = _carried(request)
            base = _task_properties(task, request, task_id)
            instances = self._instances()
            for inst in instances:
                own = carried.get(inst.name)
                props = {**own, **base} if isinstance(own, Mapping) else dict(base)
                scope = inst.context(props)
                scope.__enter__()
                entered.append(scope)
            states = getattr(request, _STATE, None)
            if not isinstance(states, dict):
                states = {}
                setattr(request, _STATE, states)
            states[id(self)] = (entered, instances, time.monotonic())
            if self.lifecycle_events:
                self._lifecycle(instances, "celery task started", base)
        except Exception as error:
            _log.warning("celery_task_context_failed", error=repr(error))
            _exit_all(entered)

    def _on_success(self, sender: Any = None, **_: Any) -> None:
        if self.lifecycle_events:
            self._finished(sender, "celery task succeeded")

    def _on_failure(
        self, sender: Any = None, task_id: Any = None, exception: Any = None, **_: Any
    ) -> None:
        try:
            state = self._state(getattr(sender, "request", None))
            instances = state[1] if state else self._instances()
            if (
                self.capture_exceptions
                and isinstance(exception, Exception)
                and not isinstance(exception, tuple(getattr(sender, "throws", ()) or ()))
            ):
                for inst in instances:
                    inst.capture_exception(exception)
        except Exception as error:
            _log.warning("celery_capture_failed", error=repr(error))
        if self.lifecycle_events:
            self._finished(sender, "celery task failed")

    def _on_shutdown(self, **_: Any) -> None:
        if not self.flush_on_shutdown or os.getpid() not in self._active_pids:
            return
        for inst in self._instances():
            try:
                inst.flush(inst.config.shutdown_timeout)
            except Exception as error:
                _log.warning("celery_shutdown_flush_failed", instance=inst.name, error=repr(error))

    def _finished(self, task: Any, event: str) -> None:
        try:
            request = getattr(task, "request", None)
            state = self._state(request)
            if state is None:
                return
            props = _task_properties(task, request, getattr(request, "id", None))
            props["celery_duration_ms"] = round((time.monotonic() - state[2]) * 1000, 3)
            self._lifecycle(state[1], event, props)
        except Exception as error:
            _log.warning("celery_lifecycle_failed", error=repr(error))

    def _state(self, request: Any) -> tuple[Any, list[Instance], float] | None:
        states = getattr(request, _STATE, None)
        return states.get(id(self)) if isinstance(states, dict) else None

    @staticmethod
    def _lifecycle(instances: list[Instance], event: str, props: dict[str, Any]) -> None:
        for inst in instances:
            inst.capture(event, properties=props)


def instrument(instance: str | Iterable[str] = "default", **options: Any) -> PhactorCelery:
    """`PhactorCelery(instance, **options).instrument()`."""
    return PhactorCelery(instance, **options).instrument()


def _task_properties(task: Any, request: Any, task_id: Any) -> dict[str, Any]:
    return {
        "celery_task_name": str(getattr(task, "name", None)),
        "celery_task_id": None if task_id is None else str(task_id),
        "celery_retry_count": getattr(request, "retries", 0) or 0,
    }


def _carried(request: Any) -> Mapping[str, Any]:
    carried = getattr(request, HEADER, None)
    if not isinstance(carried, Mapping):
        headers = getattr(request, "headers", None)
        carried = headers.get(HEADER) if isinstance(headers, Mapping) else None
    return carried if isinstance(carried, Mapping) else {}


def _json_safe(context: Mapping[str, Any]) -> dict[str, Any]:
    # What the message serializer can carry: anything else becomes its str().
    return dict(orjson.loads(orjson.dumps(context, default=str, option=orjson.OPT_NON_STR_KEYS)))


def _end_task_scope(sender: Any = None, task: Any = None, **_: Any) -> None:
    """`task_postrun`: end the scopes a task's `task_prerun` entered (on the same thread)."""
    request = getattr(task or sender, "request", None)
    states = getattr(request, _STATE, None)
    if not isinstance(states, dict):
        return
    try:
        delattr(request, _STATE)
    except Exception:
        pass
    for entered, _, _ in reversed(list(states.values())):
        _exit_all(entered)


def _exit_all(entered: list[AbstractContextManager[None]]) -> None:
    for scope in reversed(entered):
        try:
            scope.__exit__(None, None, None)
        except Exception as error:  # pragma: no cover - token from another context
            _log.warning("celery_context_exit_failed", error=repr(error))
