"""Helpers for testing code that uses phactor, in the user's own test suite.

Start an instance with `test_mode=True`: events go through the whole pipeline (context,
before_send, Batcher, Senders) but never reach the network; read them here as plain
wire-format dicts.
"""

from __future__ import annotations

from typing import Any

from phactor.api import instance as _instance

__all__ = ["clear", "events"]


def events(instance: str = "default", *, flush: bool = True) -> list[dict[str, Any]]:
    """The events a test-mode instance has "sent" so far (flushed first by default)."""
    inst = _instance(instance)
    if not inst.config.test_mode:
        raise ValueError(f"instance {instance!r} is not in test_mode")
    if flush:
        inst.flush(timeout=10.0)
    with inst._test_lock:
        return list(inst._test_events)


def clear(instance: str = "default") -> None:
    """Forget the events recorded so far by a test-mode instance."""
    inst = _instance(instance)
    inst.flush(timeout=10.0)
    with inst._test_lock:
        inst._test_events.clear()
