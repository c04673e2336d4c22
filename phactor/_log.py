"""phactor's own logging: structlog bound loggers over the stdlib logger "phactor".

A library must not configure logging for the app, so records go to `logging.getLogger("phactor")`
(which has a NullHandler) and reach the app only through its own logging config. `debug=True`
attaches a console handler to the instance's logger only.

structlog is imported on the first log call, not at `import phactor`: importing it costs tens
of milliseconds (it pulls in asyncio), and most processes log nothing from phactor for a while.

Keys never reach a log line: the parts of phactor that hold them register them
(`register_secrets`), and a filter on every logger phactor writes to replaces each registered
key — raw, URL-quoted, JSON- or repr-escaped — by its masked prefix in the message and in a
logged traceback. Done once here, it also covers text phactor does not control (a server or
proxy echoing the request in its error body, an exception message holding a URL with
`?token=`). The same filter sits on urllib3's connection-pool logger, whose DEBUG lines show
request URLs (the definitions request carries the project key as `?token=`).
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import urllib.parse
from collections.abc import Iterable, MutableMapping
from typing import Any

from phactor.config import mask

__all__ = [
    "PHACTOR_LOGGER",
    "enable_debug_output",
    "get_logger",
    "mask_secrets",
    "register_secrets",
    "scrub",
    "secret_forms",
]

PHACTOR_LOGGER = "phactor"
logging.getLogger(PHACTOR_LOGGER).addHandler(logging.NullHandler())

# Shorter values cannot be real keys (PostHog's are ~47 characters), and masking them would
# garble unrelated text.
_MIN_SECRET = 8


def secret_forms(secret: str) -> set[str]:
    """The spellings a secret travels in: raw, URL-quoted, JSON-escaped, inside a repr()."""
    return {
        secret,
        urllib.parse.quote(secret, safe=""),
        urllib.parse.quote(secret),
        urllib.parse.quote_plus(secret),
        json.dumps(secret)[1:-1],
        json.dumps(secret, ensure_ascii=False)[1:-1],
        repr(secret)[1:-1],
    }


_Needles = tuple[tuple[str, str], ...]


def _needles(secrets: Iterable[str | None]) -> _Needles:
    pairs: dict[str, str] = {}
    for secret in secrets:
        if isinstance(secret, str) and len(secret) >= _MIN_SECRET:
            for form in secret_forms(secret):
                pairs.setdefault(form, mask(secret))
    return tuple(sorted(pairs.items(), key=lambda pair: -len(pair[0])))  # longest first


def _replace(text: str, needles: _Needles) -> str:
    # Again until none is left: a mask next to the rest of the text could spell a form anew.
    # Bounded, and the last passes use a bare "***", so this always ends.
    for attempt in range(6):
        found = False
        for needle, masked in needles:
            if needle in text:
                text = text.replace(needle, masked if attempt < 3 else "***")
                found = True
        if not found:
            break
    return text


def mask_secrets(text: str, secrets: Iterable[str | None]) -> str:
    """`text` with every form of each secret (8+ characters) replaced by its masked prefix."""
    return _replace(text, _needles(secrets))


_registered: set[str] = set()
_registered_needles: _Needles = ()
_registered_lock = threading.Lock()


def register_secrets(*secrets: str | None) -> None:
    """Mask these keys in every phactor log line from now on (and in `scrub`)."""
    global _registered_needles
    new = {s for s in secrets if isinstance(s, str) and len(s) >= _MIN_SECRET}
    if new <= _registered:
        return
    with _registered_lock:
        if not _registered:
            # urllib3 logs each request's URL at DEBUG; the definitions URL carries `?token=`.
            logging.getLogger("urllib3.connectionpool").addFilter(_SCRUB)
        _registered.update(new)
        _registered_needles = _needles(_registered)


def scrub(text: str) -> str:
    """`text` with every registered key masked: for error text that leaves phactor."""
    needles = _registered_needles
    return _replace(text, needles) if needles else text


class _ScrubFilter(logging.Filter):
    """Masks registered keys in a record's message and traceback text, in place."""

    def filter(self, record: logging.LogRecord) -> bool:
        needles = _registered_needles
        if not needles:
            return True
        try:
            message = record.getMessage()
        except Exception:  # a broken format/args pair: leave it to the handler to report
            return True
        scrubbed = _replace(message, needles)
        if scrubbed != message:
            record.msg, record.args = scrubbed, ()
        if record.exc_info and not record.exc_text:
            text = logging.Formatter().formatException(record.exc_info)
            scrubbed = _replace(text, needles)
            if scrubbed != text:
                # Handlers' formatters print exc_text when set instead of formatting exc_info.
                record.exc_text = scrubbed
        elif record.exc_text:
            record.exc_text = _replace(record.exc_text, needles)
        if record.stack_info:
            record.stack_info = _replace(record.stack_info, needles)
        return True


_SCRUB = _ScrubFilter()


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
            level = _LEVELS.get(method)
            # A record its stdlib logger would discard needs no structlog (whose import and
            # set-up cost tens of ms): "started" at INFO is the usual case at boot.
            if level is not None and not logging.getLogger(self._name()).isEnabledFor(level):
                return _discard
            real = self._real = _build(self._area, self._bound)
        return getattr(real, method)

    def _name(self) -> str:
        return f"{PHACTOR_LOGGER}.{self._area}" if self._area else PHACTOR_LOGGER


_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "warn": logging.WARNING,
    "error": logging.ERROR,
    "exception": logging.ERROR,
    "critical": logging.CRITICAL,
    "fatal": logging.CRITICAL,
}


def _discard(*args: Any, **kwargs: Any) -> None:
    return None


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
    stdlib.addFilter(_SCRUB)  # a no-op when already there
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
