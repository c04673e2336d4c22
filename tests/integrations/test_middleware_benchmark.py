"""Smoke test of `python -m benchmarks.middleware --quick`: it runs and reports every figure.

It judges no timing (CI machines vary); the figures are in benchmarks/README.md.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_quick_middleware_benchmark_reports_each_figure(tmp_path: Path) -> None:
    for module in ("django", "posthog"):
        pytest.importorskip(module)
    output = tmp_path / "middleware.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), *sys.path])}
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.middleware", "--quick", "--output", str(output)],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    assert "µs added" in proc.stdout.decode()
    added = json.loads(output.read_text())["added_us_per_request"]
    assert set(added) == {
        "django_phactor",
        "django_posthog",
        "asgi_phactor",
        "asgi_posthog",
        "wsgi_phactor",
    }
