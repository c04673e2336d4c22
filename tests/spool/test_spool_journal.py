"""phactor.spool.Journal: the on-disk journal API (append, delete, read oldest, evict, adopt)."""

from __future__ import annotations

import os
import subprocess
import sys

from hypothesis import given
from hypothesis import strategies as st

from phactor.spool import Journal, JournalError, adopt_dead, dead_journals, journal_path


def test_append_read_delete_evict(tmp_path):
    j = Journal(str(tmp_path / "a.1-1.journal"))
    j.append([(1, b"one"), (2, b"two"), (3, b"three")])
    assert j.read_oldest(2) == [(1, b"one"), (2, b"two")]
    j.delete([2])
    assert j.read_oldest(10, after=1) == [(3, b"three")]
    assert j.evict_oldest(1) == (1, 3)
    assert j.count() == (1, 5)
    j.close()
    assert os.path.exists(j.path)  # not empty: kept for the next process
    j2 = Journal(j.path)
    assert j2.read_oldest(10) == [(3, b"three")]
    j2.delete([3])
    j2.close()
    assert not os.path.exists(j2.path)  # empty: removed


def test_a_live_journal_is_locked(tmp_path):
    path = str(tmp_path / "a.1-1.journal")
    j = Journal(path)
    try:
        Journal(path)
    except JournalError as error:
        assert "locked" in str(error)
    else:
        raise AssertionError("a second owner opened a locked journal")
    # Nor is it adopted while its owner lives.
    other = Journal(str(tmp_path / "a.2-1.journal"))
    assert adopt_dead(path, other, lambda n: 1) == (0, None)
    j.close()
    other.close()


@given(st.lists(st.binary(min_size=1, max_size=50), max_size=40), st.integers(1, 1000))
def test_adoption_moves_every_row_in_order(tmp_path_factory, payloads, start):
    d = tmp_path_factory.mktemp("spool")
    dead = Journal(journal_path(str(d), "inst", 11, 1))
    dead.append([(100 + i, p) for i, p in enumerate(payloads)])
    dead.close()
    own = Journal(journal_path(str(d), "inst", 12, 1))
    found = dead_journals(str(d), "inst", own.path)
    assert found == ([journal_path(str(d), "inst", 11, 1)] if payloads else [])
    for path in found:
        assert adopt_dead(path, own, lambda n: start) == (len(payloads), None)
        assert not os.path.exists(path)
    assert own.read_oldest(1000) == [(start + i, p) for i, p in enumerate(payloads)]
    own.close()


def test_a_killed_owner_leaves_an_adoptable_journal(tmp_path):
    # The owner dies with SIGKILL right after a commit: its lock goes with it, the rows stay.
    code = (
        "import os, sys, signal\n"
        "from phactor.spool import Journal\n"
        "j = Journal(sys.argv[1])\n"
        "j.append([(i, b'x%d' % i) for i in range(1, 101)])\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    path = journal_path(str(tmp_path), "inst", 99999999)
    proc = subprocess.run([sys.executable, "-c", code, path], timeout=30, env=dict(os.environ))
    assert proc.returncode == -9
    own = Journal(journal_path(str(tmp_path), "inst", 1))
    assert adopt_dead(path, own, lambda n: 1) == (100, None)
    assert [d for _, d in own.read_oldest(1000)] == [b"x%d" % i for i in range(1, 101)]
    own.close()


def test_a_corrupt_journal_is_moved_aside(tmp_path):
    path = journal_path(str(tmp_path), "inst", 5)
    with open(path, "wb") as f:
        f.write(b"this is not a database" * 100)
    own = Journal(journal_path(str(tmp_path), "inst", 6))
    moved, aside = adopt_dead(path, own, lambda n: 1)
    assert moved == 0 and aside == path + ".corrupt"
    assert os.path.exists(aside) and not os.path.exists(path)
    own.close()


def test_inspect_command(tmp_path):
    path = journal_path(str(tmp_path), "inst", 7)
    j = Journal(path)
    j.append([(1, b'{"event":"a","uuid":"u1"}'), (2, b'{"event":"b","uuid":"u2"}')])
    out = subprocess.run(
        [sys.executable, "-m", "phactor.spool", "inspect", path],
        capture_output=True, text=True, timeout=30, env=dict(os.environ),
    )  # fmt: skip
    j.close()
    assert out.returncode == 0, out.stderr
    assert "events: 2" in out.stdout and "'uuid': 'u1'" in out.stdout and "'uuid': 'u2'" in out.stdout
    assert "owner_alive: True" in out.stdout
