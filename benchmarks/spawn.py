"""The parent's side of the child processes: their environment, running one, reading its result.

Every (round, run, client) is its own fresh interpreter (`child.py` is its body), and so is every
`import` timing and the check that phactor's runtime can start at all.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.child import RESULT_PREFIX

__all__ = ["REPO_ROOT", "child_env", "import_time", "phactor_availability", "run_child"]

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_ROOT = PACKAGE_DIR.parent


def child_env() -> dict[str, str]:
    """The environment of every child: loopback never proxied, no posthog env overrides."""
    env = dict(os.environ)
    for k in ("POSTHOG_CAPTURE_MODE", "POSTHOG_CAPTURE_COMPRESSION", "POSTHOG_RELEASE_ID"):
        env.pop(k, None)
    # Both packages must import from cached bytecode, as an installed wheel does. posthog's
    # wheel was byte-compiled by pip; phactor (an editable checkout here) only gets .pyc files
    # if the environment allows writing them, so a machine-wide PYTHONDONTWRITEBYTECODE=1 would
    # charge phactor a full compile on every import.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
    return env


def run_child(spec: dict[str, Any], timeout: float, quiet_stderr: bool = False) -> dict[str, Any]:
    """Run one case in a fresh interpreter; its result dict, or {"error": ...}."""
    cmd = [sys.executable, "-m", "benchmarks.run", "--child", json.dumps(spec)]
    with tempfile.TemporaryFile() as err:
        try:
            proc = subprocess.run(
                cmd,
                cwd=REPO_ROOT,
                env=child_env(),
                stdout=subprocess.PIPE,
                # An outage makes clients log one warning per dropped event: millions of lines.
                stderr=subprocess.DEVNULL if quiet_stderr else err,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return {"error": f"timed out after {timeout:.0f} s"}
        for line in reversed(proc.stdout.decode(errors="replace").splitlines()):
            if line.startswith(RESULT_PREFIX):
                return json.loads(line[len(RESULT_PREFIX) :])
        err.seek(0)
        tail = err.read()[-1500:].decode(errors="replace")
        return {"error": f"exit code {proc.returncode}; stderr tail: {tail}"}


def import_time(module: str, timeout: float) -> float | None:
    """Seconds `import <module>` takes in a fresh interpreter (bytecode already cached)."""
    code = (
        "import time; t = time.perf_counter(); import " + module + "; "
        "print(time.perf_counter() - t)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        env=child_env(),
        capture_output=True,
        timeout=timeout,
        check=False,
    )
    if proc.returncode != 0:
        return None
    return float(proc.stdout.decode().strip().splitlines()[-1])


# The first instance as an app creates it: phactor with its defaults but error tracking and
# gzip (both off in posthog), posthog without local evaluation (no personal key anyway).
_BOOT = {
    "phactor": "import phactor; phactor.start(api_key='phc_boot', host=HOST, gzip=False, "
    "enable_error_tracking=False)",
    "posthog": "import posthog; posthog.Client('phc_boot', host=HOST, "
    "enable_local_evaluation=False)",
}


def boot_time(module: str, host: str, timeout: float) -> float | None:
    """Seconds `import <module>` plus its first instance take in a fresh interpreter."""
    code = (
        f"import os, time; HOST = {host!r}; t = time.perf_counter(); {_BOOT[module]}; "
        "print(time.perf_counter() - t, flush=True); os._exit(0)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        env=child_env(),
        capture_output=True,
        timeout=timeout,
        check=False,
    )
    if proc.returncode != 0:
        return None
    return float(proc.stdout.decode().strip().splitlines()[-1])


def phactor_availability(timeout: float) -> str | None:
    """None when phactor's runtime is importable and startable, else the reason (in a child)."""
    code = (
        "from benchmarks.client_phactor import availability; r = availability(); "
        "print('OK' if r is None else r)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        env=child_env(),
        capture_output=True,
        timeout=timeout,
        check=False,
    )
    out = proc.stdout.decode().strip()
    if proc.returncode != 0:
        return f"availability check failed: {proc.stderr.decode()[-500:]}"
    return None if out.endswith("OK") else out
