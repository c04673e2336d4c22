"""Feature flags: pure local evaluation, definition snapshots, evaluation results, /flags parsing."""

from phactor.flags.definitions import Definitions
from phactor.flags.evaluations import FlagEvaluations, decode_payload
from phactor.flags.matching import FlagResult, bucket_hash, evaluate, reason_category
from phactor.flags.remote import RemoteFlags, build_flags_request, parse_flags_response

__all__ = [
    "Definitions",
    "FlagEvaluations",
    "FlagResult",
    "RemoteFlags",
    "bucket_hash",
    "build_flags_request",
    "decode_payload",
    "evaluate",
    "parse_flags_response",
    "reason_category",
]
