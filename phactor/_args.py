"""Checks of call arguments shared by the public entry points: clear errors, never a crash.

An argument's own `__repr__`/`__str__` may raise or be huge, so an error message names the type
of a wrong argument and shows a str argument only shortened.
"""

from __future__ import annotations

import numbers
import threading
from typing import Any

__all__ = ["described", "timeout_arg"]


def described(value: Any) -> str:
    """`value` for an error message: a str shortened, anything else by its type's name."""
    if type(value) is str:
        return repr(value if len(value) <= 40 else value[:40] + "...")
    return type(value).__name__


def timeout_arg(timeout: Any, method: str) -> float | None:
    """A `timeout` argument as seconds, None for no deadline (None, inf, or past what a
    thread can wait); raises TypeError/ValueError for anything else, before any action."""
    if timeout is None:
        return None
    if type(timeout) not in (int, float) and (
        isinstance(timeout, bool) or not isinstance(timeout, numbers.Real)
    ):
        raise TypeError(
            f"{method}(timeout=...) takes a number of seconds or None, "
            f"got {type(timeout).__name__}"
        )
    seconds: Any = timeout  # a Real; compared before float(): 10**400 is no OverflowError
    if seconds != seconds or seconds < 0:
        raise ValueError(f"{method}(timeout=...) takes seconds >= 0 (or inf), got {seconds!r}")
    return None if seconds >= threading.TIMEOUT_MAX else float(seconds)
