"""The runtime properties on every event (`$is_server`, `$python_*`, `$os*`), equal to what the
posthog package sends, computed once per process; `$lib`/`$lib_version` name phactor."""

from __future__ import annotations

import platform
import sys
from typing import Any

import pytest
from conftest import StartInstance
from hypothesis import given
from hypothesis import strategies as st
from posthog.utils import system_context

import phactor
from phactor.runtime import os_properties, runtime_properties


def test_every_event_carries_the_runtime_properties_posthog_sends(
    start_test_mode: StartInstance,
) -> None:
    inst = start_test_mode(enable_error_tracking=False)
    inst.capture("e", "u1", {"$python_version": "caller's"})
    inst.set("u1", {"a": 1})
    inst.capture_exception(ValueError("x"), "u1")
    events = phactor.testing.events(inst.name)
    assert len(events) == 3
    for event in events:
        props = event["properties"]
        for key, value in system_context().items():
            assert props[key] == value, key
        assert props["$is_server"] is True
        assert props["$lib"] == "phactor" and props["$lib_version"] == phactor.__version__


def test_runtime_properties_are_read_once() -> None:
    assert runtime_properties() is runtime_properties()


def _fail() -> Any:
    raise RuntimeError("platform call failed")


@pytest.mark.parametrize(
    ("platform_name", "expected"),
    [
        ("win32", {"$os": "Windows", "$os_version": "11"}),
        ("darwin", {"$os": "Mac OS X", "$os_version": "14.4"}),
        (
            "linux",
            {"$os": "Linux", "$os_version": "24.04", "$os_distro": "Ubuntu"},
        ),
        ("freebsd13", {"$os": "FreeBSD", "$os_version": "13.2"}),
        ("sunos5", {"$os": "sunos5", "$os_version": "13.2"}),
    ],
)
def test_os_properties_as_posthog_names_them(platform_name: str, expected: dict[str, str]) -> None:
    got = os_properties(
        platform_name,
        release=lambda: "13.2",
        win32_ver=lambda: ("11", "", "", ""),
        mac_ver=lambda: ("14.4", ("", "", ""), ""),
        os_release=lambda: {"NAME": "Ubuntu", "VERSION_ID": "24.04"},
    )
    assert got == expected


@given(platform_name=st.text(max_size=12) | st.sampled_from(["win32", "darwin", "linux"]))
def test_os_properties_never_raise(platform_name: str) -> None:
    got = os_properties(
        platform_name, release=_fail, win32_ver=_fail, mac_ver=_fail, os_release=_fail
    )
    assert set(got) <= {"$os", "$os_version", "$os_distro"}
    assert all(isinstance(v, str) for v in got.values())


def test_linux_without_os_release() -> None:
    def missing() -> dict[str, str]:
        raise OSError("no /etc/os-release")

    assert os_properties("linux", os_release=missing) == {"$os": "Linux", "$os_version": ""}


def test_this_process_matches_posthog() -> None:
    assert dict(runtime_properties()) == system_context()
    assert runtime_properties()["$python_runtime"] == platform.python_implementation()
    assert runtime_properties()["$python_version"].startswith(f"{sys.version_info[0]}.")
