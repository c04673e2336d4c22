"""Feature flags: pure local evaluation, definition snapshots, evaluation results, /flags parsing,
the FlagEvaluator actor that keeps definitions fresh, and the flag HTTP client."""

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
