"""Capture bodies in, table rows out: undo the SDKs' encodings and check each event (pure, no I/O).

A body that fails a check raises :class:`BadRequest` with the status and PostHog-style error code
the server answers with; nothing of a rejected body is stored.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import datetime as dt
import uuid as uuid_module
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import orjson

from phactor.devserver.limits import MAX_FORM_FIELDS, MIN_BYTES_PER_VALUE


class BadRequest(Exception):
    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail


@dataclass
class Parsed:
    api_key: str | None = None
    rows: list[tuple[Any, ...]] = field(default_factory=list)
    uuids: tuple[str, ...] = ()
    body: Any = None
    error: BadRequest | None = None


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def error_body(code: str, detail: str) -> dict[str, Any]:
    kind = "authentication_error" if code == "invalid_api_key" else "validation_error"
    return {"type": kind, "code": code, "detail": detail, "attr": None}


def too_large(limit: int) -> BadRequest:
    return BadRequest(413, "payload_too_large", f"request body over {limit} bytes")


def gunzip(data: bytes, limit: int) -> bytes:
    """Inflate one or more gzip members, never holding more than ``limit`` + 1 output bytes."""
    parts: list[bytes] = []
    size = 0
    try:
        while data:
            inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
            pending = data
            while not inflater.eof:
                chunk = inflater.decompress(pending, limit - size + 1)
                pending = inflater.unconsumed_tail
                if not chunk and not pending:
                    raise BadRequest(400, "invalid_payload", "invalid gzip body: truncated")
                size += len(chunk)
                if size > limit:
                    raise too_large(limit)
                parts.append(chunk)
            data = inflater.unused_data
            if not data.strip(b"\0"):  # padding after the last member, as gzip(1) allows
                break
    except zlib.error as exc:
        raise BadRequest(400, "invalid_payload", f"invalid gzip body: {exc}") from None
    return b"".join(parts)


def decode_body(
    raw: bytes, headers: Mapping[str, str], query: Mapping[str, str], limit: int
) -> Any:
    """Undo the encodings PostHog SDKs use, then parse JSON; raise BadRequest on failure.

    The body, once decoded and decompressed, may hold at most ``limit`` bytes (413 beyond).
    """
    data = raw
    if headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        try:
            fields = parse_qs(raw.decode("latin-1"), max_num_fields=MAX_FORM_FIELDS)
        except ValueError:
            raise BadRequest(
                400, "invalid_payload", f"form body with over {MAX_FORM_FIELDS} fields"
            ) from None
        if "data" not in fields:
            raise BadRequest(400, "invalid_payload", "form body without a data= field")
        text = fields["data"][0].strip()
        data = text.encode()
        # posthog-js sends base64 of JSON (or of gzip); anything else is taken as JSON text.
        if data[:1] not in (b"{", b"["):
            with contextlib.suppress(binascii.Error, ValueError):
                data = base64.b64decode(data + b"=" * (-len(data) % 4))
    compression = query.get("compression", "")
    gzipped = (
        headers.get("content-encoding", "").lower() == "gzip"
        or compression in ("gzip", "gzip-js")
        or data[:2] == b"\x1f\x8b"
    )
    if gzipped:
        data = gunzip(data, limit)
    elif len(data) > limit:
        raise too_large(limit)
    if not data.strip():
        raise BadRequest(400, "invalid_payload", "empty body")
    # Parsed JSON can take 30x its text (a 20 MiB "[{},{},...]" is ~600 MiB of dicts): bound
    # the number of values to limit / MIN_BYTES_PER_VALUE (~10x the cap in memory at worst).
    # Every value past the first follows a "," or a ":", so counting them is cheap (strings
    # containing them make it an over-estimate), and short bodies cannot reach the bound at all.
    max_values = limit // MIN_BYTES_PER_VALUE
    if len(data) // 2 >= max_values and data.count(b",") + data.count(b":") >= max_values:
        raise BadRequest(413, "payload_too_large", f"body with over {max_values} JSON values")
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(400, "invalid_payload", f"malformed JSON: {exc}") from None


def key_of(obj: Mapping[str, Any]) -> str | None:
    key = obj.get("api_key") or obj.get("token")
    return key if isinstance(key, str) and key else None


def capture_rows(body: Any, received_at: str) -> Parsed:
    """Turn a capture body into table rows; the uuids are collected even when it is rejected."""
    if isinstance(body, list):
        default_key, events = None, body
    elif isinstance(body, dict) and "batch" in body:
        default_key, events = key_of(body), body["batch"]
        if not isinstance(events, list):
            raise BadRequest(400, "invalid_payload", "batch must be a list")
    elif isinstance(body, dict) and "event" in body:
        default_key, events = key_of(body), [body]
    else:
        raise BadRequest(400, "invalid_payload", "expected {batch: [...]}, an event or a list")

    parsed = Parsed(api_key=default_key)
    uuids = [e["uuid"] for e in events if isinstance(e, dict) and isinstance(e.get("uuid"), str)]
    parsed.uuids = tuple(uuids)
    try:
        for index, event in enumerate(events):
            parsed.rows.append(_capture_row(index, event, default_key, received_at))
    except BadRequest as exc:
        parsed.rows = []
        parsed.error = exc
    if parsed.rows and parsed.api_key is None:
        parsed.api_key = parsed.rows[0][0]
    return parsed


def _capture_row(
    index: int, event: Any, default_key: str | None, received_at: str
) -> tuple[Any, ...]:
    where = f"event {index}"
    if not isinstance(event, dict):
        raise BadRequest(400, "invalid_payload", f"{where} is not an object")
    name = event.get("event")
    if not isinstance(name, str) or not name:
        raise BadRequest(400, "invalid_payload", f"{where} has no event name")
    properties = event.get("properties", {})
    if properties is None:
        properties = {}
    if not isinstance(properties, dict):
        raise BadRequest(400, "invalid_payload", f"{where} properties is not an object")
    api_key = key_of(event) or default_key or key_of(properties)
    if api_key is None:
        raise BadRequest(401, "invalid_api_key", "API key not provided")
    distinct_id = event.get("distinct_id")
    if distinct_id is None:
        distinct_id = properties.get("distinct_id", properties.get("$distinct_id"))
    if distinct_id is None or distinct_id == "" or isinstance(distinct_id, dict | list | bool):
        raise BadRequest(400, "invalid_payload", f"{where} has no usable distinct_id")
    event_uuid = event.get("uuid")
    if event_uuid is not None:
        try:
            uuid_module.UUID(str(event_uuid))
        except ValueError:
            raise BadRequest(400, "invalid_payload", f"{where} has an invalid uuid") from None
    timestamp = event.get("timestamp")
    return (
        api_key,
        None if event_uuid is None else str(event_uuid),
        name,
        str(distinct_id),
        None if timestamp is None else str(timestamp),
        # str, not orjson's bytes: those keep several times their size in spare capacity
        # (a 4 KB dict -> ~31 KB) while a batch waits to be stored; TEXT is the schema's type.
        orjson.dumps(properties, option=orjson.OPT_NON_STR_KEYS).decode(),
        received_at,
        orjson.dumps(event, option=orjson.OPT_NON_STR_KEYS).decode(),
    )
