"""The README demo and the examples run as written (each in its own interpreter)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run_example(name: str) -> str:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / name)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def test_demo_prints_what_arrived_for_each_project():
    out = run_example("demo.py")
    assert "8 events arrived for phc_web_project" in out
    assert "3 events arrived for phc_billing_project" in out
    assert "$exception       user-2   {'type': 'ValueError', 'value': 'card declined'}" in out
    assert "'logger_handler': True" in out


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("boot_at_app_start.py", "page_viewed grace /"),
        ("named_instance.py", "$set user-42 {'last_export': 'csv'}"),
        ("two_projects.py", "running after stopping 'product': ['internal']"),
    ],
)
def test_examples_run(name: str, expected: str):
    assert expected in run_example(name)
