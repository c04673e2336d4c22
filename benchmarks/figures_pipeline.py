"""Figures of the pipeline cases (issue 16 items 4 and 8): threads capturing at once, and the
host app's cost. Rows compared as phactor/posthog are plain `Figure`s (`PIPELINE_FIGURES`);
the per-client targets are judged in `pipeline_checks`."""

from __future__ import annotations

from typing import Any

from benchmarks.clients import CLIENTS

__all__ = ["HOST_RUNS", "pipeline_checks", "pipeline_figures"]

HOST_RUNS = (
    ("host_2k", "~2k events/s, gzip off"),
    ("host_2k_gzip", "~2k events/s, gzip on"),
    ("host_20k", "~20k events/s, gzip off"),
    ("host_20k_gzip", "~20k events/s, gzip on"),
)


def pipeline_figures(figure: Any) -> list[Any]:
    """The rows compared as phactor/posthog; `figure` is `figures.Figure` (no import cycle)."""
    rows = [
        figure(
            f"capture_threads_{n}t",
            f"capture() from {n} thread{'s' if n > 1 else ''}: combined calls/s",
            "calls/s",
            "capture_threads",
            f"rate_{n}t",
            better="higher",
        )
        for n in (1, 4, 16)
    ]
    for run, label in HOST_RUNS:
        rows.append(
            figure(
                f"{run}_slowdown",
                f"CPU-bound app at {label}: wall-time slowdown",
                "%",
                run,
                "slowdown_pct",
                target=0.5 if run.startswith("host_2k") else None,
            )
        )
        rows.append(
            figure(
                f"{run}_off_cpu",
                "  app thread off-CPU per s of work",
                "ms",
                run,
                "off_cpu_ms_per_s",
            )
        )
        rows.append(
            figure(
                f"{run}_background",
                "  client's other threads' CPU per s",
                "ms",
                run,
                "background_cpu_ms_per_s",
            )
        )
    rows.append(
        figure(
            "host_10k_queue_full",
            "CPU-bound app at ~10k events/s, default queue: refused",
            "events",
            "host_10k_queue",
            "refused",
        )
    )
    return rows


def _median(rounds: list[dict[str, Any]], field: str) -> float | None:
    values = sorted(v for r in rounds if isinstance(v := r.get(field), int | float))
    if not values:
        return None
    mid = len(values) // 2
    return float(values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2)


def pipeline_checks(cases: dict[str, dict[str, list[dict[str, Any]]]]) -> list[dict[str, Any]]:
    """Per-client targets: 4/16-thread rate >= 0.8 of 1 thread, 2k/s slowdown <= 5 %, no
    `queue_full` at 10k/s with the default queue."""
    rows: list[dict[str, Any]] = []

    def row(rid: str, label: str, unit: str, target: str, better: str = "lower") -> dict[str, Any]:
        r: dict[str, Any] = {"id": rid, "label": label, "unit": unit, "better": better}
        r.update({"target": target, "ratio": None, "target_met": None})
        rows.append(r)
        return r

    for n in (4, 16):
        r = row(
            f"capture_threads_{n}t_of_1t",
            f"  {n} threads / 1 thread",
            "x",
            "phactor >= 0.8",
            "higher",
        )
        for client in CLIENTS:
            r[client] = _median(cases.get("capture_threads", {}).get(client, []), f"of_1t_{n}t")
        if r.get("phactor") is not None:
            r["target_met"] = r["phactor"] >= 0.8
    for run, label in HOST_RUNS[:2]:
        r = row(f"{run}_slowdown_abs", f"  slowdown at {label}", "%", "phactor <= 5")
        for client in CLIENTS:
            r[client] = _median(cases.get(run, {}).get(client, []), "slowdown_pct")
        if r.get("phactor") is not None:
            r["target_met"] = r["phactor"] <= 5.0
    r = row("host_10k_no_queue_full", "  ~10k events/s: refused", "events", "phactor == 0")
    for client in CLIENTS:
        r[client] = _median(cases.get("host_10k_queue", {}).get(client, []), "refused")
    if r.get("phactor") is not None:
        r["target_met"] = r["phactor"] == 0
    return rows
