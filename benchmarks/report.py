"""The output of a run: the figures as a terminal or Markdown table, the machine, the versions."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

from benchmarks.clients import CLIENTS

__all__ = ["machine", "markdown_table", "text_table", "update_readme", "versions"]

README_START = "<!-- results:start -->"
README_END = "<!-- results:end -->"


def fmt(v: Any, unit: str = "") -> str:
    """A table cell."""
    if v is None:
        return "n/a"
    if isinstance(v, str):
        return v
    if isinstance(v, float):
        if abs(v) >= 1000:
            return f"{v:,.0f}"
        if abs(v) >= 100:
            return f"{v:.0f}"
        if abs(v) >= 10:
            return f"{v:.1f}"
        return f"{v:.2f}"
    return str(v)


def table_rows(figures: list[dict[str, Any]]) -> list[list[str]]:
    """Header plus one row per figure, as strings."""
    rows = [["figure", "unit", "phactor", "posthog", "ratio", "target", "met"]]
    for f in figures:
        met = {True: "yes", False: "NO", None: "n/a" if f["target"] else ""}[f["target_met"]]
        rows.append(
            [
                f["label"],
                f["unit"],
                fmt(f.get("phactor")),
                fmt(f.get("posthog")),
                fmt(f["ratio"]) if f["ratio"] is not None else "",
                f["target"],
                met,
            ]
        )
    return rows


def text_table(figures: list[dict[str, Any]]) -> str:
    """A fixed-width table for the terminal."""
    rows = table_rows(figures)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for n, r in enumerate(rows):
        lines.append(
            "  ".join(
                c.ljust(widths[i]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(r)
            ).rstrip()
        )
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown_table(figures: list[dict[str, Any]]) -> str:
    """The same table in Markdown (for the README)."""
    rows = table_rows(figures)
    out = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    out += ["| " + " | ".join(c.replace("|", "/") for c in r) + " |" for r in rows[1:]]
    return "\n".join(out)


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu_model": cpu,
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
    }


def versions() -> dict[str, str | None]:
    """Installed versions of both clients (from package metadata, without importing them)."""
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {}
    for name in CLIENTS:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def update_readme(readme: Path, meta: dict[str, Any], figures: list[dict[str, Any]]) -> None:
    """Replace the results block of benchmarks/README.md with this run's table."""
    text = readme.read_text()
    if README_START not in text or README_END not in text:
        return
    m = meta["machine"]
    block = (
        f"{README_START}\n"
        f"Measured {meta['date']} on {m['nproc']} x {m['cpu_model']}, Python {m['python']} "
        f"({m['platform']}); phactor {meta['versions']['phactor']}, "
        f"posthog {meta['versions']['posthog']}; {meta['mode']} mode, "
        f"{meta['rounds']} round(s).\n\n"
        f"{markdown_table(figures)}\n{README_END}"
    )
    head, rest = text.split(README_START, 1)
    tail = rest.split(README_END, 1)[1]
    readme.write_text(head + block + tail)
