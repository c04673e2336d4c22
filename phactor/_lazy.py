"""Lazy package exports (PEP 562): a name's module is imported on first attribute access.

`import phactor` must stay cheap (it runs at every app boot and in every CLI invocation), so the
flag core and the error-tracking core load when an instance first needs them, yet
`from phactor.flags import evaluate` keeps working.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(
    package: str, exports: Mapping[str, str], namespace: dict[str, Any]
) -> Callable[[str], Any]:
    """A module `__getattr__` serving `exports` (name -> module path relative to `package`).

    The first access imports the module and caches the value in `namespace` (the package's
    globals), so later accesses are plain attribute reads.
    """

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{module}"), name)
        namespace[name] = value
        return value

    return __getattr__
