"""HTTP for feature flags: fetching definitions and remote evaluation (`POST /flags/`).

It knows URLs, headers, status codes and JSON — not caching or scheduling (the FlagEvaluator
owns those) and not flag semantics (the pure `matching`/`remote` modules). Nothing here raises
into the caller: every failure comes back as an outcome with a reason, logged here (throttled,
so an outage on the request path never floods the app's logs).
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

import orjson

if TYPE_CHECKING:
    from phactor._http import BoundedSession

from phactor._log import register_secrets, scrub
from phactor.encoding import json_safe, walk_is_linear
from phactor.flags.remote import RemoteFlags, parse_flags_response
from phactor.transport import USER_AGENT, load_http_stack

__all__ = [
    "DEFINITIONS_PATH",
    "FLAGS_PATH",
    "LEGACY_DEFINITIONS_PATH",
    "DefinitionsFetch",
    "FlagsHttp",
    "LogThrottle",
]

DEFINITIONS_PATH = "/flags/definitions"
LEGACY_DEFINITIONS_PATH = "/api/feature_flag/local_evaluation/"
FLAGS_PATH = "/flags/?v=2"

# Statuses worth one more try: the proxy in front of PostHog failed, not the evaluation.
_RETRY_STATUSES = frozenset({502, 504})
#: A `/flags` body whose person or group properties share containers is copied with this many
#: values at most (the rest cut as "<truncated>"), not written out once per reference.
_MAX_BODY_VALUES = 100_000
#: What is read of an answer at most (an endless or multi-GiB body must not fill memory): a
#: `/flags` answer, and a definitions document (10,000 flags take ~10-20 MiB).
FLAGS_MAX_ANSWER = 16 * 1024 * 1024
DEFINITIONS_MAX_ANSWER = 256 * 1024 * 1024


class DefinitionsFetch(NamedTuple):
    """The outcome of one definitions request.

    ``outcome`` is ``"loaded"`` (``body`` holds the decoded document, ``etag`` its ETag),
    ``"not_modified"`` (304), ``"unauthorized"`` (401/402: the definitions must be cleared) or
    ``"failed"`` (anything else: keep the last good set). ``detail`` explains it for logs.
    """

    outcome: str
    body: Any = None
    etag: str | None = None
    status: int | None = None
    detail: str = ""
    path: str = DEFINITIONS_PATH


class LogThrottle:
    """Says whether the n-th occurrence of a condition should be logged: 1st, 2nd, 4th, 8th, ...

    A failing flag endpoint is hit on the request path; logging every failure would flood.
    """

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}
        self._lock = threading.Lock()

    def should_log(self, key: str) -> int:
        """The occurrence count when this one should be logged, else 0."""
        with self._lock:
            n = self._counts.get(key, 0) + 1
            self._counts[key] = n
        return n if n & (n - 1) == 0 or n % 1000 == 0 else 0


def _decode_without_gc(content: bytes) -> Any:
    """Decode a definitions body with the cyclic GC paused.

    Decoding 10,000 definitions creates ~100k dicts and lists: each allocation burst triggers
    a collection that walks the whole heap (the previous snapshot too), 3-4x the decode itself.
    Nothing decoded can be cyclic garbage, so the pause loses nothing; it is not taken when
    the app has the GC off (it is never turned on behind the app's back).
    """
    if not gc.isenabled():
        return orjson.loads(content)
    gc.disable()
    try:
        return orjson.loads(content)
    finally:
        gc.enable()


class FlagsHttp:
    """The two flag endpoints of one instance, each over its own keep-alive session.

    The definitions session is used by the FlagEvaluator's thread only; the ``/flags`` session
    is shared by the app threads that need a remote evaluation (urllib3's pool is thread-safe).
    """

    def __init__(
        self,
        host: str,
        *,
        api_key: str | None,
        personal_api_key: str | None,
        flags_timeout: float,
        definitions_timeout: float,
        verify: bool | str,
        log: Any,
    ) -> None:
        self.host = host
        self.api_key = api_key
        self.personal_api_key = personal_api_key
        self.flags_timeout = flags_timeout
        self.definitions_timeout = definitions_timeout
        self.verify = verify
        self.log = log
        self.throttle = LogThrottle()
        # From now on every phactor log line masks these (see phactor._log).
        register_secrets(api_key, personal_api_key)
        # Once the server answers 404 on /flags/definitions it is an older one: stay on the
        # legacy path instead of paying a 404 on every poll.
        self.definitions_path = DEFINITIONS_PATH
        self._definitions_session = self._session()
        self._flags_session = self._session()

    def _session(self) -> BoundedSession:
        # Lazily: keeps `import phactor` cheap (see transport.py). Each request is bounded in
        # total by its timeout, and `verify` goes with every request (see phactor._http).
        load_http_stack()  # fork-safe import (see transport.py)
        from phactor._http import BoundedSession  # lazy: start-up time (requests)

        return BoundedSession(verify=self.verify, headers={"User-Agent": USER_AGENT}, url=self.host)

    def reset_after_fork(self) -> None:
        """New sessions: the parent's pooled sockets must not be shared with a forked child."""
        self._definitions_session = self._session()
        self._flags_session = self._session()
        self.throttle = LogThrottle()

    def close(self) -> None:
        """Close both sessions (they reopen connections if used again)."""
        for session in (self._definitions_session, self._flags_session):
            try:
                session.close()
            except Exception:
                pass

    # --- definitions -----------------------------------------------------------------------

    def fetch_definitions(self, etag: str | None) -> DefinitionsFetch:
        """GET the definitions (If-None-Match ``etag``), falling back to the legacy path on 404."""
        fetch = self._get_definitions(self.definitions_path, etag)
        if fetch.status == 404 and self.definitions_path == DEFINITIONS_PATH:
            self.log.info(
                "flag_definitions_fallback",
                detail=f"{DEFINITIONS_PATH} answered 404; using {LEGACY_DEFINITIONS_PATH}",
            )
            self.definitions_path = LEGACY_DEFINITIONS_PATH
            fetch = self._get_definitions(LEGACY_DEFINITIONS_PATH, etag)
        return fetch

    def _get_definitions(self, path: str, etag: str | None) -> DefinitionsFetch:
        headers = {"Authorization": f"Bearer {self.personal_api_key or ''}"}
        if etag:
            headers["If-None-Match"] = etag
        params = {"token": self.api_key or "", "send_cohorts": ""}
        try:
            response = self._definitions_session.request(
                "GET",
                self.host + path,
                params=params,
                headers=headers,
                timeout=self.definitions_timeout,
                max_body=DEFINITIONS_MAX_ANSWER,
            )
        except _requests().RequestException as error:
            return DefinitionsFetch("failed", detail=_transport_reason(error), path=path)
        status = response.status_code
        if response.body_cut:
            detail = f"malformed_definitions: answer over {DEFINITIONS_MAX_ANSWER} bytes"
            return DefinitionsFetch("failed", status=status, detail=detail, path=path)
        if status == 304:
            return DefinitionsFetch("not_modified", etag=etag, status=304, path=path)
        if status in (401, 402):
            what = "personal_api_key rejected" if status == 401 else "payment required (quota)"
            return DefinitionsFetch(
                "unauthorized", status=status, detail=f"{status}: {what}", path=path
            )
        if status != 200:
            return DefinitionsFetch(
                "failed", status=status, detail=f"api_error_{status}", path=path
            )
        try:
            body = _decode_without_gc(response.content)
        except orjson.JSONDecodeError:
            return DefinitionsFetch(
                "failed", status=status, detail="malformed_definitions: not JSON", path=path
            )
        if not isinstance(body, dict) or not isinstance(body.get("flags"), list):
            return DefinitionsFetch(
                "failed",
                status=status,
                detail="malformed_definitions: no 'flags' list",
                path=path,
            )
        return DefinitionsFetch(
            "loaded", body=body, etag=response.headers.get("ETag"), status=status, path=path
        )

    # --- remote evaluation -----------------------------------------------------------------

    def post_flags(self, body: Mapping[str, Any]) -> RemoteFlags:
        """POST one ``/flags`` request (one retry on transport errors, 502 and 504).

        Never raises: failures give ``RemoteFlags`` with no results, every requested key
        unresolved and ``error`` set to ``timeout``, ``connection_error``, ``api_error_<status>``,
        ``malformed_response``, ``quota_limited`` or ``invalid_request``.
        """
        requested = body.get("flag_keys_to_evaluate")
        if not walk_is_linear(body):  # person/group properties sharing containers: a bounded copy
            body = json_safe(body, _MAX_BODY_VALUES)
        try:
            data = orjson.dumps(body, default=str, option=orjson.OPT_NON_STR_KEYS)
        except TypeError as error:
            return self._failed(requested, "invalid_request", repr(error))
        url = self.host + FLAGS_PATH
        headers = {"Content-Type": "application/json"}
        reason = "connection_error"
        detail = ""
        for attempt in (1, 2):
            try:
                response = self._flags_session.request(
                    "POST",
                    url,
                    data=data,
                    headers=headers,
                    timeout=self.flags_timeout,
                    max_body=FLAGS_MAX_ANSWER,
                )
            except _requests().RequestException as error:
                reason, detail = _transport_reason(error), scrub(repr(error))
                continue
            status = response.status_code
            if status in _RETRY_STATUSES and attempt == 1:
                reason, detail = f"api_error_{status}", ""
                continue
            if status != 200:
                # Masked before the cut (a cut key would stay readable); a proxy may echo the
                # request, project key included, in its error body.
                detail = scrub(response.text)[:200]
                return self._failed(requested, f"api_error_{status}", detail)
            if response.body_cut:
                detail = f"answer over {FLAGS_MAX_ANSWER} bytes"
                return self._failed(requested, "malformed_response", detail)
            try:
                decoded = orjson.loads(response.content)
            except orjson.JSONDecodeError:
                return self._failed(requested, "malformed_response", "body is not JSON")
            parsed = parse_flags_response(decoded, requested)
            if parsed.error in ("malformed_response", "quota_limited"):
                self._log_failure(parsed.error, "")
            return parsed
        return self._failed(requested, reason, detail)

    def _failed(self, requested: Any, reason: str, detail: str) -> RemoteFlags:
        self._log_failure(reason, detail)
        keys = requested if isinstance(requested, list) else []
        return RemoteFlags({}, dict.fromkeys(keys, reason), reason)

    def _log_failure(self, reason: str, detail: str) -> None:
        count = self.throttle.should_log(reason)
        if count:
            self.log.warning(
                "remote_flags_failed",
                reason=reason,
                detail=detail,
                count=count,
                effect="flags without a local value read as None",
            )


def _transport_reason(error: BaseException) -> str:
    if isinstance(error, _requests().Timeout):
        return "timeout"
    if isinstance(error, _requests().ConnectionError):
        return "connection_error"
    return "request_error"


def _requests() -> Any:
    """The `requests` module, imported on first use rather than at `import phactor`."""
    import requests

    return requests
