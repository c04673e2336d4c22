"""phactor's own logging: structlog bound loggers over the stdlib logger "phactor".

A library must not configure logging for the app, so records go to `logging.getLogger("phactor")`
(which has a NullHandler) and reach the app only through its own logging config. `debug=True`
attaches a console handler to the instance's logger only.

structlog is imported on the first log call, not at `import phactor`: importing it costs tens
of milliseconds (it pulls in asyncio), and most processes log nothing from phactor for a while.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

__all__ = ["PHACTOR_LOGGER", "enable_debug_output", "get_logger"]

PHACTOR_LOGGER = "phactor"
logging.getLogger(PHACTOR_LOGGER).addHandler(logging.NullHandler())


class _LazyLogger:
    """A structlog BoundLogger built on first use, with the same `bind()` and level methods."""

    __slots__ = ("_area", "_bound", "_real")

    def __init__(self, area: str, bound: dict[str, Any]):
        self._area = area
        self._bound = bound
        self._real: Any = None

    def bind(self, **more: Any) -> _LazyLogger:
        return _LazyLogger(self._area, {**self._bound, **more})

    def __getattr__(self, method: str) -> Any:
        real = self._real
        if real is None:
            real = self._real = _build(self._area, self._bound)
        return getattr(real, method)


def _drop_exc_info(
    logger: Any, method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    # `log.exception()` reaches stdlib's `Logger.exception`, which attaches the traceback to
    # the record itself; rendering it into the message as well would print it twice.
    event_dict.pop("exc_info", None)
    return event_dict


def _build(area: str, bound: dict[str, Any]) -> Any:
    import structlog

    stdlib = logging.getLogger(f"{PHACTOR_LOGGER}.{area}" if area else PHACTOR_LOGGER)
    return structlog.wrap_logger(
        stdlib,
        processors=[
            _drop_exc_info,
            structlog.processors.KeyValueRenderer(key_order=["event"], drop_missing=True),
        ],
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    ).bind(**bound)


def get_logger(area: str, **bound: Any) -> Any:
    """A structlog logger writing to stdlib logger `phactor.<area>` with `bound` context."""
    return _LazyLogger(area, bound)


def enable_debug_output(area: str) -> logging.Handler:
    """Print `phactor.<area>` records at DEBUG and above to stderr (config `debug=True`)."""
    stdlib = logging.getLogger(f"{PHACTOR_LOGGER}.{area}")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s phactor %(levelname)s %(message)s"))
    stdlib.addHandler(handler)
    stdlib.setLevel(logging.DEBUG)
    return handler
