"""The exceptions phactor raises into application code, all under `PhactorError`.

phactor raises only at the call site and only for programmer errors (bad config, wrong
instance name); delivery problems never raise, they are counted in `stats()["dropped"]`.
"""

from __future__ import annotations

__all__ = ["AlreadyStarted", "ConfigError", "DeliveryError", "NotStarted", "PhactorError"]


class PhactorError(Exception):
    """Base class of every exception phactor raises."""


class ConfigError(PhactorError, ValueError):
    """A config option has a bad value; names the option and the expected form."""

    def __init__(
        self,
        option: str,
        expected: str,
        got: object = None,
        *,
        missing: bool = False,
        secret: bool = False,
    ):
        self.option = option
        self.expected = expected
        if missing:
            message = f"config option {option!r} is required: expected {expected}"
        else:
            shown = _hidden(got) if secret else _short_repr(got)
            message = f"config option {option!r}: expected {expected}, got {shown}"
        super().__init__(message)


def _short_repr(value: object, limit: int = 120) -> str:
    """`repr(value)`, cut to `limit` characters; never raises (a hostile `__repr__` is named)."""
    try:
        text = repr(value)
    except Exception as error:
        return f"<{type(value).__name__} whose repr raised {type(error).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _hidden(value: object) -> str:
    """What a rejected secret may show: its type and length, never any of its characters."""
    try:
        size = f" of length {len(value)}" if isinstance(value, str | bytes | bytearray) else ""
    except Exception:  # pragma: no cover - len of a str/bytes subclass that raises
        size = ""
    return f"a {type(value).__name__}{size} (value hidden)"


class NotStarted(PhactorError, LookupError):
    """No running instance has the requested name."""

    def __init__(self, name: str):
        self.name = name
        super().__init__(f"no phactor instance named {name!r} is running; call phactor.start()")


class AlreadyStarted(PhactorError):
    """An instance with this name is already running."""

    def __init__(self, name: str):
        self.name = name
        super().__init__(
            f"a phactor instance named {name!r} is already running; stop it first or pick another name"
        )


class DeliveryError(PhactorError):
    """Passed to the `on_error` callback when a batch is dropped; never raised into the app."""

    def __init__(self, reason: str, status: int | None, message: str):
        self.reason = reason
        self.status = status
        self.message = message
        super().__init__(f"batch dropped ({reason}, status {status}): {message}")
