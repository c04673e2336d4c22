"""phactor.devserver under concurrent clients: exact counts, waits, keep-alive, stop."""

from __future__ import annotations

import threading

import pytest
import requests
from devserver_client import batch, event, server_fixture, session_fixture  # noqa: F401  (fixtures)

from phactor.devserver import DevServer

# -- concurrency and waiting ----------------------------------------------------------------


def test_concurrent_senders_exact_count(server: DevServer) -> None:
    threads, batches, per_batch = 8, 25, 40
    sent: list[str] = []
    sent_lock = threading.Lock()

    def send() -> None:
        with requests.Session() as http:
            for _ in range(batches):
                events = [event(distinct_id=f"t{threading.get_ident()}") for _ in range(per_batch)]
                with sent_lock:
                    sent.extend(e["uuid"] for e in events)
                assert http.post(server.url + "/batch/", json=batch(*events), timeout=10).ok

    workers = [threading.Thread(target=send) for _ in range(threads)]
    for worker in workers:
        worker.start()
    total = threads * batches * per_batch
    assert server.wait_for(total, timeout=60)
    for worker in workers:
        worker.join()
    assert server.count() == total
    assert server.request_count() == threads * batches
    counts = server.uuid_counts()
    assert sorted(counts) == sorted(sent)
    assert set(counts.values()) == {1}
    assert sorted(e["uuid"] for e in server.events()) == sorted(sent)


def test_wait_for_wakes_on_arrival_and_times_out(server: DevServer) -> None:
    assert server.wait_for(1, timeout=0.05) is False
    poster = threading.Thread(
        target=requests.post,
        args=(server.url + "/batch/",),
        kwargs={"json": batch(event(), event()), "timeout": 5},
    )
    poster.start()
    assert server.wait_for(2, timeout=10)
    assert server.wait_for_requests(1, timeout=10)
    poster.join()


def test_keep_alive_reuses_one_connection(server: DevServer, session: requests.Session) -> None:
    first = session.post(server.url + "/batch/", json=batch(event()), timeout=5)
    second = session.post(server.url + "/batch/", json=batch(event()), timeout=5)
    assert first.headers["Content-Length"] == str(len(first.content))
    assert first.raw.version == 11 and second.ok
    # the same client port on both requests: one TCP connection served them
    assert len({r.peer for r in server.requests}) == 1
    fresh = requests.post(server.url + "/batch/", json=batch(event()), timeout=5)
    assert fresh.ok and len({r.peer for r in server.requests}) == 2


def test_stop_closes_keep_alive_connections(session: requests.Session) -> None:
    server = DevServer().start()
    url = server.url
    assert session.post(url + "/batch/", json=batch(event()), timeout=5).ok
    server.stop()
    with pytest.raises(requests.ConnectionError):
        session.post(url + "/batch/", json=batch(event()), timeout=5)
    assert server.count() == 1  # still readable after stop
    with pytest.raises(RuntimeError):
        _ = server.port


def test_constructor_checks_types() -> None:
    with pytest.raises(TypeError):
        DevServer(port="8010")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        DevServer(flags={"a": 1})  # type: ignore[dict-item]
    with pytest.raises(TypeError):
        DevServer(flag_definitions=42)  # type: ignore[arg-type]
