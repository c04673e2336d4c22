"""`phactor.metrics.prometheus_text`: the Prometheus text format 0.0.4, checked by a strict parser.

The parser below accepts only what the format allows (HELP/TYPE before a family's samples, one
block per family, escaped label values, counters named `_total`, a final newline), so every
figure is read back and compared with `stats()`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import pytest
from conftest import StartInstance, assert_ledger
from hypothesis import given
from hypothesis import strategies as st

import phactor
from phactor.devserver import DevServer
from phactor.metrics import CONTENT_TYPE, prometheus_text, render

NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
VALUE = re.compile(r"[+-]?(?:\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?|Inf|NaN)")


@dataclass
class Family:
    kind: str = ""
    help: str = ""
    samples: list[tuple[dict[str, str], float]] = field(default_factory=list)


def parse(text: str) -> dict[str, Family]:
    """Families by name; AssertionError at the first thing format 0.0.4 does not allow."""
    assert text == "" or text.endswith("\n"), "the text ends with a newline"
    families: dict[str, Family] = {}
    done: set[str] = set()
    current: str | None = None
    for line in text.split("\n")[:-1]:
        if line.startswith("# HELP ") or line.startswith("# TYPE "):
            keyword, rest = line[2:6], line[7:]
            name, _, tail = rest.partition(" ")
            assert NAME.fullmatch(name), line
            if name != current:
                assert name not in done and name not in families, f"{name}: one block per family"
                if current is not None:
                    done.add(current)
                current = name
                families[name] = Family()
            family = families[name]
            assert not family.samples, f"{name}: HELP/TYPE before the samples"
            if keyword == "HELP":
                assert not family.help and not re.search(r"\\[^\\n]", tail.replace("\\\\", "")), line
                family.help = tail.replace("\\n", "\n").replace("\\\\", "\\")
            else:
                assert not family.kind and tail in ("counter", "gauge"), line
                family.kind = tail
            continue
        assert not line.startswith("#") and line, f"unexpected line {line!r}"
        match = NAME.match(line)
        assert match, line
        name, rest = match.group(), line[match.end() :]
        assert name == current, f"{name}: its samples follow its own HELP/TYPE"
        labels, rest = _labels(rest)
        assert rest.startswith(" "), line
        value = rest[1:]
        assert VALUE.fullmatch(value), line
        # Integers are read exactly (the figures are counts; float64 would round past 2**53).
        number = int(value) if re.fullmatch(r"[+-]?\d+", value) else float(value)
        families[name].samples.append((labels, number))
    for name, family in families.items():
        assert family.kind and family.help, f"{name}: HELP and TYPE"
        if family.kind == "counter":
            assert name.endswith("_total"), name
            assert all(v >= 0 for _, v in family.samples)
        keys = [tuple(sorted(labels.items())) for labels, _ in family.samples]
        assert len(keys) == len(set(keys)), f"{name}: a series appears once"
    return families


def _labels(text: str) -> tuple[dict[str, str], str]:
    labels: dict[str, str] = {}
    if not text.startswith("{"):
        return labels, text
    i = 1
    while text[i] != "}":
        match = LABEL_NAME.match(text, i)
        assert match and text[match.end() : match.end() + 2] == '="', text
        name, i = match.group(), match.end() + 2
        value = []
        while text[i] != '"':
            if text[i] == "\\":
                escaped = {"\\": "\\", '"': '"', "n": "\n"}.get(text[i + 1])
                assert escaped is not None, f"bad escape in {text!r}"
                value.append(escaped)
                i += 2
            else:
                assert text[i] != "\n", text
                value.append(text[i])
                i += 1
        assert name not in labels, text
        labels[name] = "".join(value)
        i += 1
        if text[i] == ",":
            i += 1
    return labels, text[i + 1 :]


def figure(families: dict[str, Family], name: str, **labels: str) -> float | None:
    for got, value in families[name].samples if name in families else []:
        if got == labels:
            return value
    return None


COUNTERS = {
    "captured": "phactor_events_captured_total",
    "sent": "phactor_events_sent_total",
    "retries": "phactor_retries_total",
    "requeued": "phactor_events_requeued_total",
    "restarts": "phactor_restarts_total",
}
GAUGES = {
    "queued": "phactor_events_queued",
    "queued_bytes": "phactor_queued_bytes",
    "in_flight": "phactor_events_in_flight",
}


def check_against(families: dict[str, Family], name: str, stats: dict[str, Any]) -> None:
    for key, metric in {**COUNTERS, **GAUGES}.items():
        assert figure(families, metric, instance=name) == stats[key], (key, stats)
    for reason, count in stats["dropped"].items():
        got = figure(families, "phactor_events_dropped_total", instance=name, reason=reason)
        assert got == count
    reasons = [
        labels["reason"]
        for labels, _ in families.get("phactor_events_dropped_total", Family()).samples
        if labels["instance"] == name
    ]
    assert sorted(reasons) == sorted(stats["dropped"])  # no reason left out, none made up
    circuit = figure(families, "phactor_circuit_open", instance=name)
    assert circuit == (1 if stats["circuit"] == "open" else 0)
    last = figure(families, "phactor_last_success_timestamp_seconds", instance=name)
    assert last == stats["last_success_at"]


def test_every_counter_of_every_running_instance_matches_its_stats(
    devserver: DevServer, start_instance: StartInstance
) -> None:
    delivering = start_instance(
        api_key="phc_metrics_test_key_0123456789", host=devserver.url, flush_at=5,
        flush_interval=0.05, enable_error_tracking=False,
    )  # fmt: skip
    dropping = start_instance(test_mode=True, max_queue_size=3, flush_at=1000, flush_interval=60)
    for i in range(12):
        delivering.capture("ev", "user", {"i": i})
        dropping.capture("ev", "user", {"i": i})
    assert delivering.flush(5.0)
    families = parse(prometheus_text())
    for inst in (delivering, dropping):
        check_against(families, inst.name, assert_ledger(inst))
    assert dropping.stats()["dropped"] == {"queue_full": 9}
    # One instance, by name or by object: only its samples.
    for chosen in (dropping.name, dropping):
        one = parse(prometheus_text(chosen))
        check_against(one, dropping.name, dropping.stats())
        assert {labels["instance"] for f in one.values() for labels, _ in f.samples} == {
            dropping.name
        }


def test_a_stopped_instance_still_renders_and_wrong_arguments_raise(
    start_instance: StartInstance,
) -> None:
    inst = start_instance(test_mode=True)
    inst.capture("ev", "user")
    inst.stop()
    check_against(parse(prometheus_text(inst)), inst.name, inst.stats())
    with pytest.raises(phactor.NotStarted):
        prometheus_text(inst.name)  # stopped: no longer running under its name
    with pytest.raises(TypeError):
        prometheus_text(42)  # type: ignore[arg-type]
    assert CONTENT_TYPE.startswith("text/plain; version=0.0.4")


FLAGS = {
    "definitions_loaded_at": 1_790_000_000.25,
    "definitions_etag_age_s": 12.5,
    "remote_requests": 40,
    "remote_failures": 3,
    "breaker": "open",
}


def test_flags_figures_are_rendered_when_stats_has_them() -> None:
    stats = {"captured": 0, "sent": 0, "dropped": {}, "queued": 0, "queued_bytes": 0,
             "in_flight": 0, "retries": 0, "requeued": 0, "restarts": 0, "circuit": "closed",
             "last_success_at": None, "last_error": None, "flags": FLAGS}  # fmt: skip
    families = parse(render([("web", stats)]))
    assert figure(families, "phactor_flags_remote_requests_total", instance="web") == 40
    assert families["phactor_flags_remote_requests_total"].kind == "counter"
    assert figure(families, "phactor_flags_remote_failures_total", instance="web") == 3
    assert figure(families, "phactor_flags_definitions_etag_age_s", instance="web") == 12.5
    assert families["phactor_flags_definitions_etag_age_s"].kind == "gauge"
    assert figure(families, "phactor_flags_definitions_loaded_at", instance="web") == FLAGS[
        "definitions_loaded_at"
    ]
    assert figure(families, "phactor_flags_breaker", instance="web", state="open") == 1
    assert "phactor_last_success_timestamp_seconds" not in families  # None: no sample
    # A breaker given as a mapping of figures is flattened.
    nested = {**stats, "flags": {"breaker": {"state": "closed", "failures": 0}}}
    families = parse(render([("web", nested)]))
    assert figure(families, "phactor_flags_breaker_failures_total", instance="web") == 0
    assert figure(families, "phactor_flags_breaker_state", instance="web", state="closed") == 1


# --- any names, reasons and figures: escaped, parsed back exactly --------------------------

counts = st.integers(0, 2**63)
figures = st.one_of(counts, st.floats(allow_nan=False, allow_infinity=True, min_value=0))
names = st.text(min_size=1, max_size=20)


@st.composite
def stats_dicts(draw: st.DrawFn) -> dict[str, Any]:
    stats: dict[str, Any] = {key: draw(counts) for key in (*COUNTERS, *GAUGES)}
    stats["dropped"] = draw(st.dictionaries(names, counts, max_size=4))
    stats["circuit"] = draw(st.sampled_from(["open", "closed"]))
    stats["last_success_at"] = draw(st.one_of(st.none(), st.floats(0, 2e9)))
    if draw(st.booleans()):
        stats["flags"] = draw(
            st.fixed_dictionaries(
                {k: figures for k in FLAGS if k != "breaker"},
            ).map(lambda d: {**d, "breaker": "half_open"})
        )
    return stats


@given(st.dictionaries(names, stats_dicts(), min_size=1, max_size=3))
def test_any_instance_name_and_reason_round_trip_through_the_format(
    by_name: dict[str, dict[str, Any]],
) -> None:
    families = parse(render(by_name.items()))
    for name, stats in by_name.items():
        check_against(families, name, stats)
        flags = stats.get("flags")
        if flags:
            got = figure(families, "phactor_flags_remote_requests_total", instance=name)
            want = flags["remote_requests"]
            assert got == want  # exact, inf included
