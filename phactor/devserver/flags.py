"""The flag fixtures the devserver answers with: ``POST /flags/`` and the definitions endpoint.

``DevServer(flags=..., flag_payloads=..., flag_definitions=..., personal_api_key=...)`` sets them;
:meth:`~phactor.devserver.DevServer.set_flags` and ``set_flag_definitions`` replace them live.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import threading
import uuid as uuid_module
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import orjson


class FlagFixtures:
    """What the flags and definitions endpoints answer; thread-safe, replaced as a whole."""

    def __init__(self, personal_api_key: str | None) -> None:
        self._lock = threading.Lock()
        self._flags: dict[str, bool | str] = {}
        self._payloads: dict[str, Any] = {}
        self._definitions_body = b""
        self._definitions_etag = ""
        self.personal_api_key = personal_api_key

    def set_flags(
        self, flags: Mapping[str, bool | str], payloads: Mapping[str, Any] | None = None
    ) -> None:
        for key, value in flags.items():
            if not isinstance(key, str) or not isinstance(value, bool | str):
                raise TypeError("flags must map str keys to bool or variant str values")
        with self._lock:
            self._flags = dict(flags)
            self._payloads = dict(payloads or {})

    def set_definitions(
        self, definitions: Sequence[Mapping[str, Any]] | Mapping[str, Any] | None
    ) -> None:
        body = orjson.dumps(_definitions_document(definitions), option=orjson.OPT_NON_STR_KEYS)
        etag = '"' + hashlib.sha1(body).hexdigest()[:20] + '"'
        with self._lock:
            self._definitions_body, self._definitions_etag = body, etag

    def definitions(self) -> tuple[bytes, str]:
        """The definitions document as served, and its ETag."""
        with self._lock:
            return self._definitions_body, self._definitions_etag

    def authorized(self, headers: Mapping[str, str]) -> bool:
        """Whether a definitions request carries a bearer key (the configured one, if any)."""
        auth = headers.get("authorization", "")
        bearer = auth[7:].strip() if auth.lower().startswith("bearer ") else ""
        return bool(bearer) and (not self.personal_api_key or bearer == self.personal_api_key)

    def response(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """The v4 ``/flags/`` answer to a request ``body``."""
        with self._lock:
            flags, payloads = dict(self._flags), dict(self._payloads)
        wanted = body.get("flag_keys_to_evaluate")
        wanted_keys = set(wanted) if isinstance(wanted, list) else None
        return {
            "flags": {
                key: _flag_entry(index, key, value, payloads.get(key))
                for index, (key, value) in enumerate(flags.items())
                if wanted_keys is None or key in wanted_keys
            },
            "errorsWhileComputingFlags": False,
            "requestId": str(uuid_module.uuid4()),
            "evaluatedAt": int(dt.datetime.now(dt.UTC).timestamp() * 1000),
        }


def etags(header: str) -> Iterable[str]:
    """The entity tags listed in an ``If-None-Match`` header, weak ones as strong."""
    return [tag.strip().removeprefix("W/") for tag in header.split(",") if tag.strip()]


def _flag_entry(index: int, key: str, value: Any, payload: Any) -> dict[str, Any]:
    enabled = value is not False and value is not None
    variant = value if isinstance(value, str) else None
    return {
        "key": key,
        "enabled": enabled,
        "variant": variant,
        "reason": {
            "code": "condition_match" if enabled else "no_condition_match",
            "condition_index": 0 if enabled else None,
            "description": "Matched condition set 1" if enabled else "No matching condition set",
        },
        "metadata": {
            "id": index + 1,
            "version": 1,
            "payload": None if payload is None else orjson.dumps(payload).decode(),
        },
    }


def _definitions_document(definitions: Any) -> dict[str, Any]:
    if definitions is None:
        definitions = []
    if isinstance(definitions, list | tuple):
        return {"flags": list(definitions), "group_type_mapping": {}, "cohorts": {}}
    if isinstance(definitions, Mapping):
        document = dict(definitions)
        document.setdefault("flags", [])
        document.setdefault("group_type_mapping", {})
        document.setdefault("cohorts", {})
        return document
    raise TypeError("flag_definitions must be a list of flags or a mapping with 'flags'")
