"""The guards of error tracking's capture sources: recursion and de-duplication.

They run on the app's threads, before any work is done, so each is a few attribute reads:

- recursion: records from `phactor*` loggers, and every record emitted on one of phactor's own
  threads (its actors, which are pykka threads, and the `phactor-*` threads such as the scheduler)
  are never captured — that covers pykka, requests and urllib3 logging while phactor sends, and
  user callbacks (`on_error`, `before_send`) running inside phactor. A thread-local flag
  (`phactor._guard`) also marks code running inside phactor on an app thread;
- de-duplication: an exception object captured once by an instance is marked, so the same object
  reaching the logging handler and then an except hook (or structlog, then stdlib logging) is
  sent once.
"""

from __future__ import annotations

import threading

from phactor._guard import flags as thread_flags
from phactor._guard import inside_phactor
from phactor.supervisor import SupervisedActor, SupervisorHost

__all__ = [
    "already_captured",
    "guarded",
    "inside_phactor",
    "is_guarded_logger",
    "mark_captured",
    "on_phactor_thread",
    "thread_flags",
]

_MARK = "__phactor_captured__"

_local = thread_flags  # the per-thread flags, shared with phactor._guard


def _is_phactor_thread(thread: threading.Thread) -> bool:
    name = thread.name
    if isinstance(name, str) and name.startswith("phactor-"):
        return True
    # pykka runs each actor's loop as the thread's target: the bound method names its actor.
    owner = getattr(getattr(thread, "_target", None), "__self__", None)
    return isinstance(owner, SupervisedActor | SupervisorHost)


def on_phactor_thread() -> bool:
    """True on one of phactor's own threads (an actor of any instance, the scheduler, ...)."""
    value = _local.phactor_thread
    if value is None:
        value = _local.phactor_thread = _is_phactor_thread(threading.current_thread())
    return value


def is_guarded_logger(name: object) -> bool:
    """True for phactor's own loggers, whose records are never captured."""
    return isinstance(name, str) and (name == "phactor" or name.startswith("phactor."))


def guarded(logger_name: object) -> bool:
    """True when a record of `logger_name` (None: an except hook) must not be captured here."""
    return is_guarded_logger(logger_name) or _local.inside or on_phactor_thread()


# The mark lives in the exception's instance dict, reached through BaseException's own
# descriptor: no attribute lookup through the exception's class (each new class would miss the
# type cache, on the logging thread), and no custom __getattr__/__setattr__ runs.
_exception_dict = BaseException.__dict__["__dict__"].__get__


def already_captured(exc: BaseException, instance_name: str) -> bool:
    """Whether instance `instance_name` already captured this exception object."""
    try:
        return instance_name in _exception_dict(exc).get(_MARK, ())
    except Exception:
        return False


def mark_captured(exc: BaseException, instance_name: str, *, anywhere: bool = False) -> bool:
    """Mark `exc` as captured by `instance_name`; False when it already was (skip it then).

    With `anywhere` (the implicit sources: logging, the except hooks, structlog, asyncio), a
    capture by any instance counts: the first source to capture an exception object wins, and a
    logged exception goes to one project (routing.py). An explicit `capture_exception` (the
    framework integrations given several instances) checks its own instance only.
    """
    try:
        attrs = _exception_dict(exc)
        marks: tuple[str, ...] = attrs.get(_MARK, ())
        if marks and (anywhere or instance_name in marks):
            return False
        # A new tuple each time: two threads marking at once never corrupt a shared object. A
        # tuple, not a set: there are a handful of instances, and this runs on the logging thread.
        attrs[_MARK] = (*marks, instance_name)
    except Exception:
        pass  # not an exception object after all: captured, just not de-duplicated
    return True
