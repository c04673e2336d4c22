"""After os.fork() the child runs a fresh tree, sends its own events only, and the parent's
queued events are sent once (by the parent). Run in a subprocess so pytest's threads are not forked."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from phactor.devserver import DevServer

FORK_SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    import phactor

    inst = phactor.start(api_key="phc_fork", host=sys.argv[1], flush_at=10000, flush_interval=3600)
    parent = [inst.capture("parent_before_fork", "parent") for _ in range(5)]
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            child = [phactor.capture("child_event", "child") for _ in range(3)]
            ok = phactor.flush(timeout=10)
            stats = phactor.stats()
            phactor.stop(timeout=5)
            report = {"child": child, "child_ok": ok, "child_stats": stats}
        except BaseException as error:
            report = {"error": repr(error)}
        os.write(w, json.dumps(report).encode())
        os._exit(0)
    os.close(w)
    with os.fdopen(r) as pipe:
        child_report = json.loads(pipe.read())
    os.waitpid(pid, 0)
    parent += [inst.capture("parent_after_fork", "parent") for _ in range(2)]
    ok = phactor.stop(timeout=5)
    print(json.dumps({"parent": parent, "ok": ok, "stats": inst.stats(), **child_report}))
    """
)


def test_fork_child_sends_only_its_own_events(devserver: DevServer) -> None:
    result = subprocess.run(
        [sys.executable, "-c", FORK_SCRIPT, devserver.url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert "error" not in report, report
    assert report["ok"] is True and report["child_ok"] is True
    child, parent = report["child"], report["parent"]
    assert None not in child and None not in parent
    # The child's tree was fresh: it counts its own events, none of the parent's.
    child_stats = report["child_stats"]
    assert child_stats["captured"] == 3 and child_stats["sent"] == 3
    assert child_stats["queued"] == 0 and child_stats["dropped"] == {}
    assert report["stats"]["captured"] == 7 and report["stats"]["sent"] == 7
    assert devserver.wait_for(10)
    counts = devserver.uuid_counts()
    assert set(counts) == set(child) | set(parent)
    assert set(counts.values()) == {1}  # the parent's queued events were not sent twice
    assert devserver.count(event="parent_before_fork") == 5
    assert devserver.count(event="child_event") == 3
    assert devserver.count(event="parent_after_fork") == 2


FORK_UNUSED_SCRIPT = textwrap.dedent(
    """
    import os, sys
    import phactor

    phactor.start(api_key="phc_fork", host=sys.argv[1], flush_at=10000, flush_interval=3600)
    phactor.capture("parent_event", "parent")
    for _ in range(2):
        pid = os.fork()
        if pid == 0:
            # A pre-fork worker that exits normally (atexit runs) without using phactor.
            sys.exit(0)
        os.waitpid(pid, 0)
    phactor.stop(timeout=5)
    """
)


def test_forked_children_exiting_never_send_the_parents_events(devserver: DevServer) -> None:
    result = subprocess.run(
        [sys.executable, "-c", FORK_UNUSED_SCRIPT, devserver.url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert devserver.wait_for(1)
    assert devserver.count() == 1
    assert set(devserver.uuid_counts().values()) == {1}


LOCKS_HELD_AT_FORK_SCRIPT = textwrap.dedent(
    """
    import json, os, select, sys
    import phactor

    inst = phactor.start(api_key="phc_fork", host=sys.argv[1], flush_at=10000,
                         flush_interval=3600, enable_error_tracking=False)
    try:
        raise ValueError("before fork")
    except ValueError as error:
        inst.capture_exception(error, "parent")  # builds the caller-thread builder
    builder = inst.__dict__["_error_intake_off"].fallback.__self__
    # As if other parent threads were inside phactor at the moment of the fork.
    held = [inst._buffer._lock, inst._stop_lock, inst._sync_lock, builder.sources._lock,
            builder.limiter._lock if hasattr(builder, "limiter") else None]
    held = [lock for lock in held if lock is not None]
    for lock in held:
        lock.acquire()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            try:
                raise KeyError("in child")
            except KeyError as error:
                uuid = phactor.capture_exception(error, "child")
            report = {"uuid": uuid, "queued": phactor.queue_length(),
                      "ok": phactor.stop(timeout=5), "stats": inst.stats()}
        except BaseException as error:
            report = {"error": repr(error)}
        os.write(w, json.dumps(report).encode())
        os._exit(0)
    for lock in held:
        lock.release()
    os.close(w)
    ready, _, _ = select.select([r], [], [], 15)
    if not ready:
        os.kill(pid, 9)
        report = {"error": "child hung"}
    else:
        report = json.loads(os.read(r, 100000))
    os.waitpid(pid, 0)
    phactor.stop(timeout=5)
    print(json.dumps(report))
    """
)


def test_a_forked_child_never_waits_for_a_lock_a_parent_thread_held(devserver: DevServer) -> None:
    result = subprocess.run(
        [sys.executable, "-c", LOCKS_HELD_AT_FORK_SCRIPT, devserver.url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert "error" not in report, report
    assert report["uuid"] is not None and report["ok"] is True
    assert report["stats"]["captured"] == 1 and report["stats"]["sent"] == 1
    assert devserver.wait_for(2)
    assert devserver.count(event="$exception") == 2
