"""Integrations of phactor with other libraries (structlog, ...), each in its own module.

Import the one you use, e.g. `from phactor.integrations.structlog import capture_exceptions`.
"""

__all__: list[str] = []
