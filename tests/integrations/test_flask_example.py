"""examples/flask_app.py runs as written: real HTTP on loopback, events at the devserver."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_the_flask_example_serves_requests_each_in_its_own_context() -> None:
    pytest.importorskip("flask")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *sys.path])}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "flask_app.py")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    assert lines[0] == "checkout answered 500"
    assert sorted(lines[1:]) == sorted(
        [
            "added_to_cart  user-1  {'item': 'book', 'coupon': 'SPRING', "
            "'$pathname': '/cart/book', '$session_id': 'session-1'}",
            # The coupon set by the first request did not reach the second.
            "added_to_cart  user-2  {'item': 'pen', '$pathname': '/cart/pen'}",
            "$exception     user-1  {'$pathname': '/checkout', '$session_id': 'session-1'}",
        ]
    )
