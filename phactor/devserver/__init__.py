"""A small local PostHog-compatible endpoint: the embedded default for demos, and a real
(optionally misbehaving) server for integration tests.

Standard library plus orjson only. Start it in-process::

    with DevServer() as server:                      # port 0: a free port is picked
        phactor.start(api_key="phc_test", host=server.url)
        ...
        assert server.wait_for(3, timeout=5)         # blocks on a Condition, no sleeps
        server.events(event="signed_up")             # list of dicts, oldest first

or from a shell: ``python -m phactor.devserver --port 8010 --db events.sqlite``.

Endpoints
---------
- ``POST /batch/``, ``/capture/``, ``/e/``, ``/i/v0/e/`` (the *capture* endpoints). Bodies:
  ``{"api_key", "batch": [...]}``, a single event ``{"api_key", "event", ...}``, or a bare list of
  events carrying their own ``api_key``/``token``. JSON, gzip (``Content-Encoding: gzip``,
  ``?compression=gzip``/``gzip-js``, or gzip magic bytes) and form-encoded ``data=<base64>`` are
  accepted. 200 ``{"status": 1}``; 400 with a ``detail`` message for malformed JSON or events (no
  ``event`` name, no ``distinct_id``, bad ``uuid``, non-object ``properties``); 401 when no api key
  is found (as PostHog does). A rejected request stores nothing.
- ``POST /flags/`` (the *flags* endpoint): answers from ``DevServer(flags=...)`` in the v4 shape.
  A value ``False`` is a disabled flag, ``True`` an enabled boolean flag, a string an enabled
  variant. ``flag_payloads`` maps a key to any JSON value, sent as a JSON string like PostHog does.
- ``GET /flags/definitions`` and ``GET /api/feature_flag/local_evaluation/`` (the *definitions*
  endpoint): returns ``flag_definitions`` (a list of flags, or a full ``{"flags", ...}`` document)
  with an ``ETag``; 304 on a matching ``If-None-Match``; 401 without ``Authorization`` or, when
  ``personal_api_key`` is set, with a different bearer key.
- ``GET /api/events?limit=&offset=&event=&distinct_id=&api_key=``: ``{"results": [...],
  "count": n}``, results **oldest first** (arrival order), ``count`` the number of matching events
  before ``limit``/``offset``. The viewer's parameters ``order=desc``, ``after=``/``before=`` (event
  id cursors), ``project=`` and ``q=`` (text) page on the server (docs/devserver.md).
  ``DELETE /api/events`` clears them.
- ``GET /`` is the live event viewer for a browser (``Accept: text/html``) and the counts as JSON
  otherwise (``GET /api/status`` too); ``/api/projects``, ``/api/faults`` and ``/api/flag_calls``
  feed the page (:mod:`~phactor.devserver.viewer`).

Stored events (SQLite, one table ``events``; ``db=":memory:"`` or a file path) come back from
:meth:`DevServer.events` and the listing as dicts with ``id``, ``api_key``, ``uuid``, ``event``,
``distinct_id``, ``timestamp``, ``properties`` (dict), ``received_at`` and ``raw`` (the event object
exactly as it arrived, e.g. with a top-level ``$set``).

Request log
-----------
Every request to a capture, flags or definitions endpoint is recorded as a :class:`ReceivedRequest`
*before* the response is written, including those answered with an injected fault and those dropped
without an answer. :attr:`DevServer.requests`, :meth:`DevServer.request_count`,
:meth:`DevServer.uuid_counts` (how often each event uuid arrived) and
:meth:`DevServer.wait_for_requests` let a test count exactly what reached the wire;
:meth:`DevServer.wait_for_arrivals` returns as soon as requests were *read*, before any delay or
fault, so a test knows a client is inside a request.

Fault injection
---------------
``endpoint`` selects what a fault applies to: ``"capture"``, ``"flags"``, ``"definitions"`` or
``"any"``. Precedence per request: :meth:`~DevServer.set_mode` > queued one-shot faults (FIFO) >
:meth:`~DevServer.reject_larger_than` > normal handling.

- ``fail_next(n=1, status=500, *, headers=None, body=b"", endpoint="capture", store=False)``: the
  next ``n`` matching requests get ``status`` with ``headers`` (e.g. ``{"Retry-After": "2"}``).
- ``drop_next(n=1, *, reset=False, endpoint="capture", store=False)``: the next ``n`` matching
  requests are read, then the connection is closed without a response (``reset=True``: TCP RST).
- ``store=True`` on either stores the events first: the server accepted them but the answer was
  lost, so a retrying client will deliver the same uuids twice.
- ``set_mode("up" | "down" | "reset" | "error", *, status=503)``: persistent, for every endpoint;
  ``down`` closes each connection without a response, ``reset`` resets it, ``error`` answers
  ``status``.
- ``delay(seconds, *, endpoint="any")``: every matching response waits ``seconds`` (0 clears);
  :meth:`~DevServer.stop` cuts the wait short.
- ``reject_larger_than(limit)``: capture bodies over ``limit`` wire bytes get 413 (None clears).
- ``reset_faults()``: back to a well-behaved server. ``clear()`` forgets events and the request log.

Limits (docs/devserver.md)
--------------------------
- ``max_body_bytes`` (20 MiB, PostHog's cap): a body larger on the wire or once decompressed gets
  413; gzip is inflated incrementally and stops at the cap. So does a body of more than one
  JSON value per 8 bytes of the cap (parsing it would take ~30x its size).
- ``max_events`` (100,000) and ``max_stored_bytes`` (256 MiB of event JSON; None: no limit):
  beyond either the oldest stored events are evicted, counted in :attr:`DevServer.evicted` and
  ``GET /``.
- ``max_requests`` (10,000): the request log keeps the newest requests (and about 64 MiB of
  them); the counts of :meth:`~DevServer.request_count` cover every request.
- ``max_connections`` (256): a connection beyond that many open ones gets 503 and is closed.
- ``read_timeout`` (30 s): a request must arrive in full within it once its first byte came,
  else 408 and the connection closes; ``idle_timeout`` (75 s, None: never) closes a kept-alive
  connection waiting that long for its next request.
- Malformed framing (``Content-Length``, chunked) gets 400 and closes the connection.

Modules
-------
:mod:`~phactor.devserver.server` (the :class:`DevServer`: routing and what each endpoint means),
:mod:`~phactor.devserver.httpd` (connections, framing, timeouts), :mod:`~phactor.devserver.ingest`
(decoding and checking capture bodies), :mod:`~phactor.devserver.store` (SQLite storage),
:mod:`~phactor.devserver.requestlog`, :mod:`~phactor.devserver.faults`,
:mod:`~phactor.devserver.flags` (flag fixtures), :mod:`~phactor.devserver.limits` and
:mod:`~phactor.devserver.viewer` (the page, its files in ``assets/``, and its JSON API).
"""

from __future__ import annotations

from phactor.devserver.faults import Endpoint
from phactor.devserver.limits import (
    DEFAULT_IDLE_TIMEOUT,
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_EVENTS,
    DEFAULT_MAX_REQUESTS,
    DEFAULT_MAX_STORED_BYTES,
    DEFAULT_READ_TIMEOUT,
)
from phactor.devserver.requestlog import ReceivedRequest
from phactor.devserver.server import CAPTURE_PATHS, DevServer

__all__ = [
    "CAPTURE_PATHS",
    "DEFAULT_IDLE_TIMEOUT",
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_MAX_CONNECTIONS",
    "DEFAULT_MAX_EVENTS",
    "DEFAULT_MAX_REQUESTS",
    "DEFAULT_MAX_STORED_BYTES",
    "DEFAULT_READ_TIMEOUT",
    "DevServer",
    "Endpoint",
    "ReceivedRequest",
]
