"""Feature flags: pure local evaluation, definition snapshots, evaluation results, /flags parsing,
the FlagEvaluator actor that keeps definitions fresh, and the flag HTTP client.

Names are imported on first access (PEP 562): `import phactor` loads only the `Instance` mixin in
`phactor.flags.methods`, and the flag core loads when an instance first needs it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from phactor.flags.definitions import Definitions
    from phactor.flags.evaluations import FlagEvaluations, decode_payload
    from phactor.flags.evaluator import (
        FlagCalledCache,
        FlagCalledReporter,
        FlagEvaluator,
        FlagState,
        flag_called_properties,
    )
    from phactor.flags.http import DefinitionsFetch, FlagsHttp
    from phactor.flags.matching import FlagResult, bucket_hash, evaluate, reason_category
    from phactor.flags.remote import RemoteFlags, build_flags_request, parse_flags_response

_EXPORTS = {
    "Definitions": "definitions",
    "FlagEvaluations": "evaluations",
    "decode_payload": "evaluations",
    "FlagCalledCache": "evaluator",
    "FlagCalledReporter": "evaluator",
    "FlagEvaluator": "evaluator",
    "FlagState": "evaluator",
    "flag_called_properties": "evaluator",
    "DefinitionsFetch": "http",
    "FlagsHttp": "http",
    "FlagResult": "matching",
    "bucket_hash": "matching",
    "evaluate": "matching",
    "reason_category": "matching",
    "RemoteFlags": "remote",
    "build_flags_request": "remote",
    "parse_flags_response": "remote",
}

__all__ = [
    "Definitions",
    "DefinitionsFetch",
    "FlagCalledCache",
    "FlagCalledReporter",
    "FlagEvaluations",
    "FlagEvaluator",
    "FlagResult",
    "FlagState",
    "FlagsHttp",
    "RemoteFlags",
    "bucket_hash",
    "build_flags_request",
    "decode_payload",
    "evaluate",
    "flag_called_properties",
    "parse_flags_response",
    "reason_category",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'phactor.flags' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"phactor.flags.{module}"), name)
    globals()[name] = value
    return value
