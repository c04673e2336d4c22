"""Feature flags: pure local evaluation, definition snapshots, evaluation results, /flags parsing,
the FlagEvaluator actor that keeps definitions fresh, and the flag HTTP client.

Names are imported on first access (PEP 562): `import phactor` loads only `phactor.flags.methods`
(an instance's flags part), and the flag core loads when an instance first needs it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from phactor._lazy import lazy_exports

if TYPE_CHECKING:
    from phactor.flags.conditions import bucket_hash
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
    from phactor.flags.matching import evaluate
    from phactor.flags.remote import RemoteFlags, build_flags_request, parse_flags_response
    from phactor.flags.results import FeatureFlagResult, FlagResult, reason_category

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
    "FeatureFlagResult": "results",
    "FlagResult": "results",
    "bucket_hash": "conditions",
    "evaluate": "matching",
    "reason_category": "results",
    "RemoteFlags": "remote",
    "build_flags_request": "remote",
    "parse_flags_response": "remote",
}

__all__ = [
    "Definitions",
    "DefinitionsFetch",
    "FeatureFlagResult",
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


__getattr__ = lazy_exports(__name__, _EXPORTS, globals())
