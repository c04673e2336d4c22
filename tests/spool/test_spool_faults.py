"""Spool faults: a corrupt journal, a directory that cannot be written, a disk that fills up.

Each one costs the app nothing but one ERROR log and a counted reason: the instance starts
and keeps delivering from memory.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import assert_ledger

from phactor.devserver import DevServer

API_KEY = "phc_spool_faults_test_key_0123456789"


def fast(host: str, **extra):
    options = {
        "api_key": API_KEY, "host": host, "flush_at": 20, "flush_interval": 0.05,
        "max_retries": 1, "retry_base_delay": 0.01, "retry_max_delay": 0.05,
        "enable_error_tracking": False,
    }  # fmt: skip
    options.update(extra)
    return options


def errors(caplog: pytest.LogCaptureFixture, name: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if name in r.getMessage() and r.levelno == logging.ERROR]


def test_a_corrupt_journal_is_moved_aside_and_the_instance_starts(
    devserver: DevServer, tmp_path: Path, start_instance, instance_name: str, caplog
) -> None:
    caplog.set_level(logging.INFO, logger="phactor")
    bad = tmp_path / f"{instance_name}.4242-1.journal"
    bad.write_bytes(b"not a database at all " * 200)
    inst = start_instance(**fast(devserver.url, spool_dir=str(tmp_path)))
    uuids = [inst.capture("ev", "u", {"i": i}) for i in range(30)]
    assert inst.flush(10)
    assert {e["uuid"] for e in devserver.events()} == set(uuids)
    assert not bad.exists() and Path(str(bad) + ".corrupt").exists()
    assert len(errors(caplog, "spool_corrupt_journal")) == 1
    assert_ledger(inst)


def test_a_directory_that_cannot_be_used_falls_back_to_memory(
    devserver: DevServer, tmp_path: Path, start_instance, caplog
) -> None:
    caplog.set_level(logging.INFO, logger="phactor")
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    # Its parent is a file: nothing can be created there (as a read-only mount, for root too).
    inst = start_instance(**fast(devserver.url, spool_dir=str(blocker / "spool")))
    uuids = [inst.capture("ev", "u", {"i": i}) for i in range(30)]
    assert all(uuids)
    assert inst.flush(10)
    assert {e["uuid"] for e in devserver.events()} == set(uuids)
    stats = assert_ledger(inst)
    assert stats["spool_errors"] == 1 and stats["sent"] == 30
    assert len(errors(caplog, "spool_unavailable")) == 1


FULL_DISK_CHILD = r"""
import json, logging, resource, signal, sys, phactor
logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG
resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))
inst = phactor.start(
    "full", api_key="phc_spool_faults_test_key_0123456789", host=sys.argv[1],
    spool_dir=sys.argv[2], flush_at=50, flush_interval=0.05, enable_error_tracking=False,
    spool_interval=0.01,
)
uuids = [inst.capture("ev", "u", {"pad": "x" * 500, "i": i}) for i in range(2000)]
ok = inst.flush(30)
print(json.dumps({"ok": ok, "accepted": sum(1 for u in uuids if u), "stats": inst.stats()}))
inst.stop(5)
"""


def test_a_full_disk_falls_back_to_memory_with_one_error(
    devserver: DevServer, tmp_path: Path
) -> None:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.run(
        [sys.executable, "-c", FULL_DISK_CHILD, devserver.url, str(tmp_path / "spool")],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    stats = result["stats"]
    assert result["accepted"] == 2000
    assert stats["spool_errors"] == 1
    accounted = stats["sent"] + sum(stats["dropped"].values()) + stats["queued"]
    assert stats["captured"] == accounted + stats["in_flight"] + stats["spooled"]
    # Nothing was disk-only (the queue had room): every event was delivered from memory.
    assert stats["sent"] == 2000 and result["ok"]
    assert len({e["uuid"] for e in devserver.events()}) == 2000
    failed = [line for line in proc.stderr.splitlines() if "spool_failed" in line]
    assert len(failed) == 1 and failed[0].startswith("ERROR"), proc.stderr[-3000:]
    # Memory took over: no journal is left for a next process to deliver again.
    assert list((tmp_path / "spool").glob("*.journal")) == []
