"""See a signal arrive even while the main thread is stuck in a C call.

CPython runs a Python signal handler on the main thread, between two bytecodes. A signal that
lands just before the main thread blocks in C (after the interpreter's last check, before the
wait: a multiprocessing lock, a pipe read) only sets a flag, and the handler runs when that call
returns, which may be never (a Pool worker waiting for the task queue's lock after
`Pool.terminate()` took it for good). The one trace such a signal leaves that another thread can
see is the byte CPython's C-level handler writes to the "wakeup fd" (`signal.set_wakeup_fd`): a
watcher thread reading it learns of the signal whatever the main thread is doing.

The wakeup fd is one per process and belongs to whoever set it first (asyncio's loop sets it for
`add_signal_handler`): `watch` takes it only when it is free, and a later owner may take it over
(the watcher then sees nothing more). A forked child inherits the setting (the parent's pipe):
its fork hook (`after_fork_in_child`) gives it up, so the child's signals never reach the
parent's watcher once the hook has run.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable

from phactor._log import get_logger
from phactor._sigmask import signals_blocked

__all__ = ["after_fork_in_child", "watch"]

_log = get_logger("sigwatch")

# The process that set the wakeup fd below (0: none), and its pipe.
_pid = 0
_read_fd = -1
_write_fd = -1
_callbacks: dict[int, Callable[[], None]] = {}


def watch(signum: int, callback: Callable[[], None]) -> bool:
    """From the main thread: call `callback()` on a watcher thread each time `signum` arrives
    (while its handler is a Python one). False, and nothing changed, when the wakeup fd is
    someone else's or this is not the main thread."""
    global _pid, _read_fd, _write_fd
    if _pid == os.getpid():
        _callbacks[signum] = callback
        return True
    try:
        old = signal.set_wakeup_fd(-1)
    except (ValueError, OSError):  # not the main thread; no signals here
        return False
    if old != -1:
        signal.set_wakeup_fd(old)  # someone else's (asyncio): it stays theirs
        return False
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)
    signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    _pid, _read_fd, _write_fd = os.getpid(), read_fd, write_fd
    _callbacks.clear()
    _callbacks[signum] = callback
    thread = threading.Thread(target=_watch, args=(read_fd,), name="phactor-sigwatch", daemon=True)
    with signals_blocked():
        thread.start()
    return True


def _watch(read_fd: int) -> None:
    while True:
        try:
            data = os.read(read_fd, 64)
        except OSError:  # closed
            return
        if not data:
            return
        for signum in set(data):
            callback = _callbacks.get(signum)
            if callback is None:
                continue
            try:
                callback()
            except Exception as error:  # pragma: no cover - keep watching
                _log.error("signal_watch_failed", signum=signum, error=repr(error))


def after_fork_in_child() -> None:
    """os.fork() hook (in the child, cheap): give up the parent's wakeup fd and pipe."""
    global _pid, _read_fd, _write_fd
    if _pid in (0, os.getpid()):
        return
    try:
        old = signal.set_wakeup_fd(-1)
        if old != _write_fd:
            signal.set_wakeup_fd(old)  # taken over by someone else meanwhile: not ours to drop
    except (ValueError, OSError):  # pragma: no cover - the forking thread is the child's main
        pass
    for fd in (_read_fd, _write_fd):
        try:
            os.close(fd)
        except OSError:  # pragma: no cover
            pass
    _pid, _read_fd, _write_fd = 0, -1, -1
    _callbacks.clear()
