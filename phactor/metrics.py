"""Prometheus metrics: `prometheus_text()` renders every running instance's `stats()`.

The Prometheus text exposition format 0.0.4, written by hand (no client library needed): one
`# HELP` and one `# TYPE` line per metric family, counters named `..._total`, every sample
labelled `instance="<name>"` (and `reason="<reason>"` for drops), label values escaped
(backslash, double quote, newline). Serve it from any web framework with `CONTENT_TYPE`
(docs/metrics.md shows Django and FastAPI endpoints). `render` is the pure part: stats dicts in,
text out.
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Iterable, Mapping
from typing import Any

from phactor import registry
from phactor.instance import Instance

__all__ = ["CONTENT_TYPE", "escape_help", "escape_label", "prometheus_text", "render"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""The Content-Type of the text `prometheus_text` returns."""

# (stats key, metric name, type, help). Counters end in _total.
_FIGURES: tuple[tuple[str, str, str, str], ...] = (
    ("captured", "phactor_events_captured_total", "counter", "Events accepted by capture calls."),
    ("sent", "phactor_events_sent_total", "counter", "Events delivered to PostHog."),
    ("queued", "phactor_events_queued", "gauge", "Events waiting in the queue."),
    ("queued_bytes", "phactor_queued_bytes", "gauge", "Bytes of the events waiting in the queue."),
    ("in_flight", "phactor_events_in_flight", "gauge", "Events in a request being sent now."),
    ("retries", "phactor_retries_total", "counter", "Batch requests retried after a failure."),
    ("requeued", "phactor_events_requeued_total", "counter", "Events put back in the queue."),
    ("restarts", "phactor_restarts_total", "counter", "Actor restarts by the supervisor."),
)
_DROPPED = ("phactor_events_dropped_total", "Events dropped, by reason.")
_CIRCUIT = ("phactor_circuit_open", "1 while the delivery circuit breaker is open, else 0.")
_LAST_SUCCESS = (
    "phactor_last_success_timestamp_seconds",
    "When a batch was last delivered (seconds since the epoch).",
)
# stats()["flags"] figures whose name ends so are counters; every other number is a gauge.
_COUNTER_SUFFIXES = ("_total", "requests", "failures", "errors", "hits", "misses", "evictions")
_NAME_BAD = re.compile(r"[^a-zA-Z0-9_]")


def prometheus_text(instance: str | Instance | None = None) -> str:
    """The Prometheus text (format 0.0.4) of every running instance's counters, or of one.

    `instance`: None for every running instance, else a name or an `Instance` (a stopped one
    too: its final figures). An unknown name raises `NotStarted`; another type TypeError.
    """
    if instance is None:
        chosen: list[Instance] = sorted(registry.running(), key=lambda inst: inst.name)
    elif isinstance(instance, Instance):
        chosen = [instance]
    elif isinstance(instance, str):
        chosen = [registry.lookup(instance)]
    else:
        kind = type(instance).__name__
        raise TypeError(f"instance must be a name, an Instance or None, got {kind}")
    return render((inst.name, inst.stats()) for inst in chosen)


def render(stats_by_instance: Iterable[tuple[str, Mapping[str, Any]]]) -> str:
    """The exposition text of `(instance name, stats())` pairs (pure: no I/O, no lookups)."""
    families: dict[str, tuple[str, str, list[str]]] = {}

    def sample(name: str, kind: str, help_text: str, labels: str, value: Any) -> None:
        family = families.setdefault(name, (kind, help_text, []))
        if family[0] == kind:  # a figure of another type under the same name is left out
            family[2].append(f"{name}{{{labels}}} {_number(value)}")

    for inst_name, stats in stats_by_instance:
        inst = f'instance="{escape_label(inst_name)}"'
        for key, name, kind, help_text in _FIGURES:
            value = stats.get(key)
            if _is_number(value):
                sample(name, kind, help_text, inst, value)
        for reason, count in sorted((stats.get("dropped") or {}).items()):
            if _is_number(count):
                labels = f'{inst},reason="{escape_label(str(reason))}"'
                sample(_DROPPED[0], "counter", _DROPPED[1], labels, count)
        circuit = stats.get("circuit")
        if isinstance(circuit, str):
            sample(_CIRCUIT[0], "gauge", _CIRCUIT[1], inst, 1 if circuit == "open" else 0)
        last = stats.get("last_success_at")
        if _is_number(last):
            sample(_LAST_SUCCESS[0], "gauge", _LAST_SUCCESS[1], inst, last)
        flags = stats.get("flags")
        if isinstance(flags, Mapping):
            for key, value in _flat(flags, "phactor_flags"):
                if isinstance(value, str):
                    help_text = f"Flags: {key[len('phactor_flags_'):]} (the state is the label)."
                    sample(key, "gauge", help_text, f'{inst},state="{escape_label(value)}"', 1)
                elif key.endswith(_COUNTER_SUFFIXES):
                    name = key if key.endswith("_total") else f"{key}_total"
                    sample(name, "counter", f"Flags: {key[len('phactor_flags_'):]}.", inst, value)
                else:
                    sample(key, "gauge", f"Flags: {key[len('phactor_flags_'):]}.", inst, value)
    lines: list[str] = []
    for name, (kind, help_text, samples) in families.items():
        lines.append(f"# HELP {name} {escape_help(help_text)}")
        lines.append(f"# TYPE {name} {kind}")
        lines.extend(samples)
    return "".join(line + "\n" for line in lines)


def _flat(figures: Mapping[Any, Any], prefix: str, depth: int = 0) -> Iterable[tuple[str, Any]]:
    """(metric name, number or state text) for each figure, nested mappings flattened."""
    for key, value in sorted(figures.items(), key=lambda item: str(item[0])):
        name = f"{prefix}_{_NAME_BAD.sub('_', str(key))}"
        if isinstance(value, bool):
            yield name, int(value)
        elif _is_number(value) or isinstance(value, str):
            yield name, value
        elif isinstance(value, Mapping) and depth < 2:
            yield from _flat(value, name, depth + 1)


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _number(value: float) -> str:
    if isinstance(value, numbers.Integral):
        return str(int(value))
    value = float(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value)


def escape_label(value: str) -> str:
    """A label value as the format writes it: backslash, double quote and newline escaped
    (a lone surrogate, which UTF-8 cannot carry, becomes U+FFFD)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        value = value.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def escape_help(text: str) -> str:
    """A HELP text as the format writes it: backslash and newline escaped."""
    return text.replace("\\", "\\\\").replace("\n", "\\n")
