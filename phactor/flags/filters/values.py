"""Property values read the way the flags service reads them: as JSON text, numbers, booleans."""

from __future__ import annotations

import json
import math
import re
from decimal import Decimal
from typing import Any

from phactor.encoding import walk_is_linear

_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
_NUMBER_TEXT = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def _float_text(value: float) -> str | None:
    if not math.isfinite(value):
        return None
    text = repr(value)
    if "e" not in text:
        return text
    mantissa, exponent_text = text.split("e")
    exponent = int(exponent_text)
    if -6 < exponent < 0:
        return format(Decimal(text), "f")
    return f"{mantissa}e{'+' if exponent >= 0 else ''}{exponent}"


def _json_text(value: Any) -> str | None:
    """Compact JSON text the way the flags service renders non-string values, or None."""
    if isinstance(value, list):
        parts = []
        for item in value:
            text = _json_text(item)
            if text is None:
                return None
            parts.append(text)
        return "[" + ",".join(parts) + "]"
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            return None
        parts = []
        for k in sorted(value):
            text = _json_text(value[k])
            if text is None:
                return None
            parts.append(json.dumps(k, ensure_ascii=False) + ":" + text)
        return "{" + ",".join(parts) + "}"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, int):
        try:
            return str(value)
        except ValueError:  # more digits than sys.get_int_max_str_digits() allows
            return None
    if isinstance(value, float):
        return _float_text(value)
    return None


def _as_text(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, list | dict) and not walk_is_linear(value):
        return None  # shared or cyclic containers: 2**n values written out, or no end
    return _json_text(value)


def _to_number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (str, int, float, Decimal)):
        return None
    if isinstance(value, str) and not _NUMBER_TEXT.fullmatch(value):
        return None
    try:
        number = float(value)
    except (ValueError, OverflowError):
        return None
    return number if math.isfinite(number) else None


def _truthy(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        return value.lower() == "true"
    if isinstance(value, list):
        return all(_truthy(item) for item in value)
    return False


def _boolean_like(value: Any) -> bool:
    if isinstance(value, bool):
        return True
    if isinstance(value, str):
        return value.lower() in ("true", "false")
    if isinstance(value, list):
        return all(_boolean_like(item) for item in value)
    return False
