"""Differential: one script of calls drives the `posthog` package and `phactor.compat` against
the same loopback DevServer; the events they deliver must be equal field by field.

Ignored (docs/migrating-from-posthog.md, "What the differential test ignores"): `uuid` and
`timestamp` (each SDK makes its own), `$lib`/`$lib_version` (each names itself), the
distinct_id of a personless event (a fresh random uuid in both), and in `$exception` events the
frames and the SDK's own exception-tracking details: the type and message of each exception,
the event name, distinct_id and the caller's properties are compared. Both clients evaluate
flags from the definitions the server serves (personal_api_key) and ask `/flags` for the
rest; the values the flag methods return are compared too.
"""

from __future__ import annotations

import datetime as dt
import inspect
import sys
import uuid as uuid_module
from collections.abc import Callable, Iterator
from typing import Any

import posthog
import pytest
from hypothesis import given
from hypothesis import strategies as st

import phactor
from phactor.compat import Posthog
from phactor.devserver import DevServer

# posthog deprecates some of the methods the script calls (phactor.compat keeps them).
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

PERSONAL_KEY = "phx_compat_personal_key"
GIVEN_UUID = "0190c7b2-3a5e-7c1d-8f00-1234567890ab"
WHEN = dt.datetime(2026, 3, 4, 5, 6, 7, tzinfo=dt.UTC)

LOCAL = {
    "id": 1,
    "key": "local",
    "version": 4,
    "active": True,
    "filters": {
        "groups": [{"properties": [], "rollout_percentage": 100}],
        "payloads": {"true": '{"color": "blue"}'},
    },
}
MULTI = {
    "id": 2,
    "key": "multi",
    "version": 1,
    "active": True,
    "filters": {
        "groups": [{"properties": [], "rollout_percentage": 100}],
        "multivariate": {
            "variants": [
                {"key": "control", "rollout_percentage": 50},
                {"key": "test", "rollout_percentage": 50},
            ]
        },
        "payloads": {"test": '"a test payload"', "control": "[1, 2]"},
    },
}
PLAN_PRO = {
    "id": 3,
    "key": "plan-pro",
    "version": 2,
    "active": True,
    "filters": {
        "groups": [
            {
                "properties": [
                    {"key": "plan", "value": "pro", "operator": "exact", "type": "person"}
                ],
                "rollout_percentage": 100,
            }
        ]
    },
}
OFF = {
    "id": 4,
    "key": "off",
    "active": False,
    "filters": {"groups": [{"properties": [], "rollout_percentage": 100}]},
}
REMOTE_FLAGS = {"remote-only": "variant-r", "local": True}
REMOTE_PAYLOADS = {"remote-only": {"n": 1}}


def _result(value: Any) -> Any:
    """A flag method's return value in a comparable form (posthog's objects -> plain data)."""
    if hasattr(value, "get_value") and hasattr(value, "reason"):
        return ("result", value.key, value.enabled, value.variant, value.payload)
    return value


def _boom() -> ValueError:
    try:
        raise ValueError("boom in a handler")
    except ValueError as error:
        return error


def _exc_info_in_handler(client: Any) -> Any:
    try:
        raise KeyError("missing")
    except KeyError:
        return client.capture_exception(sys.exc_info(), distinct_id="u1")


# The script: (name, call) in order. `name` is the Posthog method it exercises; each call
# gets the client and returns what is compared between the two SDKs (None: nothing).
Step = tuple[str, Callable[[Any], Any]]
SCRIPT: list[Step] = [
    ("load_feature_flags", lambda c: c.load_feature_flags()),
    (
        "capture",
        lambda c: c.capture(
            "signed_up",
            distinct_id="u1",
            properties={"plan": "pro", "n": 1, "nested": {"a": [1, 2]}},
            groups={"company": "acme"},
        ),
    ),
    (
        "capture",
        lambda c: c.capture(
            "given_uuid_and_time", distinct_id="u1", uuid=GIVEN_UUID, timestamp=WHEN
        ),
    ),
    ("capture", lambda c: c.capture("int_id", distinct_id=42)),
    ("capture", lambda c: c.capture("with_geoip", distinct_id="u1", disable_geoip=False)),
    (
        "capture",
        lambda c: c.capture("own_geoip", distinct_id="u1", properties={"$geoip_disable": False}),
    ),
    ("capture", lambda c: c.capture("personless", properties={"k": "v"})),
    (
        "capture",
        lambda c: c.capture(
            "with_flags",
            distinct_id="u1",
            flags=c.evaluate_flags("u1", person_properties={"plan": "pro"}),
        ),
    ),
    ("set", lambda c: c.set(distinct_id="u1", properties={"name": "Ann"})),
    ("set_once", lambda c: c.set_once(distinct_id="u1", properties={"first": "2026-01-01"})),
    (
        "group_identify",
        lambda c: c.group_identify("company", "acme", {"size": 5}, distinct_id="u1"),
    ),
    ("alias", lambda c: c.alias("u1", "u1-alias")),
    (
        "capture_exception",
        lambda c: c.capture_exception(_boom(), distinct_id="u1", properties={"where": "h"}),
    ),
    ("capture_exception", _exc_info_in_handler),
    ("feature_enabled", lambda c: c.feature_enabled("local", "u1")),
    ("feature_enabled", lambda c: c.feature_enabled("off", "u1")),
    ("get_feature_flag", lambda c: c.get_feature_flag("multi", "u2")),
    (
        "get_feature_flag",
        lambda c: c.get_feature_flag("plan-pro", "u2", person_properties={"plan": "pro"}),
    ),
    ("get_feature_flag", lambda c: c.get_feature_flag("remote-only", "u3")),
    (
        "get_feature_flag",
        lambda c: c.get_feature_flag("multi", "u9", send_feature_flag_events=False),
    ),
    ("get_feature_flag_result", lambda c: c.get_feature_flag_result("multi", "u4")),
    ("get_feature_flag_result", lambda c: c.get_feature_flag_result("local", "u4", device_id="d1")),
    ("get_feature_flag_payload", lambda c: c.get_feature_flag_payload("local", "u1")),
    (
        "get_feature_flag_payload",
        lambda c: c.get_feature_flag_payload("multi", "u5", match_value="test"),
    ),
    ("get_feature_flag_payload", lambda c: c.get_feature_flag_payload("remote-only", "u5")),
    ("get_all_flags", lambda c: c.get_all_flags("u6", only_evaluate_locally=True)),
    (
        "get_all_flags_and_payloads",
        lambda c: c.get_all_flags_and_payloads("u6", only_evaluate_locally=True),
    ),
    ("evaluate_flags", lambda c: c.evaluate_flags("u7").get_flag("multi")),
    ("evaluate_flags", lambda c: c.evaluate_flags("u7").is_enabled("local")),
    ("flush", lambda c: c.flush()),
    ("shutdown", lambda c: c.shutdown()),
    ("join", lambda c: c.join()),
]


class Recorder:
    """Wraps a client and records which of its methods the script called."""

    def __init__(self, client: Any, called: set[str]) -> None:
        self._client, self._called = client, called

    def __getattr__(self, name: str) -> Any:
        self._called.add(name)
        return getattr(self._client, name)


def run_script(client: Any, called: set[str]) -> list[Any]:
    recorder = Recorder(client, called)
    returned = []
    for _, call in SCRIPT:
        try:
            returned.append(_result(call(recorder)))
        except Exception as error:  # compared like a value: one failing step hides no other
            returned.append(("raised", type(error).__name__, str(error)))
    return returned


@pytest.fixture(scope="module")
def server() -> Iterator[DevServer]:
    with DevServer(
        flags=REMOTE_FLAGS,
        flag_payloads=REMOTE_PAYLOADS,
        flag_definitions=[LOCAL, MULTI, PLAN_PRO, OFF],
        personal_api_key=PERSONAL_KEY,
    ) as s:
        yield s


OPTIONS = {
    "host": None,  # set per test
    "secret_key": PERSONAL_KEY,  # posthog's name (personal_api_key is deprecated there)
    "sync_mode": True,
    "poll_interval": 600,
}


@pytest.fixture(scope="module")
def both(server: DevServer) -> dict[str, Any]:
    """The script run through the posthog package, then through phactor.compat."""
    options = dict(OPTIONS, host=server.url)
    runs: dict[str, Any] = {}
    for sdk, make in (("posthog", posthog.Posthog), ("compat", Posthog)):
        server.clear()
        called: set[str] = set()
        client = make("phc_compat_test", **options)
        try:
            returned = run_script(client, called)
        finally:
            client.shutdown()
        runs[sdk] = {
            "events": [e["raw"] for e in server.events()],
            "returned": returned,
            "called": called,
        }
    server.clear()
    return runs


IGNORED_TOP = {"uuid", "timestamp"}
IGNORED_PROPERTIES = {"$lib", "$lib_version"}


def comparable(event: dict[str, Any]) -> dict[str, Any]:
    """The fields compared: everything but what each SDK makes on its own (module docstring)."""
    out = {k: v for k, v in event.items() if k not in IGNORED_TOP}
    props = {k: v for k, v in out.get("properties", {}).items() if k not in IGNORED_PROPERTIES}
    if props.get("$process_person_profile") is False:
        uuid_module.UUID(out.pop("distinct_id"))  # a fresh uuid, in both
    if out.get("event") == "$exception":
        props = {
            "$exception_list": [
                (e.get("type"), e.get("value")) for e in props.get("$exception_list", [])
            ],
            "where": props.get("where"),
        }
    if "$feature_flag_evaluated_at" in props:
        props["$feature_flag_evaluated_at"] = "<a time>"
    if "$feature_flag_request_id" in props:
        props["$feature_flag_request_id"] = "<an id>"
    # phactor sends its reason code; posthog a description for remote answers, none for local.
    props.pop("$feature_flag_reason", None)
    out["properties"] = props
    return out


# (event, property) -> (ours, theirs): the deliberate differences (docs/migrating-from-posthog.md,
# "How it behaves differently"), pinned so that a change on either side is noticed.
PINNED = {
    ("own_geoip", "$geoip_disable"): (False, True),
    # A snapshot whose evaluation asked /flags: posthog tags every $feature_flag_called of it
    # with that request's id, phactor only those whose value came from the request.
    ("$feature_flag_called", "$feature_flag_request_id"): ("<missing>", "<an id>"),
}


# phactor puts the runtime properties on every event (shared/API.md); posthog leaves them off
# the person and group updates it builds itself.
RUNTIME = {"$os", "$os_version", "$os_distro", "$python_runtime", "$python_version"}
UPDATES = {"$set", "$set_once", "$groupidentify", "$create_alias"}


def deliberate(key: tuple[str, str], values: tuple[Any, Any]) -> bool:
    """Whether a difference is a deliberate one (docs/migrating-from-posthog.md)."""
    if key in PINNED:
        return True
    event, name = key
    return event in UPDATES and name in RUNTIME and values[1] == "<missing>"


def differences(ours: dict[str, Any], theirs: dict[str, Any]) -> dict[tuple[str, str], Any]:
    """(event, field or property) -> (ours, theirs) for every field that differs."""
    name = theirs.get("event", "?")
    found = {}
    for key in set(ours) | set(theirs):
        if key != "properties" and ours.get(key, "<missing>") != theirs.get(key, "<missing>"):
            found[(name, key)] = (ours.get(key, "<missing>"), theirs.get(key, "<missing>"))
    mp, rp = ours.get("properties", {}), theirs.get("properties", {})
    for key in set(mp) | set(rp):
        if mp.get(key, "<missing>") != rp.get(key, "<missing>"):
            found[(name, key)] = (mp.get(key, "<missing>"), rp.get(key, "<missing>"))
    return found


def test_every_public_method_of_posthog_is_exercised(both: dict[str, Any]) -> None:
    public = {
        name
        for name, member in inspect.getmembers(Posthog, inspect.isfunction)
        if not name.startswith("_")
    }
    in_script = {name for name, _ in SCRIPT}
    assert public == in_script, public ^ in_script
    assert public <= both["compat"]["called"]


def _posthog_parameters(method: Any) -> set[str]:
    """The keywords a posthog method takes (those of its `**kwargs: Unpack[...]` included)."""
    from posthog.args import OptionalCaptureArgs, OptionalSetArgs

    names = set()
    for param in list(inspect.signature(method).parameters.values())[1:]:
        if param.kind is inspect.Parameter.VAR_KEYWORD:
            unpacked = (
                OptionalSetArgs if method.__name__ in ("set", "set_once") else OptionalCaptureArgs
            )
            names |= set(unpacked.__annotations__)
        else:
            names.add(param.name)
    return {name for name in names if not name.startswith("_")}


@pytest.mark.parametrize(
    "name",
    sorted(n for n, _ in inspect.getmembers(Posthog, inspect.isfunction) if not n.startswith("_")),
)
def test_each_method_takes_posthogs_parameters(name: str) -> None:
    from phactor.compat.client import _CAPTURE_KEYWORDS

    ours = set(inspect.signature(getattr(Posthog, name)).parameters)
    if name == "capture_exception":  # takes posthog's other capture keywords through **kwargs
        ours |= _CAPTURE_KEYWORDS
    theirs = _posthog_parameters(getattr(posthog.Client, name))
    assert theirs <= ours, theirs - ours


def test_same_events_field_by_field(both: dict[str, Any]) -> None:
    theirs = [comparable(e) for e in both["posthog"]["events"]]
    ours = [comparable(e) for e in both["compat"]["events"]]
    assert [e["event"] for e in ours] == [e["event"] for e in theirs]
    found: dict[tuple[str, str], Any] = {}
    for mine, reference in zip(ours, theirs, strict=True):
        found.update(differences(mine, reference))
    assert {k: v for k, v in found.items() if not deliberate(k, v)} == {}
    assert {k: v for k, v in found.items() if k in PINNED} == PINNED


def test_same_return_values(both: dict[str, Any]) -> None:
    theirs, ours = both["posthog"]["returned"], both["compat"]["returned"]
    for (name, _), mine, reference in zip(SCRIPT, ours, theirs, strict=True):
        if name in ("capture", "set", "set_once", "group_identify", "alias", "capture_exception"):
            assert isinstance(mine, str) and isinstance(reference, str), name
            continue
        if name in ("flush", "shutdown", "join", "load_feature_flags"):
            continue
        assert mine == reference, name
    uuid_step = next(
        i for i, (n, c) in enumerate(SCRIPT) if "given_uuid" in repr(c.__code__.co_consts)
    )
    assert ours[uuid_step] == theirs[uuid_step] == GIVEN_UUID


def test_compat_goes_through_a_named_phactor_instance(server: DevServer) -> None:
    client = Posthog("phc_compat_test", host=server.url, sync_mode=True)
    try:
        assert client.name in phactor.instances()
        assert phactor.instance(client.name) is client.instance
    finally:
        client.shutdown()
    assert client.name not in phactor.instances()


# --- the class of input: any capture, through both --------------------------------------------

JSON_LEAF = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
JSON = st.recursive(
    JSON_LEAF,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
# The caller's own keys: `$`-prefixed ones are PostHog's and `distinct_id` is read as the id.
USER_KEYS = st.text(min_size=1, max_size=12).filter(
    lambda k: not k.startswith("$") and k != "distinct_id"
)
IDS = st.text(min_size=1, max_size=20).filter(str.strip) | st.integers(0, 2**53) | st.uuids()


@pytest.fixture(scope="module")
def pair(server: DevServer) -> Iterator[tuple[Any, Any]]:
    options = dict(OPTIONS, host=server.url, secret_key=None)
    reference, ours = posthog.Posthog("phc_pair", **options), Posthog("phc_pair", **options)
    try:
        yield reference, ours
    finally:
        reference.shutdown()
        ours.shutdown()


def _one_event(server: DevServer, client: Any, call: Callable[[Any], Any]) -> dict[str, Any]:
    server.clear()
    assert call(client) is not None
    assert server.wait_for(1)
    (stored,) = server.events()
    return comparable(stored["raw"])


@given(
    event=st.text(min_size=1, max_size=30),
    distinct_id=IDS,
    properties=st.dictionaries(USER_KEYS, JSON, max_size=6),
    groups=st.none()
    | st.dictionaries(st.text(min_size=1, max_size=8), st.text(min_size=1, max_size=8), max_size=2),
)
def test_any_capture_is_the_same_event(
    pair: tuple[Any, Any],
    server: DevServer,
    event: str,
    distinct_id: Any,
    properties: dict[str, Any],
    groups: Any,
) -> None:
    def call(client: Any) -> Any:
        return client.capture(event, distinct_id=distinct_id, properties=properties, groups=groups)

    reference, ours = pair
    theirs = _one_event(server, reference, call)
    mine = _one_event(server, ours, call)
    assert differences(mine, theirs) == {}
