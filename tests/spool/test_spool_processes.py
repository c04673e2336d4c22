"""Replay across processes: two starting at once never replay the same journal; a pre-fork
child gets its own journal and never sends the parent's events."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

from conftest import wait_until
from test_spool_kill import accepted, journal_rows, kill, spawn

from phactor.devserver import DevServer

REPLAYER = r"""
import json, sys, time, phactor
inst = phactor.start(
    "killed", api_key="phc_spool_kill_test_key_0123456789", host=sys.argv[1],
    spool_dir=sys.argv[2], flush_at=50, flush_interval=0.05, enable_error_tracking=False,
)
deadline = time.monotonic() + 30
while not inst.flush(5) and time.monotonic() < deadline:
    pass
print(json.dumps(inst.stats()))
inst.stop(5)
"""


def env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))


def test_two_processes_starting_together_replay_a_dead_journal_once(
    devserver: DevServer, tmp_path: Path
) -> None:
    spool_dir, out, n = tmp_path / "spool", tmp_path / "uuids", 400
    devserver.set_mode("down")
    proc = spawn(devserver.url, spool_dir, "always", n, out)
    try:
        assert wait_until(lambda: "done\n" in (out.read_text() if out.exists() else ""), 60)
    finally:
        kill(proc)
    assert journal_rows(spool_dir) == n
    devserver.set_mode("up")
    replayers = [
        subprocess.Popen(
            [sys.executable, "-c", REPLAYER, devserver.url, str(spool_dir)],
            stdout=subprocess.PIPE,
            text=True,
            env=env(),
        )
        for _ in range(2)
    ]
    stats = []
    for p in replayers:
        stdout, _ = p.communicate(timeout=60)
        assert p.returncode == 0
        stats.append(json.loads(stdout.strip().splitlines()[-1]))
    # One of them adopted the journal, whole; the other found it locked or gone.
    assert sorted(s["replayed"] for s in stats) == [0, n], stats
    counts = Counter(e["uuid"] for e in devserver.events())
    assert set(counts) == set(accepted(out)) and set(counts.values()) == {1}
    assert list(spool_dir.glob("*.journal")) == []


PREFORK = r"""
import json, os, sys, phactor
inst = phactor.start(
    "forked", api_key="phc_spool_kill_test_key_0123456789", host=sys.argv[1],
    spool_dir=sys.argv[2], flush_at=10, flush_interval=0.05, max_retries=1,
    retry_base_delay=0.01, retry_max_delay=0.05, enable_error_tracking=False,
)
parent = [inst.capture("parent", "u", {"i": i}) for i in range(50)]
pid = os.fork()
if pid == 0:
    child = [inst.capture("child", "u", {"i": i}) for i in range(30)]
    inst.stop(0.5)  # the endpoint is down: left in the child's own journal
    with open(sys.argv[3], "w") as f:
        json.dump(child, f)
    os._exit(0)
os.waitpid(pid, 0)
inst.stop(0.5)
print(json.dumps(parent))
"""


def test_a_prefork_child_has_its_own_journal(devserver: DevServer, tmp_path: Path) -> None:
    spool_dir = tmp_path / "spool"
    devserver.set_mode("down")
    proc = subprocess.run(
        [sys.executable, "-c", PREFORK, devserver.url, str(spool_dir), str(tmp_path / "child")],
        capture_output=True, text=True, timeout=60, env=env(),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    parent = json.loads(proc.stdout.strip().splitlines()[-1])
    child = json.loads((tmp_path / "child").read_text())
    journals = sorted(spool_dir.glob("forked.*.journal"))
    assert len(journals) == 2  # one per process
    devserver.set_mode("up")
    replay = subprocess.run(
        [sys.executable, "-c", REPLAYER.replace('"killed"', '"forked"'), devserver.url,
         str(spool_dir)],
        capture_output=True, text=True, timeout=60, env=env(),
    )  # fmt: skip
    assert replay.returncode == 0, replay.stderr[-3000:]
    counts = Counter(e["uuid"] for e in devserver.events())
    # Each event once: the child's journal never held the parent's 50.
    assert set(counts) == set(parent) | set(child) and set(counts.values()) == {1}
    assert json.loads(replay.stdout.strip().splitlines()[-1])["replayed"] == 80
