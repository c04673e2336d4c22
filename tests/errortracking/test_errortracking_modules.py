"""The layout of `phactor.errortracking`: the pure core loads alone, the capture side on demand.

The package is split by concern (see its docstring): a pure core (`wire`, `frames`,
`exceptions`, `formatting`) that never imports the capture side (guards, rate limit, snapshots,
logging handler, except hooks, event builder, LoggerHandler actor), and `import phactor` loads
neither. These are checked in a fresh interpreter, where `sys.modules` shows what an import
really pulled in.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import phactor.errortracking

PURE_CORE = {"wire", "frames", "exceptions", "formatting"}
CAPTURE_SIDE = {
    "guards",
    "ratelimit",
    "snapshot",
    "hooks",
    "handler",
    "builder",
    "actor",
    "loop",
    "routing",
}
# The Instance methods and the module-level capture_exception, imported with Instance.
INSTANCE_SIDE = {"methods"}


def loaded_after(statement: str) -> set[str]:
    """The `phactor.errortracking` submodules loaded by `statement` in a fresh interpreter."""
    code = (
        f"{statement}\n"
        "import json, sys\n"
        "prefix = 'phactor.errortracking.'\n"
        "print(json.dumps([m[len(prefix):] for m in sys.modules if m.startswith(prefix)]))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        env=dict(os.environ),
        capture_output=True,
        timeout=60,
        check=True,
    )
    return set(json.loads(proc.stdout.decode().splitlines()[-1]))


def test_every_module_of_the_package_has_a_place_in_the_layout():
    package_dir = Path(phactor.errortracking.__file__).parent
    modules = {path.stem for path in package_dir.glob("*.py")} - {"__init__"}
    assert modules == PURE_CORE | CAPTURE_SIDE | INSTANCE_SIDE, (
        "place a new errortracking module in PURE_CORE or CAPTURE_SIDE above"
    )


def test_the_pure_core_loads_without_the_capture_side():
    loaded = loaded_after("import phactor.errortracking.formatting")
    assert loaded >= PURE_CORE
    assert not loaded & CAPTURE_SIDE


def test_import_phactor_loads_neither_the_core_nor_the_capture_side():
    loaded = loaded_after("import phactor")
    assert not loaded & (PURE_CORE | CAPTURE_SIDE)


def test_start_loads_the_capture_side_and_only_instrument_asyncio_loads_the_asyncio_hook():
    loaded = loaded_after("import phactor\nphactor.start('layout', test_mode=True).stop()")
    assert loaded >= PURE_CORE | (CAPTURE_SIDE - {"loop"})
    assert "loop" not in loaded
