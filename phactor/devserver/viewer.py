"""The live event viewer: the page at ``GET /`` and the JSON API it reads (docs/devserver.md).

The page is three static files shipped in ``phactor/devserver/assets/`` (HTML, CSS, plain
JavaScript: no CDN, no build step) served with a strict Content-Security-Policy; everything it
shows comes from the ``/api/*`` endpoints below, as JSON, and is put in the DOM as text.

- ``GET /api/events``: the stored events, filtered and paged on the server (see
  :func:`listing_request`).
- ``GET /api/status``: totals and the newest event id (the cursor to poll from).
- ``GET /api/projects``: per api key, events stored, batches, gzip share, rejected requests.
- ``GET /api/faults`` / ``POST /api/faults``: the fault mode in force; switch it.
- ``GET /api/flag_calls``: ``$feature_flag_called`` events grouped per flag and response.
"""

from __future__ import annotations

import importlib.resources
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from phactor.devserver.faults import FaultPlan
from phactor.devserver.httpd import Handler
from phactor.devserver.ingest import BadRequest, error_body
from phactor.devserver.limits import MAX_SQL_INT
from phactor.devserver.requestlog import RequestLog
from phactor.devserver.store import EventStore, Query

PAGE_HEADERS: Mapping[str, str] = {
    # Only the page's own files run; no inline script, no framing, no referrer to elsewhere.
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none';"
        " form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
API_HEADERS: Mapping[str, str] = {"X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"}

_ASSETS = {
    "/": ("viewer.html", "text/html; charset=utf-8"),
    "/viewer.css": ("viewer.css", "text/css; charset=utf-8"),
    "/viewer.js": ("viewer.js", "text/javascript; charset=utf-8"),
}

MAX_PAGE = 1000
"""The most events one ``GET /api/events`` page returns when the viewer's parameters are used."""

FAULT_ACTIONS = ("up", "down", "reset", "error", "slow")
"""What ``POST /api/faults`` accepts as ``action``; the page's buttons."""

DEFAULT_SLOW_SECONDS = 2.0
_MAX_SLOW_SECONDS = 600.0
_USERS_PER_VARIANT = 20


@dataclass(frozen=True)
class Listing:
    """A parsed ``GET /api/events`` request."""

    query: Query
    limit: int | None
    offset: int
    newest_first: bool


def _non_negative(query: Mapping[str, str], name: str) -> int | None:
    text = query.get(name) or None
    if text is None:
        return None
    if not (text.isascii() and text.isdigit() and int(text) <= MAX_SQL_INT):
        raise BadRequest(400, "invalid_input", f"{name} must be a non-negative int")
    return int(text)


def listing_request(query: Mapping[str, str]) -> Listing:
    """Parse the listing's query string; BadRequest (400 ``invalid_input``) naming a bad one.

    ``limit``, ``offset``, ``after``, ``before``: non-negative ints. ``order``: ``asc`` (oldest
    first, the default) or ``desc``. ``project`` is ``api_key`` by another name; ``q`` a
    case-insensitive substring of the event's JSON. Empty values count as absent.
    """
    limit = _non_negative(query, "limit")
    offset = _non_negative(query, "offset") or 0
    order = query.get("order") or "asc"
    if order not in ("asc", "desc"):
        raise BadRequest(400, "invalid_input", "order must be asc or desc")
    project = query.get("project") or None
    api_key = query.get("api_key") or None
    if project is not None and api_key is not None and project != api_key:
        raise BadRequest(400, "invalid_input", "project and api_key name different keys")
    return Listing(
        Query(
            event=query.get("event") or None,
            distinct_id=query.get("distinct_id") or None,
            api_key=project or api_key,
            q=query.get("q") or None,
            after=_non_negative(query, "after"),
            before=_non_negative(query, "before"),
        ),
        limit,
        offset,
        order == "desc",
    )


def flag_groups(rows: list[tuple[Any, str, str, int]]) -> list[dict[str, Any]]:
    """Group (flag, response JSON, distinct_id, count) rows per flag, then per response."""
    flags: dict[str, dict[str, dict[str, Any]]] = {}
    for flag, response, distinct_id, count in rows:
        name = flag if isinstance(flag, str) else orjson.dumps(flag).decode()
        variants = flags.setdefault(name, {})
        variant = variants.setdefault(
            response, {"response": orjson.loads(response), "events": 0, "users": 0, "sample": []}
        )
        variant["events"] += count
        variant["users"] += 1
        if len(variant["sample"]) < _USERS_PER_VARIANT:
            variant["sample"].append(distinct_id)
    return [
        {
            "flag": name,
            "events": sum(v["events"] for v in variants.values()),
            "variants": sorted(variants.values(), key=lambda v: -v["users"]),
        }
        for name, variants in flags.items()
    ]


def apply_fault_action(faults: FaultPlan, body: Any) -> None:
    """Switch ``faults`` as a ``POST /api/faults`` body asks; BadRequest when it makes no sense.

    ``{"action": "up"}`` resets every fault (as :meth:`DevServer.reset_faults`); ``"down"`` and
    ``"reset"`` set that mode; ``"error"`` answers ``status`` (500 by default); ``"slow"`` holds
    every response ``seconds`` (2 by default) on top of the mode in force.
    """
    if not isinstance(body, dict) or body.get("action") not in FAULT_ACTIONS:
        raise BadRequest(400, "invalid_input", f"body must be {{'action': one of {FAULT_ACTIONS}}}")
    action = body["action"]
    if action == "up":
        faults.reset()
    elif action in ("down", "reset"):
        faults.set_mode(action)
    elif action == "error":
        status = body.get("status", 500)
        if not isinstance(status, int) or isinstance(status, bool) or not 400 <= status <= 599:
            raise BadRequest(400, "invalid_input", "status must be an int in 400..599")
        faults.set_mode("error", status=status)
    else:
        seconds = body.get("seconds", DEFAULT_SLOW_SECONDS)
        if (
            not isinstance(seconds, int | float)
            or isinstance(seconds, bool)
            or not 0 <= seconds <= _MAX_SLOW_SECONDS
        ):
            raise BadRequest(400, "invalid_input", f"seconds must be in 0..{_MAX_SLOW_SECONDS:g}")
        faults.delay(float(seconds))


def wants_page(headers: Mapping[str, str]) -> bool:
    """Whether ``GET /`` should be the page: a browser asks for HTML; scripts get the status."""
    return "text/html" in headers.get("accept", "")


def asset(path: str) -> tuple[bytes, str] | None:
    """The page file served at ``path`` and its content type, or None."""
    entry = _ASSETS.get(path)
    if entry is None:
        return None
    name, content_type = entry
    data = importlib.resources.files("phactor.devserver").joinpath("assets", name).read_bytes()
    return data, content_type


class ViewerApi:
    """Serves the page and ``/api/*`` (except the listing's ``DELETE``) from the server's parts."""

    def __init__(
        self,
        store: EventStore,
        request_log: RequestLog,
        faults: FaultPlan,
        status: Callable[[], dict[str, Any]],
    ) -> None:
        self._store = store
        self._log = request_log
        self._faults = faults
        self._status = status

    def serve(
        self, handler: Handler, method: str, path: str, query: Mapping[str, str], body: bytes
    ) -> bool:
        """Answer a viewer request; False when ``method``/``path`` is not one of them."""
        route = (method, path.rstrip("/") or "/")
        try:
            if route == ("GET", "/") and not wants_page(_lower(handler)):
                self._json(handler, self._status())
            elif method == "GET" and (found := asset(route[1])) is not None:
                handler.send_bytes(200, found[0], PAGE_HEADERS, found[1])
            elif route == ("GET", "/api/events"):
                self._serve_events(handler, query)
            elif route == ("GET", "/api/status"):
                self._json(handler, {**self._status(), "latest_id": self._store.latest_id()})
            elif route == ("GET", "/api/projects"):
                self._json(handler, self._projects())
            elif route == ("GET", "/api/faults"):
                self._json(handler, self._faults.snapshot())
            elif route == ("POST", "/api/faults"):
                self._switch_faults(handler, body)
            elif route == ("GET", "/api/flag_calls"):
                rows = self._store.flag_calls(query.get("project") or None)
                self._json(handler, {"flags": flag_groups(rows)})
            else:
                return False
        except BadRequest as exc:
            handler.send_json(exc.status, error_body(exc.code, exc.detail), API_HEADERS)
        return True

    def _json(self, handler: Handler, payload: Any) -> None:
        handler.send_json(200, payload, API_HEADERS)

    def _serve_events(self, handler: Handler, query: Mapping[str, str]) -> None:
        listing = listing_request(query)
        paged = any(query.get(k) for k in ("after", "before", "order", "project", "q"))
        limit = listing.limit
        if paged and (limit is None or limit > MAX_PAGE):
            limit = MAX_PAGE  # the viewer's parameters never load everything at once
        results, count = self._store.page(
            listing.query,
            limit,
            offset=listing.offset,
            newest_first=listing.newest_first,
            with_count=True,
        )
        self._json(handler, {"results": results, "count": count})

    def _projects(self) -> dict[str, Any]:
        stored = self._store.per_key()
        requests = self._log.projects()
        keys = sorted(set(stored) | {k for k in requests if k is not None}) + (
            [None] if None in requests else []
        )
        empty: dict[str, Any] = {
            "batches": 0,
            "gzip_batches": 0,
            "gzip_share": None,
            "rejected": {},
            "flags_requests": 0,
        }
        return {
            "projects": [
                {"api_key": key, "events": stored.get(key, 0) if key else 0}
                | requests.get(key, empty)
                for key in keys
            ]
        }

    def _switch_faults(self, handler: Handler, body: bytes) -> None:
        # A JSON content type makes a cross-site form post impossible: browsers preflight it.
        if not _lower(handler).get("content-type", "").startswith("application/json"):
            raise BadRequest(415, "unsupported_media_type", "send the body as application/json")
        try:
            parsed = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise BadRequest(400, "invalid_input", f"malformed JSON: {exc}") from None
        apply_fault_action(self._faults, parsed)
        self._json(handler, self._faults.snapshot())


def _lower(handler: Handler) -> dict[str, str]:
    return {k.lower(): v for k, v in handler.headers.items()}
