"""Calls on an instance name that was never started: a setup slip, not a crash of the app.

A capture-family or flag call (module function) on such a name returns None (a flag helper its
default) and logs one warning per name (`phactor.instance(name)` still raises `NotStarted`).
"""

from __future__ import annotations

import threading

from phactor._log import get_logger

__all__ = ["warn_unstarted"]

_warned: set[str] = set()
_lock = threading.Lock()
# Names are the caller's: a loop over generated names must not grow this set for ever.
_MAX_NAMES = 1000


def warn_unstarted(name: object) -> None:
    """Log, once per name, that a call went to an instance that was never started."""
    key = name if isinstance(name, str) else f"<{type(name).__name__}>"
    with _lock:
        if key in _warned or len(_warned) >= _MAX_NAMES:
            return
        _warned.add(key)
    get_logger("api").warning(
        "instance_not_started",
        name=key[:100],
        effect="the call did nothing (returned None / the flag's default)",
        fix=f"call phactor.start({key[:100]!r}, api_key=...) first",
    )
