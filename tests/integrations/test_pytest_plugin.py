"""The pytest plugin, run by pytest itself (pytester) on small test files."""

from __future__ import annotations

import tomllib
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pytest

pytest_plugins = ["pytester"]

PLUGIN = "phactor.integrations.pytest_plugin"


def plugin_args() -> list[str]:
    # Where phactor is installed with its entry point the plugin is already loaded; elsewhere
    # (an editable install made before the entry point existed) load it by name.
    loaded = any(ep.value == PLUGIN for ep in entry_points(group="pytest11"))
    return [] if loaded else ["-p", PLUGIN]


def run(pytester: pytest.Pytester, source: str, *args: str) -> Any:
    pytester.makepyfile(source)
    return pytester.runpytest_inprocess(*plugin_args(), "-p", "no:cacheprovider", *args)


def test_the_plugin_is_registered_as_a_pytest11_entry_point() -> None:
    pyproject = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    assert pyproject["project"]["entry-points"]["pytest11"] == {"phactor": PLUGIN}


def test_phactor_events_holds_only_this_tests_events_also_from_threads_and_tasks(
    pytester: pytest.Pytester,
) -> None:
    result = run(
        pytester,
        """
        import asyncio, threading
        import phactor

        def test_first(phactor_events):
            phactor.capture("one", "u1", {"plan": "pro"})
            t = threading.Thread(target=phactor.capture, args=("from_thread", "u2"))
            t.start(); t.join()

            async def task():
                phactor.capture("from_task", "u3")
            asyncio.run(task())
            assert [e["event"] for e in phactor_events] == ["one", "from_thread", "from_task"]
            event = phactor_events.assert_captured("one", distinct_id="u1", plan="pro")
            assert event["properties"]["$lib"] == "phactor"
            assert phactor_events.find("one", plan="free") == []
            assert len(phactor_events.find("from_task", distinct_id="u3")) == 1

        def test_second_sees_none_of_the_first(phactor_events):
            assert list(phactor_events) == []
            phactor.capture("two", "u1")
            assert len(phactor_events) == 1

        def test_the_instance_is_stopped_after_each_test():
            assert phactor.instances() == []
        """,
    )
    result.assert_outcomes(passed=3)


def test_assert_captured_shows_a_readable_diff(pytester: pytest.Pytester) -> None:
    result = run(
        pytester,
        """
        import phactor

        def test_mismatch(phactor_events):
            phactor.capture("signed_up", "u2", {"plan": "free"})
            phactor.capture("$pageview", "u2")
            phactor_events.assert_captured("signed_up", distinct_id="u1", plan="pro", seats=3)
        """,
    )
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*no 'signed_up' event captured with distinct_id='u1', plan='pro', seats=3",
            "*1 'signed_up' event(s) captured, none matching:",
            "*#0: distinct_id='u2' (expected 'u1'); plan='free' (expected 'pro'); "
            "seats missing (expected 3)",
            "*captured in this test: ?'signed_up', '$pageview'?",
        ]
    )


def test_the_marker_names_the_instance_and_its_options(pytester: pytest.Pytester) -> None:
    result = run(
        pytester,
        """
        import pytest, phactor

        @pytest.mark.phactor(instance="web", global_properties={"app": "shop"})
        def test_named(phactor_events):
            phactor.capture("x", "u", instance="web")
            phactor_events.assert_captured("x", app="shop")
            assert phactor_events.instance.name == "web"
        """,
    )
    result.assert_outcomes(passed=1)


def test_the_guard_fails_a_test_that_would_reach_a_real_host(pytester: pytest.Pytester) -> None:
    result = run(
        pytester,
        """
        import pytest, phactor

        def test_real_host(phactor_events):
            try:
                phactor.start("real", api_key="phc_x", host="https://us.i.posthog.com")
            except Exception:
                pass  # the guard's failure is not an Exception the code under test can swallow

        @pytest.mark.phactor_guard
        def test_marked():
            phactor.start("real2", api_key="phc_x", host="https://eu.i.posthog.com")

        @pytest.mark.phactor_guard
        def test_loopback_and_test_mode_and_disabled_are_fine():
            phactor.start("a", api_key="phc_x", host="http://127.0.0.1:9").stop(0)
            phactor.start("b", api_key="phc_x", host="http://localhost:9").stop(0)
            phactor.start("c", test_mode=True, host="https://us.i.posthog.com").stop(0)
            phactor.start("d", disabled=True, host="https://us.i.posthog.com").stop(0)

        def test_unguarded_tests_are_untouched():
            phactor.start("e", api_key="phc_x", host="https://us.i.posthog.com").stop(0)
        """,
    )
    result.assert_outcomes(passed=2, failed=2)
    result.stdout.fnmatch_lines(["*would send to https://us.i.posthog.com from a test*"])


def test_the_ini_option_guards_every_test(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nphactor_guard = true\n")
    result = run(
        pytester,
        """
        import phactor

        def test_unmarked():
            phactor.start("real", api_key="phc_x", host="https://us.i.posthog.com")
        """,
    )
    result.assert_outcomes(failed=1)


def test_attaching_to_a_running_instance_that_is_not_in_test_mode_fails_clearly(
    pytester: pytest.Pytester,
) -> None:
    result = run(
        pytester,
        """
        import phactor

        def test_live(phactor_events):
            pass

        def setup_module():
            phactor.start("default", api_key="phc_x", host="http://127.0.0.1:9")

        def teardown_module():
            phactor.stop("default", timeout=0)
        """,
    )
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*'default' is running but not in test_mode*"])
