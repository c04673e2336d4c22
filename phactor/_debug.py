"""`debug=True`: print an instance's phactor log records (every area) to stderr.

One handler per instance with `debug` on, on the `phactor` logger; the logger's level is raised
to DEBUG while any is installed and put back when the last one goes.
"""

from __future__ import annotations

import logging
import os
import sys
import threading

from phactor._log import PHACTOR_LOGGER

__all__ = ["disable_debug_output", "enable_debug_output"]

_debug_lock = threading.Lock()
_debug_handlers: list[logging.Handler] = []
_level_before_debug = logging.NOTSET


def enable_debug_output(name: str) -> logging.Handler:
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


def disable_debug_output(handler: logging.Handler) -> None:
    """Remove a handler `enable_debug_output` returned (the level goes back with the last)."""
    logger = logging.getLogger(PHACTOR_LOGGER)
    with _debug_lock:
        logger.removeHandler(handler)
        if handler in _debug_handlers:
            _debug_handlers.remove(handler)
        if not _debug_handlers:
            logger.setLevel(_level_before_debug)


def _after_fork_in_child() -> None:
    """os.fork() hook (in the child): another thread may have held the lock at fork time."""
    global _debug_lock
    _debug_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
