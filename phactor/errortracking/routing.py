"""Where a logged or uncaught exception goes: one root handler and one pair of hooks per process.

However many instances track errors, the root logger has one `RoutingHandler` and
`sys.excepthook` / `threading.excepthook` have one capture hook each. They hand each record or
uncaught exception to ONE instance's Intake (never to every instance):

- a record whose logger is claimed (the `error_tracking_loggers` option: a logger name and its
  children) goes to the instance that claimed it (the longest claimed prefix wins; when two
  instances claim the same name, the first started keeps it and a warning is logged at start);
- everything else (and the except hooks) goes to the receiver: the "default" instance if it
  tracks errors, else the first started that does and claims no loggers (else the first
  started). When the receiver stops, the next one in that order takes over.

`log.error()` therefore costs one handler call and a dict lookup whatever the instance count.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from types import TracebackType
from typing import Any

from phactor._log import get_logger
from phactor.errortracking.hooks import ChainedHook

__all__ = ["RoutingHandler", "receiver", "register", "registered", "route", "unregister"]

_log = get_logger("error_tracking")


_lock = threading.Lock()
_intakes: list[Any] = []  # registered Intakes, in start order
_claims: dict[str, Any] = {}  # claimed logger name -> Intake
_routes: dict[str, Any] = {}  # logger name -> Intake (None: nobody), rebuilt on change
_receiver: Any = None


def _pick_receiver() -> Any:
    for intake in _intakes:
        if intake.name == "default":
            return intake
    for intake in _intakes:
        if not intake.claims:
            return intake
    return _intakes[0] if _intakes else None


def receiver() -> Any:
    """The Intake that receives unclaimed records and uncaught exceptions (None: none runs)."""
    return _receiver


def route(logger_name: str | None) -> Any:
    """The Intake a record of `logger_name` goes to (None when no instance tracks errors)."""
    routes = _routes
    try:
        return routes[logger_name]  # type: ignore[index]
    except (KeyError, TypeError):
        pass
    target = _receiver
    if _claims and isinstance(logger_name, str):
        name = logger_name
        while True:
            claimed = _claims.get(name)
            if claimed is not None:
                target = claimed
                break
            cut = name.rfind(".")
            if cut < 0:
                break
            name = name[:cut]
    if isinstance(logger_name, str) and len(routes) < 10_000:
        routes[logger_name] = target
    return target


def register(intake: Any) -> None:
    """Add `intake` to the routing (once); the first one installs the handler and hooks."""
    global _receiver, _routes
    with _lock:
        if intake in _intakes:
            return
        first = not _intakes
        _intakes.append(intake)
        for name in intake.claims:
            owner = _claims.setdefault(name, intake)
            if owner is not intake:
                _log.warning(
                    "error_tracking_loggers_conflict",
                    logger=name,
                    receives=owner.name,
                    ignored=intake.name,
                )
        _receiver = _pick_receiver()
        _routes = {}
        _HANDLER.setLevel(min(i.level for i in _intakes))
        if first:
            _install()


def unregister(intake: Any) -> None:
    """Remove `intake`; its claims and its receiving pass on; the last one out uninstalls."""
    global _receiver, _routes
    with _lock:
        if intake not in _intakes:
            return
        _intakes.remove(intake)
        for name, owner in list(_claims.items()):
            if owner is intake:
                del _claims[name]
                for other in _intakes:  # a later claimant of the same name takes it
                    if name in other.claims:
                        _claims[name] = other
                        break
        _receiver = _pick_receiver()
        _routes = {}
        if _intakes:
            _HANDLER.setLevel(min(i.level for i in _intakes))
        else:
            _uninstall()


def registered(intake: Any) -> bool:
    """True while `intake` takes part in the routing."""
    return intake in _intakes


class RoutingHandler(logging.Handler):
    """The root logger's one error-tracking handler: passes each record to its instance's."""

    def handle(self, record: logging.LogRecord) -> bool:  # type: ignore[override]
        self.emit(record)
        return True

    def emit(self, record: logging.LogRecord) -> None:
        try:
            intake = route(record.name)
            if intake is not None and record.levelno >= intake.level:
                intake.handler.handle(record)
        except Exception:
            pass  # logging must never fail because of us


_HANDLER = RoutingHandler(logging.ERROR)
_sys_hook: Any = None
_thread_hook: Any = None


def _capture_sys(
    exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None
) -> None:
    intake = _receiver
    if intake is not None:
        intake.hooks.sys_excepthook(exc_type, exc, tb)


def _capture_thread(args: Any) -> None:
    intake = _receiver
    if intake is not None:
        intake.hooks.threading_excepthook(args)


def _install() -> None:
    global _sys_hook, _thread_hook
    logging.getLogger().addHandler(_HANDLER)
    _sys_hook = ChainedHook(_capture_sys, sys.excepthook)
    sys.excepthook = _sys_hook
    _thread_hook = ChainedHook(_capture_thread, threading.excepthook)
    threading.excepthook = _thread_hook


def _uninstall() -> None:
    global _sys_hook, _thread_hook
    logging.getLogger().removeHandler(_HANDLER)
    hooks: list[tuple[Any, str, Any]] = [(sys, "excepthook", _sys_hook)]
    hooks.append((threading, "excepthook", _thread_hook))
    for module, attr, hook in hooks:
        if hook is None:
            continue
        hook.closed = True
        if getattr(module, attr) is hook:
            setattr(module, attr, hook.resolve_previous())
    _sys_hook = _thread_hook = None


def _new_lock_after_fork() -> None:
    global _lock
    _lock = threading.Lock()  # another thread may have held it at fork time


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_lock_after_fork)
