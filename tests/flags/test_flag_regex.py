"""Flag regexes never run unbounded: the cost check of phactor.flags.filters.regex_cost (issue 10 #8).

``re`` backtracks while holding the GIL, so a catastrophic flag regex would freeze every thread
of the app. Generated patterns (atoms, alternations, quantifiers, groups, anchors) are checked
against adversarial values (long runs of a repeated character or unit, then a mismatching tail):
every pattern the check accepts must search each value within a small CPU budget. The searches
run in a worker subprocess, so a pattern that backtracks for minutes fails the test instead of
hanging it; CPU time (time.thread_time) is measured, so other processes on the machine do not
count against the budget.
"""

from __future__ import annotations

import json
import os
import re
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from phactor.flags import Definitions, evaluate
from phactor.flags.filters.regex import _DEFER, _prepare_regex

BUDGET_S = 0.05  # per search of a 20,000-character value
HANG_S = 20.0  # wall-clock bound on one example in the worker

WORKER = r"""
import json, sys, time
from phactor.flags.filters.regex import _RegexInfo, _prepare_regex, _regex_search
for line in sys.stdin:
    job = json.loads(line)
    info = _prepare_regex(job["pattern"])
    if not isinstance(info, _RegexInfo):
        print(json.dumps({"accepted": False}), flush=True)
        continue
    worst = [0.0, None]
    for unit, count, tail in job["values"]:
        value = unit * count + tail
        start = time.thread_time()
        _regex_search(info, value)
        spent = time.thread_time() - start
        if spent > worst[0]:
            worst = [spent, [unit, count, tail]]
    print(json.dumps({"accepted": True, "worst": worst, "max_input": getattr(info, "max_input", None)}), flush=True)
"""


class Worker:
    """A subprocess that checks and times patterns; restarted after a hang."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[str] | None = None

    def _start(self) -> subprocess.Popen[str]:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
        return subprocess.Popen(
            [sys.executable, "-c", WORKER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )

    def run(self, pattern: str, values: list[tuple[str, int, str]]) -> dict[str, Any] | None:
        """The worker's answer, or None when it did not answer within HANG_S (it is killed)."""
        if self.proc is None or self.proc.poll() is not None:
            self.proc = self._start()
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps({"pattern": pattern, "values": values}) + "\n")
        self.proc.stdin.flush()
        deadline = time.monotonic() + HANG_S
        while True:
            ready, _, _ = select.select([self.proc.stdout], [], [], deadline - time.monotonic())
            if ready:
                return json.loads(self.proc.stdout.readline())
            if time.monotonic() >= deadline:
                self.close()
                return None

    def close(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


@pytest.fixture(scope="module")
def worker() -> Iterator[Worker]:
    w = Worker()
    try:
        yield w
    finally:
        w.close()


ATOMS = ["a", "b", "x", "=", "@", ".", r"\d", r"\s", r"\w", "[ab]", "[^a]", r"\.", "1", " "]
QUANTIFIERS = ["*", "+", "?", "{2,5}", "{1,}", "*?", "+?", "{3}", "{0,2}", "{12}", "{2,30}"]


@st.composite
def patterns(draw: st.DrawFn, depth: int = 0) -> str:
    parts = []
    for _ in range(draw(st.integers(1, 4))):
        roll = draw(st.integers(0, 9))
        if roll < 6 or depth >= 2:
            part = draw(st.sampled_from(ATOMS))
        elif roll < 8:
            alternatives = draw(st.lists(patterns(depth + 1), min_size=1, max_size=3))
            part = draw(st.sampled_from(["(", "(?:"])) + "|".join(alternatives) + ")"
        else:
            part = "(" + draw(patterns(depth + 1)) + ")"
        if draw(st.booleans()):
            part += draw(st.sampled_from(QUANTIFIERS))
        parts.append(part)
    return "".join(parts)


anchored_patterns = st.tuples(st.sampled_from(["", "^"]), patterns(), st.sampled_from(["", "$"]))
UNITS = ["a", "b", "x", "1", " ", "@", ".", "=", "ab", "a1", "a.", "1.", "a ", "a@"]
TAILS = ["", "!", "\n", "=", "b", "\u00e9"]


def adversarial_values(pattern: str) -> list[tuple[str, int, str]]:
    """Long runs of every unit and of the pattern's own literal characters, each with every tail;
    at 20,000 characters and at the length the quadratic-cost bound allows."""
    units = list(UNITS) + sorted({c for c in pattern if c.isalnum() or c in "@=. "})
    values = []
    for unit in dict.fromkeys(units):
        for tail in TAILS:
            for length in (20_000, 1_000):
                values.append((unit, length // len(unit), tail))
    return values


NAMED = [r"^(a|a)*$", r"^(.|\s)*x$", r"^\d*\d*\d*\d*\d*\d*\d*$", r"^.*.*.*.*.*=$"]


MORE_CATASTROPHIC = [
    r"(a+)+b",
    r"^(\w+\s?)*$",
    r"^\w+([\.-]?\w+)*@\w+([\.-]?\w+)*(\.\w{2,3})+$",  # a well-known email regex
    r"(?:a|aa){100}x",  # no quantifier inside, but 2**n ways through "aaa..."
    r"(a|aa)(a|aa)(a|aa)(a|aa)(a|aa)x",
    r"x(a|a)+",
]


@pytest.mark.parametrize("pattern", MORE_CATASTROPHIC)
def test_more_exponential_shapes_are_refused(pattern):
    assert _prepare_regex(pattern) is _DEFER


@pytest.mark.parametrize("pattern", NAMED)
def test_catastrophic_patterns_are_refused_and_left_to_the_server(pattern):
    # Each of these passed the old unsafe-pattern check and backtracked for minutes on a value
    # like "aaaa...!" while holding the GIL.
    assert _prepare_regex(pattern) is _DEFER
    flag = {
        "key": "f",
        "active": True,
        "filters": {
            "groups": [
                {
                    "properties": [
                        {"key": "p", "value": pattern, "operator": "regex", "type": "person"}
                    ],
                    "rollout_percentage": 100,
                }
            ]
        },
    }
    results, unresolved = evaluate(
        Definitions.from_response({"flags": [flag]}), "u", person_properties={"p": "a" * 30 + "!"}
    )
    assert results == {} and unresolved == {"f": "unsupported_regex:p"}


COMMON = [
    r"^.*@example\.com$",
    r".*@example\.com$",
    r"@posthog\.com$",
    r"^(foo|bar)$",
    r"\d+",
    r"^user_\d+$",
    r"^[0-9]+$",
    r".*test.*",
    r"(mobile|android|iphone)",
    r"^https?://(www\.)?example\.com/.*$",
    r"\.(edu|gov)$",
    r"^[a-zA-Z0-9._%+-]+@[a-zA-Z0-9.-]+\.[a-zA-Z]{2,}$",
    r"^[\w.+-]+@[\w-]+\.[\w.-]+$",
    r"^[^@]+@[^@]+\.[a-z]+$",
    r".+@gmail\.com",
    r"^(beta|alpha)-\d+$",
]
SAMPLES = ["a@example.com", "user_12", "bar", "https://example.com/x", "x@uni.edu", "12", "test"]


@pytest.mark.parametrize("pattern", COMMON)
def test_common_patterns_stay_local_and_match_as_re_does(pattern):

    info = _prepare_regex(pattern)
    assert info is not _DEFER and info is not None
    python = re.compile(pattern.replace("$", r"\Z"))
    for sample in SAMPLES:
        assert (info.regex.search(sample) is not None) == (python.search(sample) is not None)
    assert info.max_input >= 20_000  # linear: no bound on the value's length


@given(parts=anchored_patterns)
def test_every_accepted_pattern_searches_adversarial_values_within_budget(worker, parts):
    pattern = "".join(parts)
    answer = worker.run(pattern, adversarial_values(pattern))
    assert answer is not None, f"{pattern!r} was accepted and searched for over {HANG_S} s"
    if answer["accepted"]:
        spent, value = answer["worst"]
        assert spent < BUDGET_S, (
            f"{pattern!r} was accepted but one search took {spent * 1000:.0f} ms CPU on "
            f"{value[0]!r} * {value[1]} + {value[2]!r}"
        )


def test_a_quadratic_pattern_runs_only_on_values_up_to_the_bound():
    info = _prepare_regex(r"^\d*\d*$")
    assert info is not _DEFER and info is not None and info.max_input == 1_000

    def outcome(value: str) -> Any:
        flag = {
            "key": "f",
            "active": True,
            "filters": {
                "groups": [
                    {
                        "properties": [
                            {
                                "key": "p",
                                "value": r"^\d*\d*$",
                                "operator": "regex",
                                "type": "person",
                            }
                        ],
                        "rollout_percentage": 100,
                    }
                ]
            },
        }
        defs = Definitions.from_response({"flags": [flag]})
        results, unresolved = evaluate(defs, "u", person_properties={"p": value})
        return results["f"].value if results else unresolved["f"]

    assert outcome("1" * 1_000) is True
    assert outcome("1" * 999 + "x") is False
    assert outcome("1" * 1_001) == "unsupported_regex:p"


@given(parts=anchored_patterns, text=st.text(alphabet="ab1 x=@.\n\u00e9", max_size=12))
def test_accepted_patterns_answer_as_the_pattern_as_written(parts, text):
    # Leading and trailing single-character repeats are trimmed for the search (`.*@x` runs as
    # `@x`); the answer must be the one of the pattern as written.

    pattern = "".join(parts)
    info = _prepare_regex(pattern)
    if info is _DEFER or info is None:
        return
    found = info.regex.search(text) is not None
    assert found == (re.search(pattern.replace("$", r"\Z"), text) is not None), pattern
