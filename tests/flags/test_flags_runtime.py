"""Review probes of the FlagEvaluator runtime: evaluation never waits on a definitions load,
401 then recovery through polling, instances with different personal keys, fork, and the
immutability / argument checks of the public flag API."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
from typing import Any

import pytest
from conftest import StartInstance, wait_until
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

import phactor
from phactor.devserver import DevServer

KEY_A = "phx_key_a"
KEY_B = "phx_key_b"

ON = {
    "id": 1,
    "key": "on",
    "active": True,
    "filters": {"groups": [{"properties": [], "rollout_percentage": 100}]},
}
OTHER = {**ON, "id": 2, "key": "other"}


@pytest.fixture
def started(start_instance: StartInstance) -> Any:
    def start(**options: Any) -> phactor.Instance:
        config: dict[str, Any] = {
            "api_key": "phc_test",
            "enable_error_tracking": False,
            "poll_interval": 60.0,
        }
        config.update(options)
        return start_instance(**config)

    return start


def local_keys(inst: phactor.Instance) -> list[str]:
    return inst.evaluate_flags("user-1", only_evaluate_locally=True).keys()


class HeldDefinitions:
    """A definitions endpoint that holds a response until the test releases it, so a test knows
    for certain that a load is in progress (no timing involved)."""

    def __init__(self, server: HTTPServer) -> None:
        self.body = {"flags": [ON], "group_type_mapping": {}, "cohorts": {}}
        self.hold = False
        self.arrived = threading.Event()
        self.release = threading.Event()
        server.expect_request("/flags/definitions").respond_with_handler(self.handle)
        server.expect_request("/flags/", method="POST").respond_with_json(
            {"flags": {}, "requestId": "r-1"}
        )

    def handle(self, request: Request) -> Response:
        if self.hold:
            self.arrived.set()
            self.release.wait(10)
        return Response(json.dumps(self.body), status=200, content_type="application/json")


def in_thread(fn: Any) -> tuple[threading.Thread, list[Any]]:
    out: list[Any] = []
    thread = threading.Thread(target=lambda: out.append(fn()), daemon=True)
    thread.start()
    return thread, out


def test_evaluation_never_waits_for_a_definitions_load_in_progress(httpserver, started):
    held = HeldDefinitions(httpserver)
    inst = started(host=httpserver.url_for("").rstrip("/"), personal_api_key=KEY_A)
    assert inst.reload_feature_flags() is True
    assert local_keys(inst) == ["on"]

    held.body = {"flags": [OTHER], "group_type_mapping": {}, "cohorts": {}}
    held.hold = True
    reload, reloaded = in_thread(inst.reload_feature_flags)
    try:
        assert held.arrived.wait(5)  # the FlagEvaluator is now inside a load
        # Local and remote evaluation both answer while the load is held: they read the
        # current snapshot instead of queueing behind the actor.
        evaluation, answer = in_thread(lambda: inst.evaluate_flags("user-1").keys())
        evaluation.join(5)
        assert not evaluation.is_alive(), "evaluate_flags waited for the definitions load"
        assert answer == [["on"]]
        assert reload.is_alive()  # still loading: the answer came from the old snapshot
    finally:
        held.release.set()
    reload.join(5)
    assert reloaded == [True]
    assert local_keys(inst) == ["other"]


def test_first_load_in_progress_does_not_block_evaluation(httpserver, started):
    held = HeldDefinitions(httpserver)
    held.hold = True
    try:
        inst = started(host=httpserver.url_for("").rstrip("/"), personal_api_key=KEY_A)
        assert held.arrived.wait(5)
        evaluation, answer = in_thread(
            lambda: inst.evaluate_flags("user-1", flag_keys=["on"], only_evaluate_locally=True)
        )
        evaluation.join(5)
        assert not evaluation.is_alive()
        assert answer[0].unresolved == {"on": "definitions_not_loaded"}
    finally:
        held.release.set()
    assert wait_until(lambda: local_keys(inst) == ["on"])


def test_401_then_recovery_through_polling(started):
    server = DevServer(flag_definitions=[ON], personal_api_key=KEY_A).start()
    try:
        server.fail_next(3, 401, endpoint="definitions")
        inst = started(host=server.url, personal_api_key=KEY_A, poll_interval=0.05)
        # Three rejected polls, then the key is accepted again: the poller loads on its own.
        assert server.wait_for_requests(4, timeout=5, endpoint="definitions")
        assert wait_until(lambda: local_keys(inst) == ["on"])
        statuses = [r.status for r in server.requests if r.endpoint == "definitions"]
        assert statuses[:4] == [401, 401, 401, 200]
    finally:
        server.stop()


def test_instances_with_different_personal_keys_are_isolated(started):
    server = DevServer(flag_definitions=[ON], personal_api_key=KEY_A).start()
    try:
        good = started(host=server.url, personal_api_key=KEY_A)
        bad = started(host=server.url, personal_api_key=KEY_B)
        assert good.reload_feature_flags() is True
        assert bad.reload_feature_flags() is False
        # The rejected key clears only its own instance's definitions.
        assert local_keys(good) == ["on"]
        assert local_keys(bad) == []
        assert good.reload_feature_flags() is True
        sent_keys = {r.headers["authorization"] for r in server.requests}
        assert sent_keys == {f"Bearer {KEY_A}", f"Bearer {KEY_B}"}
    finally:
        server.stop()


FORK_SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    import phactor

    inst = phactor.start(api_key="phc_fork", host=sys.argv[1], personal_api_key="phx_key_a",
                         poll_interval=3600, enable_error_tracking=False)
    assert inst.reload_feature_flags() is True
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            # The parent's definitions are still there in the child, before any reload.
            first = inst.evaluate_flags("u", only_evaluate_locally=True).keys()
            reloaded = inst.reload_feature_flags(timeout=10)
            after = inst.evaluate_flags("u", only_evaluate_locally=True).keys()
            report = {"first": first, "reloaded": reloaded, "after": after,
                      "children": inst.children()}
            inst.stop(timeout=5)
        except BaseException as error:
            report = {"error": repr(error)}
        os.write(w, json.dumps(report).encode())
        os._exit(0)
    os.close(w)
    with os.fdopen(r) as pipe:
        report = json.loads(pipe.read())
    os.waitpid(pid, 0)
    report["parent_after"] = inst.evaluate_flags("u", only_evaluate_locally=True).keys()
    report["parent_reload"] = inst.reload_feature_flags(timeout=10)
    inst.stop(timeout=5)
    print(json.dumps(report))
    """
)


def test_definitions_survive_fork_and_the_child_polls_on_its_own():
    server = DevServer(flag_definitions=[ON], personal_api_key=KEY_A).start()
    try:
        result = subprocess.run(
            [sys.executable, "-c", FORK_SCRIPT, server.url],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        report = json.loads(result.stdout.strip().splitlines()[-1])
        assert "error" not in report, report
        assert report["first"] == ["on"]
        assert report["reloaded"] is True and report["after"] == ["on"]
        assert report["children"].get("flags") is True
        assert report["parent_after"] == ["on"] and report["parent_reload"] is True
    finally:
        server.stop()


# --- the public API: immutability and argument types ------------------------------------------


def test_snapshot_attributes_cannot_be_reassigned(started):
    inst = started(test_mode=True, flags={"beta": True})
    ev = inst.evaluate_flags("u", groups={"company": "acme"})
    for name in ("distinct_id", "groups", "request_id", "unresolved", "results"):
        with pytest.raises(AttributeError):
            setattr(ev, name, "other")
    assert ev.distinct_id == "u" and dict(ev.groups) == {"company": "acme"}


@pytest.mark.parametrize(
    "call",
    [
        lambda i: i.evaluate_flags("u", groups={"company": "a"}, group_properties={"company": [1]}),
        lambda i: i.evaluate_flags("u", groups={1: "a"}),
        lambda i: i.get_feature_flag("beta", "u", send_feature_flag_events="no"),
        lambda i: i.feature_enabled("beta", "u", send_feature_flag_events=None),
        lambda i: i.reload_feature_flags("soon"),
        lambda i: i.evaluate_flags("u").get_flag_payload(1),
        lambda i: i.evaluate_flags("u").only([1]),
    ],
    ids=[
        "group_properties_value_not_mapping",
        "group_type_not_str",
        "send_events_not_bool",
        "send_events_none",
        "reload_timeout_str",
        "payload_key_int",
        "only_int_key",
    ],
)
def test_wrong_argument_types_raise_type_error(started, call):
    inst = started(test_mode=True, flags={"beta": True})
    with pytest.raises(TypeError):
        call(inst)
