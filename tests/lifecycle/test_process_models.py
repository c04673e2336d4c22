"""Process models: every way a real process forks, spawns workers, gets signalled and ends.

Each test runs a script in a subprocess (pytest's own threads must not be forked, and a
signal or a hang must not reach the test runner) against a real loopback DevServer, and
counts what arrived against what the script captured. Every run is bounded by a timeout: a
hang on the unfixed code shows up as a failure, never as a stuck suite.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import textwrap

import pytest

from phactor.devserver import DevServer

# The child scripts' own bound: a hang in the code under test must fail the test, not the suite.
SCRIPT_TIMEOUT = 60


def run_script(script: str, *args: str, timeout: float = SCRIPT_TIMEOUT) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            [sys.executable, "-c", textwrap.dedent(script), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as expired:
        pytest.fail(f"the script hung (> {timeout} s); stderr: {expired.stderr!r}")


def last_json(result: subprocess.CompletedProcess[str]) -> dict:
    assert result.stdout.strip(), result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


# --- os.fork with busy threads ---------------------------------------------------------------

FORK_BUSY_SCRIPT = """
    import faulthandler, json, os, select, signal, sys, threading, time
    import phactor

    # A hung child dumps its threads' stacks on SIGUSR2 (to stderr) before it is killed.
    faulthandler.register(signal.SIGUSR2, all_threads=True)

    url, forks = sys.argv[1], int(sys.argv[2])
    inst = phactor.start(api_key="phc_fork", host=url, flush_at=50, flush_interval=3600)
    stop = threading.Event()
    counts = [0] * 4

    def hammer(i):
        while not stop.is_set():
            for _ in range(50):
                if inst.capture("parent_event", f"p{i}") is not None:
                    counts[i] += 1
            stop.wait(0.002)  # a pause so the Senders keep up: the point is a busy lock

    threads = [threading.Thread(target=hammer, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()

    CHILD = '''
    first = {"stats": phactor.stats(), "queue_length": phactor.queue_length(),
             "instances": phactor.instances()}
    first["children"] = phactor.instance().children()
    with phactor.context({"in_child": True}):
        first["context"] = phactor.get_context()
    uuids = [phactor.capture("child_event", "child") for _ in range(10)]
    ok = phactor.flush(timeout=10)
    report = {"first": first, "uuids": uuids, "ok": ok, "stats": phactor.stats(),
              "stopped": phactor.stop(timeout=5)}
    '''
    reports = []
    for _ in range(forks):
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(r)
            try:
                exec(CHILD)
            except BaseException as error:
                report = {"error": repr(error)}
            os.write(w, json.dumps(report).encode())
            os._exit(0)
        os.close(w)
        # The child must answer promptly: a deadlock on a lock copied while held is a hang.
        ready, _, _ = select.select([r], [], [], 15)
        if not ready:
            os.kill(pid, signal.SIGUSR2)
            time.sleep(1)
            os.kill(pid, 9)
            reports.append({"error": "child hung"})
        else:
            with os.fdopen(r) as pipe:
                reports.append(json.loads(pipe.read()))
        os.waitpid(pid, 0)
    stop.set()
    for t in threads:
        t.join()
    ok = phactor.stop(timeout=10)
    print(json.dumps({"reports": reports, "captured": sum(counts), "ok": ok,
                      "stats": inst.stats()}))
"""


def test_fork_while_threads_capture_gives_the_child_its_own_state(devserver: DevServer) -> None:
    forks = 3
    result = run_script(FORK_BUSY_SCRIPT, devserver.url, str(forks))
    assert result.returncode == 0, result.stderr
    out = last_json(result)
    for report in out["reports"]:
        assert "error" not in report, (report, result.stderr)
        first = report["first"]
        # Every entry point sees the child's own (empty) state, never the parent's queue.
        assert first["stats"]["captured"] == 0, first
        assert first["stats"]["queued"] == 0 and first["stats"]["in_flight"] == 0, first
        assert first["queue_length"] == 0
        assert first["instances"] == ["default"]
        assert first["children"] and all(first["children"].values()), first
        assert first["context"] == {"in_child": True}
        assert report["ok"] is True and report["stopped"] is True
        assert None not in report["uuids"]
        stats = report["stats"]
        assert stats["captured"] == 10 and stats["sent"] == 10 and stats["dropped"] == {}
    assert out["ok"] is True
    stats = out["stats"]
    assert stats["captured"] == stats["sent"] + sum(stats["dropped"].values()), stats
    assert stats["sent"] == out["captured"] - stats["dropped"].get("shutdown", 0), stats
    total = stats["sent"] + 10 * forks
    assert devserver.wait_for(total, timeout=10)
    assert devserver.count(event="child_event") == 10 * forks
    assert devserver.count(event="parent_event") == stats["sent"]
    assert set(devserver.uuid_counts().values()) == {1}


# --- multiprocessing (fork start method) -----------------------------------------------------

MULTIPROCESSING_SCRIPT = """
    import json, multiprocessing, sys
    import phactor

    url, mode = sys.argv[1], sys.argv[2]
    phactor.start(api_key="phc_mp", host=url, flush_at=10000, flush_interval=3600)

    def work(i):
        for _ in range(4):
            phactor.capture("child_event", f"worker-{i}")
        return 4

    ctx = multiprocessing.get_context("fork")
    if mode == "process":
        procs = [ctx.Process(target=work, args=(i,)) for i in range(10)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(30)
        total = 4 * sum(p.exitcode == 0 for p in procs)
    elif mode == "pool_close":
        pool = ctx.Pool(3)
        total = sum(pool.map(work, range(10)))
        pool.close()
        pool.join()
    else:  # "pool_with": Pool.__exit__ terminate()s the workers (SIGTERM)
        with ctx.Pool(3) as pool:
            total = sum(pool.map(work, range(10)))
    phactor.capture("parent_event", "parent")
    print(json.dumps({"total": total, "ok": phactor.stop(timeout=10)}))
"""


@pytest.mark.parametrize("mode", ["process", "pool_close", "pool_with"])
def test_multiprocessing_fork_children_deliver_every_event(devserver: DevServer, mode: str) -> None:
    result = run_script(MULTIPROCESSING_SCRIPT, devserver.url, mode)
    assert result.returncode == 0, result.stderr
    out = last_json(result)
    assert out["total"] == 40 and out["ok"] is True
    devserver.wait_for(41, timeout=5)
    assert devserver.count(event="child_event") == 40, result.stderr
    assert devserver.count(event="parent_event") == 1
    assert set(devserver.uuid_counts().values()) == {1}


# A SIGTERM that only trips the handler's flag while the main thread waits in C: CPython runs
# the Python handler when that wait returns, and a Pool worker's never does (terminate() keeps
# the task queue's lock). In the race this arrives just before the worker blocks; here the C
# handler runs on another thread once the main thread is in sem_wait, deterministically.
TERMINATED_WHILE_BLOCKED_SCRIPT = """
    import faulthandler, json, multiprocessing, signal, sys, threading
    import phactor

    faulthandler.register(signal.SIGUSR2, all_threads=True)  # stacks of a hung run

    url, variant = sys.argv[1], sys.argv[2]
    phactor.start(api_key="phc_mp", host=url, flush_at=10000, flush_interval=3600)
    ctx = multiprocessing.get_context("fork")
    held = ctx.Lock()
    held.acquire()  # for good, as Pool.terminate() takes the task queue's read lock

    def waits_on(tid, address):
        # /proc/.../syscall reads "<nr> <arg0> ..." while the thread is in a system call: the
        # futex wait of sem_wait has the semaphore's address as its first argument.
        with open(f"/proc/self/task/{tid}/syscall") as f:
            fields = f.read().split()
        return len(fields) > 1 and fields[1].startswith("0x") and int(fields[1], 16) == address

    def trip_sigterm_elsewhere(main_tid, address):
        pause = threading.Event()
        while not waits_on(main_tid, address):  # no event tells that the kernel parked it
            pause.wait(0.001)
        signal.pthread_kill(threading.get_ident(), signal.SIGTERM)

    def work(lock):
        for i in range(4):
            phactor.capture("child_event", f"worker-{i}")
        args = (threading.get_native_id(), lock._semlock.handle)
        threading.Thread(target=trip_sigterm_elsewhere, args=args, daemon=True).start()
        if variant == "masked":  # not even the drain's own SIGTERM can interrupt this thread
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
        lock.acquire()  # never returns: only SIGTERM ends this child

    child = ctx.Process(target=work, args=(held,))
    child.start()
    child.join(15)
    exitcode = child.exitcode
    if exitcode is None:
        child.kill()
        child.join()
    print(json.dumps({"exitcode": exitcode, "ok": phactor.stop(timeout=10)}))
"""


@pytest.mark.parametrize(
    ("variant", "exitcode"),
    [
        ("blocked", -signal.SIGTERM),  # the drain's SIGTERM interrupts the wait: the handler ends it
        ("masked", 128 + signal.SIGTERM),  # the drain thread ends it itself, after a grace period
    ],
)
def test_sigterm_tripped_while_the_main_thread_waits_in_c_still_drains_and_ends_the_child(
    devserver: DevServer, variant: str, exitcode: int
) -> None:
    result = run_script(TERMINATED_WHILE_BLOCKED_SCRIPT, devserver.url, variant)
    assert result.returncode == 0, result.stderr
    out = last_json(result)
    assert out["exitcode"] is not None, "the child outlived SIGTERM: " + result.stderr
    assert out["exitcode"] == exitcode, (out, result.stderr)
    assert out["ok"] is True
    assert devserver.wait_for(4, timeout=5)
    assert devserver.count(event="child_event") == 4


# CPython discards a signal that reaches a forked child before its after-fork reset: a Pool
# worker terminated before it was even scheduled (busy machine) lived on, unkillable by SIGTERM.
TERMINATED_AT_ONCE_SCRIPT = """
    import json, multiprocessing, signal, sys, time
    import phactor

    phactor.start(api_key="phc_mp", host=sys.argv[1], flush_interval=3600)
    ctx = multiprocessing.get_context("fork")
    codes = []
    for _ in range(5):
        child = ctx.Process(target=time.sleep, args=(30,))
        child.start()
        child.terminate()  # at once: before the child ran past fork(), most of the time
        child.join(10)
        codes.append(child.exitcode)
        if child.exitcode is None:
            child.kill()
            child.join()
    print(json.dumps({"codes": codes, "ok": phactor.stop(timeout=10)}))
"""


def test_a_child_terminated_right_after_fork_ends(devserver: DevServer) -> None:
    result = run_script(TERMINATED_AT_ONCE_SCRIPT, devserver.url)
    assert result.returncode == 0, result.stderr
    out = last_json(result)
    assert out["codes"] == [-signal.SIGTERM] * 5, (out, result.stderr)


# --- SIGTERM ---------------------------------------------------------------------------------

SIGTERM_SCRIPT = """
    import faulthandler, json, signal, sys, threading
    import phactor

    faulthandler.register(signal.SIGUSR2, all_threads=True)  # stacks of a hung run

    url, n, variant = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    if variant == "app":
        def app_handler(signum, frame):
            sys.exit(0)  # the app's graceful shutdown: a normal exit (atexit runs)
        signal.signal(signal.SIGTERM, app_handler)
    phactor.start(api_key="phc_term", host=url, handle_sigterm=variant != "off",
                  flush_interval=3600)
    handler = signal.getsignal(signal.SIGTERM)
    for i in range(n):
        phactor.capture("queued_at_sigterm", f"user-{i}")
    print(json.dumps({"handler": getattr(handler, "__qualname__", getattr(handler, "name", None)),
                      "captured": phactor.stats()["captured"]}), flush=True)
    # The app idles until the signal ends it, in short waits: a signal that lands just before
    # a blocking wait starts (after CPython's last check) runs its handler only when that wait
    # ends (CPython's own race, the app's handler as much as ours; see docs/delivery.md).
    idle = threading.Event()
    for _ in range(1200):
        idle.wait(0.05)
"""


def run_until_sigterm(devserver: DevServer, n: int, variant: str) -> tuple[int, dict]:
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(SIGTERM_SCRIPT), devserver.url, str(n), variant],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = json.loads(proc.stdout.readline() or "{}")
        proc.send_signal(signal.SIGTERM)
        try:
            _, stderr = proc.communicate(timeout=SCRIPT_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGUSR2)
            try:
                proc.wait(timeout=1)  # time for faulthandler to write the stacks
            except subprocess.TimeoutExpired:
                pass
            proc.kill()
            _, stderr = proc.communicate()
            pytest.fail(f"the process outlived SIGTERM ({variant}); stacks: {stderr}")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert first, stderr
    return proc.returncode, first


def test_sigterm_with_the_default_disposition_drains_then_ends_as_sigterm(
    devserver: DevServer,
) -> None:
    devserver.delay(0.02)  # slow-ish: most of the queue is still there when the signal comes
    n = 3000
    status, first = run_until_sigterm(devserver, n, "default")
    assert first["captured"] == n
    assert status == -signal.SIGTERM  # ended as SIGTERM would: the parent sees the signal
    assert devserver.count() == n
    assert set(devserver.uuid_counts().values()) == {1}


def test_sigterm_handler_installed_by_the_app_is_kept(devserver: DevServer) -> None:
    devserver.delay(0.02)
    n = 1000
    status, first = run_until_sigterm(devserver, n, "app")
    assert first["handler"] == "app_handler"
    assert status == 0  # the app's handler ran: a normal exit, drained by atexit
    assert devserver.count() == n


def test_handle_sigterm_false_keeps_the_default_disposition(devserver: DevServer) -> None:
    status, first = run_until_sigterm(devserver, 10, "off")
    assert first["handler"] == "SIG_DFL"
    assert status == -signal.SIGTERM


# A process forked (from a thread) while the parent drains after SIGTERM is a new process: its
# own SIGTERM must drain it and end it, not find the parent's drain "already under way".
FORK_DURING_DRAIN_SCRIPT = """
    import faulthandler, json, os, signal, sys, threading
    import phactor

    faulthandler.register(signal.SIGUSR2, all_threads=True)  # stacks of a hung run

    url, n = sys.argv[1], int(sys.argv[2])
    phactor.start(api_key="phc_term", host=url, flush_interval=3600)
    for i in range(n):
        phactor.capture("queued_at_sigterm", f"user-{i}")

    def fork_during_the_drain():
        pause = threading.Event()
        while not any(t.name == "phactor-sigterm" for t in threading.enumerate()):
            pause.wait(0.005)  # nothing public tells that the drain started
        if os.fork() == 0:  # this thread goes on as the child's main thread
            child = phactor.start("child", api_key="phc_child", host=url, flush_interval=3600)
            for i in range(5):
                child.capture("child_event", f"child-{i}")
            print(json.dumps({"child": os.getpid()}), flush=True)
            idle = threading.Event()
            for _ in range(1200):  # until SIGTERM ends it (short waits: see above)
                idle.wait(0.05)
            os._exit(0)

    threading.Thread(target=fork_during_the_drain, daemon=True).start()
    print(json.dumps({"ready": True}), flush=True)
    # The app idles until the signal ends it, in short waits: a signal that lands just before
    # a blocking wait starts (after CPython's last check) runs its handler only when that wait
    # ends (CPython's own race, the app's handler as much as ours; see docs/delivery.md).
    idle = threading.Event()
    for _ in range(1200):
        idle.wait(0.05)
"""


def test_a_process_forked_during_the_sigterm_drain_is_drained_and_ended_by_its_own_sigterm(
    devserver: DevServer,
) -> None:
    devserver.delay(0.02)  # the parent's drain is still under way when the thread forks
    n = 1000
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(FORK_DURING_DRAIN_SCRIPT), devserver.url, str(n)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    child = 0
    try:
        assert proc.stdout is not None
        assert json.loads(proc.stdout.readline() or "{}") == {"ready": True}
        proc.send_signal(signal.SIGTERM)
        ready, _, _ = select.select([proc.stdout], [], [], SCRIPT_TIMEOUT)
        assert ready, "no child was forked"
        child = json.loads(proc.stdout.readline())["child"]
        ended = os.pidfd_open(child)  # readable once the child has ended (it is not ours to wait)
        try:
            os.kill(child, signal.SIGTERM)
            gone, _, _ = select.select([ended], [], [], 20)
        finally:
            os.close(ended)
        assert gone, "the forked child outlived its SIGTERM"
        _, stderr = proc.communicate(timeout=SCRIPT_TIMEOUT)
        assert proc.returncode == -signal.SIGTERM, stderr
    finally:
        if child:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert devserver.wait_for(n + 5, timeout=10)
    assert devserver.count(event="child_event") == 5
    assert devserver.count(event="queued_at_sigterm") == n


SIGTERM_RESTORE_SCRIPT = """
    import json, signal, sys, threading
    import phactor

    def name():
        handler = signal.getsignal(signal.SIGTERM)
        return getattr(handler, "__qualname__", getattr(handler, "name", None))

    seen = {}
    worker = threading.Thread(target=lambda: phactor.start("thread", test_mode=True))
    worker.start(); worker.join()
    seen["started_in_a_thread"] = name()  # only the main thread may install a handler
    phactor.start("a", test_mode=True)
    phactor.start("b", test_mode=True)
    seen["started"] = name()
    phactor.stop("a")
    seen["one_left"] = name()
    phactor.stop("b"); phactor.stop("thread")
    seen["all_stopped"] = name()
    print(json.dumps(seen))
"""


def test_the_sigterm_handler_is_installed_from_the_main_thread_and_removed_with_the_last_stop() -> (
    None
):
    result = run_script(SIGTERM_RESTORE_SCRIPT)
    assert result.returncode == 0, result.stderr
    seen = last_json(result)
    assert seen["started_in_a_thread"] == "SIG_DFL"
    assert seen["started"] not in ("SIG_DFL", "SIG_IGN", None)
    assert seen["one_left"] == seen["started"]
    assert seen["all_stopped"] == "SIG_DFL"


# --- capture() from a signal handler ---------------------------------------------------------

SIGNAL_HANDLER_SCRIPT = """
    import json, os, signal, sys
    import phactor
    from phactor.buffer import EventBuffer

    url, variant = sys.argv[1], sys.argv[2]
    inst = phactor.start(api_key="phc_sig", host=url, flush_at=10000, flush_interval=3600)
    from_handler, stats_seen = [], []
    inside = [False]

    def handler(signum, frame):
        inside[0] = True
        from_handler.append(phactor.capture("from_handler", "handler"))
        stats_seen.append(phactor.stats()["captured"])  # must not wait either
        if variant == "profile":
            phactor.flush(timeout=1)  # nor this (it may only start a flush)
        inside[0] = False

    fired = [0]

    def profiler(frame, event, arg):
        # Deterministic: raise the signal while this thread is inside EventBuffer.offer, in
        # the middle of its checks and its append (offer takes no lock; the first event's
        # wake holds the Batcher's mailbox lock).
        if (event == "c_call" and frame.f_code is EventBuffer.offer.__code__
                and not inside[0] and fired[0] < 50):
            fired[0] += 1
            os.kill(os.getpid(), signal.SIGUSR1)

    main = 0
    if variant == "profile":
        signal.signal(signal.SIGUSR1, handler)
        sys.setprofile(profiler)
        for i in range(500):
            main += inst.capture("from_main", "main") is not None
        sys.setprofile(None)
    else:  # "itimer": a timer signal every 0.5 ms while the main thread captures
        signal.signal(signal.SIGALRM, handler)
        signal.setitimer(signal.ITIMER_REAL, 0.0005, 0.0005)
        for i in range(5000):
            main += inst.capture("from_main", "main") is not None
        signal.setitimer(signal.ITIMER_REAL, 0)
    ok = phactor.flush(timeout=10)
    print(json.dumps({"main": main, "handler": from_handler, "fired": fired[0], "ok": ok,
                      "stats": phactor.stats(), "stopped": phactor.stop(timeout=10)}))
"""


@pytest.mark.parametrize("variant", ["profile", "itimer"])
def test_capture_from_a_signal_handler_that_interrupted_capture(
    devserver: DevServer, variant: str
) -> None:
    result = run_script(SIGNAL_HANDLER_SCRIPT, devserver.url, variant, timeout=30)
    assert result.returncode == 0, result.stderr
    out = last_json(result)
    if variant == "profile":
        assert out["fired"] == 50 and len(out["handler"]) == 50
    assert None not in out["handler"]
    stats = out["stats"]
    total = out["main"] + len(out["handler"])
    assert stats["captured"] == stats["sent"] == total, stats
    assert out["ok"] is True and out["stopped"] is True
    assert devserver.wait_for(total, timeout=10)
    assert devserver.count(event="from_handler") == len(out["handler"])
    assert devserver.count(event="from_main") == out["main"]


# --- other ways to end -----------------------------------------------------------------------

EXIT_PATHS_SCRIPT = """
    import sys, threading
    import phactor

    url, variant = sys.argv[1], sys.argv[2]
    phactor.start(api_key="phc_exit", host=url, flush_at=10000, flush_interval=3600)

    def in_thread():
        for i in range(100):
            phactor.capture("from_thread", f"t{i}")
        sys.exit(3)  # ends only this thread

    t = threading.Thread(target=in_thread)
    t.start(); t.join()
    for i in range(100):
        phactor.capture("from_main", f"m{i}")
    if variant == "exception":
        raise RuntimeError("the app crashes")
    sys.exit(5)
"""


@pytest.mark.parametrize(("variant", "status"), [("exit", 5), ("exception", 1)])
def test_sys_exit_from_a_thread_and_main_ending_deliver_everything(
    devserver: DevServer, variant: str, status: int
) -> None:
    result = run_script(EXIT_PATHS_SCRIPT, devserver.url, variant)
    assert result.returncode == status, result.stderr
    assert devserver.wait_for(200, timeout=5)
    assert devserver.count(event="from_thread") == 100
    assert devserver.count(event="from_main") == 100
