"""The runtime properties every event carries, computed once per process (not per event).

The same names and values the `posthog` package puts on its events (`$python_runtime`,
`$python_version`, `$os`, `$os_version`, `$os_distro` on Linux), plus `$is_server: true` and
phactor's own `$lib`/`$lib_version`. Reading them touches the file system (`/etc/os-release`)
and `platform`, so `runtime_properties()` caches its answer: an `Instance` asks once, at start.
"""

from __future__ import annotations

import platform
import sys
from collections.abc import Callable
from functools import cache
from types import MappingProxyType
from typing import Any

from phactor._version import __version__

__all__ = ["LIB", "lib_properties", "os_properties", "runtime_properties"]

LIB = "phactor"


def os_properties(
    platform_name: str,
    *,
    release: Callable[[], str] = platform.release,
    win32_ver: Callable[[], Any] = platform.win32_ver,
    mac_ver: Callable[[], Any] = platform.mac_ver,
    os_release: Callable[[], dict[str, str]] = platform.freedesktop_os_release,
) -> dict[str, str]:
    """`$os`, `$os_version` (and `$os_distro` on Linux) for a `sys.platform` value.

    The values the posthog package sends (it reads Linux's through the `distro` package, which
    reads the same `/etc/os-release` fields: `VERSION_ID` and `NAME`). Never raises: a field
    that cannot be read is "".
    """
    name, version, distro = platform_name, "", ""
    try:
        if platform_name.startswith("win"):
            name, version = "Windows", win32_ver()[0] or ""
        elif platform_name == "darwin":
            name, version = "Mac OS X", mac_ver()[0] or ""
        elif platform_name.startswith("linux"):
            name = "Linux"
            try:
                info = os_release()
            except OSError:
                info = {}
            version, distro = info.get("VERSION_ID", ""), info.get("NAME", "")
        else:
            if platform_name.startswith("freebsd"):
                name = "FreeBSD"
            version = release() or ""
    except Exception:  # an odd platform module: the properties are informative only
        pass
    props = {"$os": name, "$os_version": version}
    if distro:
        props["$os_distro"] = distro
    return props


@cache
def runtime_properties() -> MappingProxyType[str, Any]:
    """This process's runtime properties (read once, then cached)."""
    return MappingProxyType(
        {
            "$python_runtime": platform.python_implementation(),
            "$python_version": "{}.{}.{}".format(*sys.version_info[:3]),
            **os_properties(sys.platform),
        }
    )


def lib_properties() -> dict[str, Any]:
    """What every event carries and a caller cannot change: the runtime properties,
    `$is_server` and phactor's `$lib`/`$lib_version` (a new dict each call)."""
    return {
        **runtime_properties(),
        "$is_server": True,
        "$lib": LIB,
        "$lib_version": __version__,
    }
