"""phactor's own logging: structlog bound loggers over the stdlib logger "phactor".

A library must not configure logging for the app, so records go to `logging.getLogger("phactor")`
(which has a NullHandler) and reach the app only through its own logging config. `debug=True`
attaches a console handler to the instance's logger only.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

__all__ = ["PHACTOR_LOGGER", "enable_debug_output", "get_logger"]

PHACTOR_LOGGER = "phactor"
logging.getLogger(PHACTOR_LOGGER).addHandler(logging.NullHandler())

_PROCESSORS: list[Any] = [
    structlog.processors.add_log_level,
    structlog.processors.format_exc_info,
    structlog.processors.KeyValueRenderer(key_order=["event"], drop_missing=True),
]


def get_logger(area: str, **bound: Any) -> Any:
    """A structlog logger writing to stdlib logger `phactor.<area>` with `bound` context."""
    stdlib = logging.getLogger(f"{PHACTOR_LOGGER}.{area}" if area else PHACTOR_LOGGER)
    return structlog.wrap_logger(
        stdlib,
        processors=_PROCESSORS,
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    ).bind(**bound)


def enable_debug_output(area: str) -> logging.Handler:
    """Print `phactor.<area>` records at DEBUG and above to stderr (config `debug=True`)."""
    stdlib = logging.getLogger(f"{PHACTOR_LOGGER}.{area}")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s phactor %(levelname)s %(message)s"))
    stdlib.addHandler(handler)
    stdlib.setLevel(logging.DEBUG)
    return handler
