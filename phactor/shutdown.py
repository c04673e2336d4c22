"""How the process ends: every way out drains the running instances within shutdown_timeout.

- Interpreter exit (normal end, `sys.exit`, an exception in main): `atexit` -> `drain`.
- SIGTERM with the default disposition (a container stop, `kill`, systemd): the default kills
  the process without running atexit, so `start()` (from the main thread) installs
  `_on_sigterm` when the handler is still SIG_DFL and `handle_sigterm` is on. It drains, then
  ends the process as SIGTERM would (SIG_DFL again and the signal re-raised: status -15/143).
  A handler the app (or its server: gunicorn, uvicorn, Celery) installed is never replaced.
- A multiprocessing child started by fork (`Process`, `Pool` workers) ends through
  `os._exit` after multiprocessing's own finalizers: a finalizer registered in the child
  drains it there. `spawn`/`forkserver` children are new interpreters: `start()` there.
- `terminate()` SIGTERMs such a child, often while its main thread waits in C (a Pool worker
  on its task queue's lock, which `terminate()` then keeps for good). A SIGTERM landing just
  before that wait never runs the Python handler, so the child also watches for SIGTERM on a
  thread (`_sigwatch`: the signal wakeup fd) that starts the same drain; the drain thread ends
  the process itself when the main thread does not within `_GRACE`.

`drain` stops the instances in parallel; each `stop()` is bounded by its timeout.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from phactor import _sigwatch
from phactor._log import get_logger
from phactor._sigmask import signals_blocked
from phactor.buffer import reentered

if TYPE_CHECKING:
    from phactor.config import Config
    from phactor.instance import Instance

__all__ = ["after_fork_in_child", "drain", "on_last_stop", "on_start"]

_log = get_logger("shutdown")

# How long past the longest shutdown_timeout the SIGTERM handler waits for the drain.
_GRACE = 2.0
# How long a drain with nothing of its own waits for the stops of a drain already under way.
_DRAIN_WAIT = 10.0

_running: Callable[[], list[Instance]] = list
_registry_busy: Callable[[], bool] = bool


def bind(running: Callable[[], list[Instance]], busy: Callable[[], bool]) -> None:
    """Tell this module how to list the running instances and whether the registry is being
    changed (`phactor.registry` does, at import: it registers the hooks that call in here)."""
    global _running, _registry_busy
    _running = running
    _registry_busy = busy


# The stop threads of every drain so far: a drain started while another is under way (a
# SIGTERM during the atexit or multiprocessing drain) waits for those too, instead of ending
# the process under them.
_stopping: list[threading.Thread] = []


def drain(running: list[Instance] | None = None) -> None:
    """Stop every running instance, in parallel, each within its shutdown_timeout; also wait
    for the stops of a drain already under way."""
    if running is None:
        running = _running()
    deadline = max((i.config.shutdown_timeout for i in running), default=0.0)
    start_time = time.monotonic()
    for inst in running:
        remaining = max(
            0.0, min(inst.config.shutdown_timeout, deadline - (time.monotonic() - start_time))
        )
        t = threading.Thread(
            target=inst.stop, args=(remaining,), daemon=True, name=f"phactor-exit-{inst.name}"
        )
        _stopping.append(t)
        with signals_blocked():
            t.start()
    for t in list(_stopping):
        if t.is_alive():
            t.join(max(deadline, _DRAIN_WAIT) + _GRACE)


# --- SIGTERM ---------------------------------------------------------------------------------

_sigterm_drain: threading.Thread | None = None
_sigterm_done = threading.Event()
# Serialises starting the drain (the handler and the watcher thread); the handler never waits
# for it. `_waiting`: the main thread's handler is waiting for the drain (main thread only).
_sigterm_lock = threading.Lock()
_waiting = False


def on_start(config: Config) -> None:
    """An instance started: install the SIGTERM handler when the disposition is the default."""
    if not config.handle_sigterm or config.disabled:
        return
    if threading.current_thread() is not threading.main_thread():
        return  # only the main thread may set a handler; the app's own start decides
    try:
        if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
            signal.signal(signal.SIGTERM, _on_sigterm)
    except (ValueError, OSError):  # pragma: no cover - an embedded interpreter without signals
        pass


def on_last_stop() -> None:
    """The last instance stopped: give SIGTERM its default back, if the handler is still ours."""
    if threading.current_thread() is not threading.main_thread():
        return  # left in place: with nothing to drain it ends the process as SIG_DFL would
    try:
        if signal.getsignal(signal.SIGTERM) is _on_sigterm and not _sigterm_done.is_set():
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
    except (ValueError, OSError):  # pragma: no cover
        pass


def _on_sigterm(signum: int, frame: Any) -> None:
    """Drain within shutdown_timeout, then end the process as the default SIGTERM would.

    The drain runs on its own thread (maybe started already by the watcher thread). The
    handler waits for it, unless it interrupted this thread inside phactor (holding a lock the
    drain needs) or its own wait: then it returns at once, the interrupted call finishes, and
    the drain thread re-raises SIGTERM when done, which brings the process back here to end it.
    """
    global _waiting
    if _sigterm_done.is_set():
        _die()
    thread = _start_drain()
    if thread is None or _waiting or _interrupted_phactor():
        return
    budget = max((i.config.shutdown_timeout for i in _running()), default=_DRAIN_WAIT) + 2 * _GRACE
    _waiting = True
    thread.join(budget)
    _sigterm_done.set()
    _die()


def _sigterm_seen() -> None:
    """The watcher thread saw a SIGTERM arrive: start the drain, as the main thread may be
    unable to run the handler (blocked in C since just after the signal came)."""
    if signal.getsignal(signal.SIGTERM) is _on_sigterm:
        _start_drain()


def _start_drain() -> threading.Thread | None:
    """The SIGTERM drain thread, started by the first caller; None while another thread is
    starting it (the caller never waits: the drain re-raises SIGTERM when done)."""
    global _sigterm_drain
    if not _sigterm_lock.acquire(blocking=False):
        return None
    try:
        if _sigterm_drain is None:
            thread = threading.Thread(target=_drain_then_signal, name="phactor-sigterm", daemon=True)
            _sigterm_drain = thread
            with signals_blocked():
                thread.start()
        return _sigterm_drain
    finally:
        _sigterm_lock.release()


def _drain_then_signal() -> None:
    try:
        drain()
    except BaseException as error:  # pragma: no cover - the process ends regardless
        _log.error("sigterm_drain_failed", error=repr(error))
    finally:
        if not _sigterm_done.is_set():
            _sigterm_done.set()
            os.kill(os.getpid(), signal.SIGTERM)  # the main thread's handler ends the process
    # The main thread ends the process now (its handler runs when the signal interrupts what
    # it is doing). If it cannot (a C call no signal interrupts, or the signal landed just
    # before it blocked again), end it from here, as SIGTERM would have: never hang.
    time.sleep(_GRACE)
    if signal.getsignal(signal.SIGTERM) is _on_sigterm:  # not taken over by the app meanwhile
        _log.warning("sigterm_main_thread_unresponsive")
        os._exit(128 + signal.SIGTERM)


def _interrupted_phactor() -> bool:
    if reentered() or _registry_busy():
        return True
    return any(inst._stop_lock.locked() for inst in _running())


def _die() -> None:
    """End the process as an unhandled SIGTERM does (the parent sees -15 / status 143)."""
    sys.stdout.flush()
    sys.stderr.flush()
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(1.0)  # pragma: no cover - the signal is delivered before kill() returns
    os._exit(128 + signal.SIGTERM)  # pragma: no cover


# --- multiprocessing -------------------------------------------------------------------------

_MP_MARK = type("_MultiprocessingMark", (), {})()  # weakref-able key for register_after_fork


def after_fork_in_child() -> None:
    """os.fork() hook (in the child, cheap): forget the parent's SIGTERM state (a fork during
    its drain must not leave the child unable to end); when this may be a multiprocessing
    child, have multiprocessing register our drain finalizer once its bootstrap has cleared
    the parent's."""
    global _sigterm_drain, _sigterm_done, _sigterm_lock, _waiting, _stopping
    _sigterm_drain = None
    _sigterm_done = threading.Event()
    _sigterm_lock = threading.Lock()
    _waiting = False
    _stopping = []
    _sigwatch.after_fork_in_child()
    _unblock_sigterm_after_fork()
    util = sys.modules.get("multiprocessing.util")
    if util is not None and _running():
        util.register_after_fork(_MP_MARK, _in_multiprocessing_child)


def _in_multiprocessing_child(_mark: object) -> None:
    # Called by multiprocessing's _bootstrap in a fork-started child, before run(); its
    # _exit_function runs the finalizer after run() and before os._exit.
    from multiprocessing import util

    util.Finalize(None, drain, exitpriority=0)
    if signal.getsignal(signal.SIGTERM) is _on_sigterm:
        _sigwatch.watch(signal.SIGTERM, _sigterm_seen)  # terminate() must end it: see above


# CPython discards the signals a forked child received before its interpreter's after-fork
# reset: a SIGTERM sent at once (Pool.terminate() on a worker not yet scheduled) would be lost
# and, with our handler, never end the child. So SIGTERM stays blocked on the forking thread
# across fork(): in the child it waits, pending, until the fork hooks are done.
_fork_mask = threading.local()


def _block_sigterm_for_fork() -> None:
    if signal.getsignal(signal.SIGTERM) is _on_sigterm:
        before = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
        _fork_mask.unblock = signal.SIGTERM not in before


def _unblock_sigterm_after_fork() -> None:
    if getattr(_fork_mask, "unblock", False):
        _fork_mask.unblock = False
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})  # a pending one runs now


if hasattr(os, "register_at_fork") and hasattr(signal, "pthread_sigmask"):
    os.register_at_fork(before=_block_sigterm_for_fork, after_in_parent=_unblock_sigterm_after_fork)
