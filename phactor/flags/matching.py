"""Pure local evaluation of PostHog feature flags (no threads, no I/O).

The semantics follow the ``posthog`` package's local evaluator, which the differential test
(tests/test_flag_differential.py) checks case by case. Public names:

- ``evaluate(defs, distinct_id, *, groups=None, person_properties=None, group_properties=None,
  flag_keys=None, device_id=None) -> (results, unresolved)``: ``results`` maps flag key to a
  ``FlagResult``; ``unresolved`` maps flag key to a reason string for flags local evaluation could
  not decide (the caller may ask the server). Keys in ``flag_keys`` that have no definition are
  unresolved with reason ``"unknown_flag"``.
- ``FlagResult``: frozen value with ``key``, ``value`` (bool or variant str), ``payload`` (the raw
  payload from the definition, usually a JSON string; decoded by ``FlagEvaluations``), ``reason``,
  ``condition_index``, ``flag_id``, ``version``, ``locally_evaluated``.
- ``reason_category(reason) -> str``: maps a reason string onto PostHog's coarse unresolved reasons
  (``experience_continuity``, ``unsupported_definition``, ``unresolved_dependency``,
  ``missing_context``) or ``unknown_flag``.
- ``bucket_hash(key, bucketing_value, salt="") -> float``: the rollout hash in [0, 1].

Reason strings look like ``"missing_property:email"``, ``"unknown_operator:foo"``,
``"ensure_experience_continuity"``, ``"static_cohort:7"``, ``"missing_dependency:beta"``,
``"unresolved_dependency:beta"``, ``"unsupported_regex:name"``, ``"malformed_definition"``.

Inconclusive outcomes are returned as ``_Undecided`` values rather than raised, so a missing
property (common on the request path) costs no exception. Definitions that would make the
reference evaluator crash raise internally and end as ``"malformed_definition"``.
"""

from __future__ import annotations

import calendar
import datetime as _dt
import functools
import hashlib
import json
import math
import operator as _op
import re
import re._compiler as _sre_compiler  # type: ignore[import-not-found]
import re._constants as _sre  # type: ignore[import-not-found]
import re._parser as _sre_parser  # type: ignore[import-not-found]
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any, NamedTuple

from phactor.events import walk_is_linear

if TYPE_CHECKING:
    from phactor.flags.definitions import Definitions

__all__ = ["FlagResult", "bucket_hash", "evaluate", "reason_category"]

_SCALE = float(0xFFFFFFFFFFFFFFF)
_MISSING: Any = object()
_UTC = _dt.UTC

# Unresolved categories, lower rank wins when several causes apply (PostHog's precedence).
_EXPERIENCE_CONTINUITY = 0
_UNSUPPORTED = 1
_UNRESOLVED_DEPENDENCY = 2
_MISSING_CONTEXT = 3
_CATEGORY_NAMES = (
    "experience_continuity",
    "unsupported_definition",
    "unresolved_dependency",
    "missing_context",
)
_REASON_RANKS = {
    "ensure_experience_continuity": _EXPERIENCE_CONTINUITY,
    "unresolved_dependency": _UNRESOLVED_DEPENDENCY,
    "missing_property": _MISSING_CONTEXT,
    "invalid_property_value": _MISSING_CONTEXT,
    "missing_group_properties": _MISSING_CONTEXT,
    "missing_device_id": _MISSING_CONTEXT,
}


def reason_category(reason: str) -> str:
    """Return PostHog's coarse unresolved category for one of our reason strings."""
    head = reason.split(":", 1)[0]
    if head == "unknown_flag":
        return "unknown_flag"
    return _CATEGORY_NAMES[_REASON_RANKS.get(head, _UNSUPPORTED)]


class _Undecided:
    """An inconclusive outcome; ``server`` marks causes that stop all later conditions."""

    __slots__ = ("rank", "reason", "server")

    def __init__(self, reason: str, rank: int, server: bool = False) -> None:
        self.reason = reason
        self.rank = rank
        self.server = server

    def __repr__(self) -> str:
        return f"_Undecided({self.reason!r}, {self.rank}, server={self.server})"


def _pick(current: _Undecided | None, new: _Undecided) -> _Undecided:
    if current is None or new.rank < current.rank:
        return new
    return current


class _Malformed(Exception):
    """A definition shape the reference evaluator would crash on."""


class _CrashMarker:
    """Stands in for a definition part that is only broken when evaluation reaches it."""

    __slots__ = ()


_CRASH = _CrashMarker()


class FlagResult(NamedTuple):
    """One decided flag: ``value`` is True/False or the variant key.

    A named tuple because results are created on the request path and tuples are the cheapest
    immutable value Python has.
    """

    key: str
    value: bool | str
    payload: Any = None
    reason: str | None = None
    condition_index: int | None = None
    flag_id: Any = None
    version: Any = None
    locally_evaluated: bool = True

    @property
    def enabled(self) -> bool:
        """Whether the flag is on (a variant counts as on)."""
        return self.value is not False

    @property
    def variant(self) -> str | None:
        """The variant key for multivariate flags, else None."""
        return self.value if isinstance(self.value, str) else None


_HASH_CACHE: dict[str, float] = {}
_HASH_CACHE_SIZE = 50_000


def bucket_hash(key: Any, bucketing_value: Any, salt: str = "") -> float:
    """Return the deterministic rollout hash of ``key.bucketing_value+salt`` in [0, 1]."""
    text = f"{key}.{bucketing_value}{salt}"
    cached = _HASH_CACHE.get(text)
    if cached is not None:
        return cached
    digest = hashlib.sha1(text.encode()).digest()
    # The first 15 hex digits are the top 60 bits of the first 8 bytes.
    value = (int.from_bytes(digest[:8], "big") >> 4) / _SCALE
    # The same users come back request after request; a bounded memo saves the sha1. Clearing
    # when full keeps it O(1) and is safe under concurrent readers (dict ops are atomic).
    if len(_HASH_CACHE) >= _HASH_CACHE_SIZE:
        _HASH_CACHE.clear()
    _HASH_CACHE[text] = value
    return value


def _holdout_hash(bucketing_value: Any) -> float:
    digest = hashlib.sha1(f"holdout-{bucketing_value}".encode()).digest()
    return (int.from_bytes(digest[:8], "big") >> 4) / _SCALE


# --- value conversions -------------------------------------------------------------------------

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


# --- regex: only the syntax Python and the server's Rust engine read the same way ---------------

_DEFER: Any = object()
_REPEAT = re.compile(r"\{([0-9]+)(?:,([0-9]*))?\}")
_HEX = frozenset("0123456789abcdefABCDEF")
_SIMPLE_ESCAPES = frozenset("dDsSwWbfnrt")
_CLASS_ESCAPES = frozenset("\\-[]^.$*+?(){}|")
_NO_REPEAT_AFTER = frozenset(("", "|", "(", "^", "$", "empty group", "quantifier"))


@dataclass(frozen=True, slots=True)
class _RegexInfo:
    regex: re.Pattern[str]
    word_class: bool
    space_class: bool
    end_anchor: bool
    repeats: bool
    max_input: int  # longer values are not searched here (unsupported_regex: the server decides)


@functools.lru_cache(maxsize=1024)
def _prepare_regex(pattern: str) -> Any:
    """Return a ``_RegexInfo``, None for invalid syntax (never matches), or ``_DEFER``.

    Cached: every poll compiles the same patterns again, and the cost analysis is not free."""
    out: list[str] = []
    n = len(pattern)
    i = 0
    class_at = -1
    prev = ""
    group_repeats: list[bool] = []
    closed_group_repeats = False
    word = space = end_anchor = repeats = False
    while i < n:
        c = pattern[i]
        if "\ud800" <= c <= "\udfff":
            return _DEFER
        if class_at < 0:
            end_anchor |= c == "$"
            repeats |= c in "*+?{|"
            if c == "(":
                group_repeats.append(False)
            elif c == ")":
                closed_group_repeats = group_repeats.pop() if group_repeats else False
                if group_repeats:
                    group_repeats[-1] |= closed_group_repeats
            elif c in "*+?{":
                # A quantified group that is quantified again backtracks badly under the server's engine.
                if prev == ")" and closed_group_repeats:
                    return _DEFER
                if group_repeats:
                    group_repeats[-1] = True
        if c == "\\":
            i += 1
            if i == n:
                out.append("\\")
                break
            e = pattern[i]
            if e == "x":
                digits = pattern[i + 1 : i + 3]
                if len(digits) != 2 or not set(digits) <= _HEX:
                    return _DEFER
                out.append("\\x" + digits)
                i += 2
            else:
                if e in "bB<>" and class_at < 0:
                    return _DEFER
                if e not in _SIMPLE_ESCAPES:
                    if not (0x20 <= ord(e) <= 0x7E and not e.isalnum()):
                        return _DEFER
                    if class_at >= 0 and e not in _CLASS_ESCAPES:
                        return _DEFER
                word |= e in "wW"
                space |= e in "sS"
                out.append("\\" + e)
            prev = "literal"
        elif c == "[":
            if class_at >= 0:
                return _DEFER
            class_at = i
            out.append(c)
        elif c == "]" and class_at >= 0:
            start = class_at + (2 if pattern[class_at + 1 : class_at + 2] == "^" else 1)
            if i == start:
                return _DEFER
            class_at = -1
            prev = "literal"
            out.append(c)
        elif class_at >= 0:
            if pattern[i : i + 2] in ("&&", "--", "~~"):
                return _DEFER
            if c == "-" and i + 1 < n and pattern[i + 1] != "]":
                if pattern[i + 1 : i + 3] in ("\\d", "\\D", "\\s", "\\S", "\\w", "\\W") or (
                    i >= 2 and pattern[i - 2] == "\\" and pattern[i - 1] in "dDsSwW"
                ):
                    return _DEFER
            out.append(c)
        elif c == "(" and pattern[i + 1 : i + 2] == "?":
            if pattern[i + 2 : i + 3] != ":":
                return _DEFER
            out.append("(?:")
            i += 2
            prev = "("
        elif c == "{":
            m = _REPEAT.match(pattern, i)
            if m is None or prev in _NO_REPEAT_AFTER:
                return _DEFER
            if any(len(g) > 10 or int(g) > 0xFFFFFFFF for g in m.groups() if g):
                return _DEFER
            out.append(m.group())
            i += len(m.group()) - 1
            if pattern[i + 1 : i + 2] in ("+", "{"):
                return _DEFER
            prev = "quantifier"
        else:
            if c in "*+?":
                if prev in ("^", "$", "empty group") or pattern[i + 1 : i + 2] in ("+", "{"):
                    return _DEFER
                prev = "quantifier"
            else:
                prev = "empty group" if c == ")" and prev in ("(", "empty group") else c
            # The server's `$` only matches at the very end, Python's also before a final newline.
            out.append("\\Z" if c == "$" else c)
        i += 1
    translated = "".join(out)
    try:
        regex = re.compile(translated)
    except re.error:
        return None
    except Exception:
        return _DEFER
    try:
        regex, max_input = _bounded_regex(translated, regex)
    except Exception:  # _Unsafe, or anything the analysis did not expect: never run it here
        return _DEFER
    return _RegexInfo(regex, word, space, end_anchor, repeats, max_input)


# --- regex cost: accept only patterns whose backtracking is provably (near) linear -------------
#
# `re` backtracks while holding the GIL, so one catastrophic flag regex (`^(a|a)*$`) freezes every
# thread of the app. The server's engine is linear; ours is not, so a pattern is only run locally
# when its parse tree (re._parser, the tree `re` itself compiles) shows its cost is bounded:
# - a repeated group must be deterministic: no quantifier inside, alternatives that start with
#   disjoint characters and never match the empty string (`(a|a)*`, `(.|\s)*`, `(a+)+` refused);
# - variable-length items ("elastic": `x*`, `[a-z]+`, `x?`, `(ab)*`) multiply their cost when they
#   can trade characters (`\d*\d*`, `.*.*`): the longest chain of such trading items is the
#   polynomial degree of one match attempt; an unanchored search adds the scan as one more item.
# Degree <= 1 runs on any value; degree 2 only on values up to _QUADRATIC_INPUT characters (longer
# ones go to the server); higher degrees, backreferences, lookarounds and anything unknown are
# refused. For the boolean search a leading or trailing single-character repeat `C{m,n}` of an
# unanchored pattern matches exactly when `C{m}` does, so it is compiled as that (`.*@x\.com`
# runs as `@x\.com`).

_MAX_REGEX_LENGTH = 1000
_MAX_REGEX_WIDTH = 256  # characters one attempt must match at least (bounds the per-start work)
_QUADRATIC_INPUT = 1000
_MAX_INLINED_REPEAT = 10
_ASCII_ALL = (1 << 128) - 1


def _bits(chars: str) -> int:
    mask = 0
    for c in chars:
        mask |= 1 << ord(c)
    return mask


_DIGIT_BITS = _bits("0123456789")
_SPACE_BITS = _bits(" \t\n\r\f\v\x1c\x1d\x1e\x1f")
_WORD_BITS = _bits("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")
_CATEGORY_BITS = {
    _sre.CATEGORY_DIGIT: (_DIGIT_BITS, False),
    _sre.CATEGORY_SPACE: (_SPACE_BITS, False),
    _sre.CATEGORY_WORD: (_WORD_BITS, False),
    _sre.CATEGORY_NOT_DIGIT: (_DIGIT_BITS, True),
    _sre.CATEGORY_NOT_SPACE: (_SPACE_BITS, True),
    _sre.CATEGORY_NOT_WORD: (_WORD_BITS, True),
}
# A character set, over-approximated: (ASCII bit mask, may hold non-ASCII characters).
_CharSet = tuple[int, bool]
_ANY_CHAR: _CharSet = (_ASCII_ALL, True)
_SINGLE_CHAR_OPS = frozenset((_sre.LITERAL, _sre.NOT_LITERAL, _sre.ANY, _sre.IN))
_REPEAT_OPS = frozenset((_sre.MAX_REPEAT, _sre.MIN_REPEAT))


class _Unsafe(Exception):
    """The pattern's matching cost is not provably bounded."""


def _char_set(op: Any, av: Any) -> _CharSet:
    if op is _sre.LITERAL:
        return (1 << av, False) if av < 128 else (0, True)
    if op is _sre.NOT_LITERAL:
        return (_ASCII_ALL & ~(1 << av), True) if av < 128 else _ANY_CHAR
    if op is _sre.ANY:
        return (_ASCII_ALL & ~(1 << 10), True)
    mask, wide, negate = 0, False, False
    for member_op, member in av:
        if member_op is _sre.NEGATE:
            negate = True
        elif member_op is _sre.LITERAL:
            bits, more = _char_set(_sre.LITERAL, member)
            mask, wide = mask | bits, wide or more
        elif member_op is _sre.RANGE:
            low, high = member
            if low < 128:
                mask |= ((1 << (min(high, 127) + 1)) - 1) & ~((1 << low) - 1)
            wide = wide or high >= 128
        elif member_op is _sre.CATEGORY and member in _CATEGORY_BITS:
            bits, complement = _CATEGORY_BITS[member]
            mask |= _ASCII_ALL & ~bits if complement else bits
            wide = True
        else:
            raise _Unsafe(member_op)
    return (_ASCII_ALL & ~mask, True) if negate else (mask, wide)


def _meets(a: _CharSet, b: _CharSet) -> bool:
    return bool(a[0] & b[0]) or (a[1] and b[1])


def _union(a: _CharSet, b: _CharSet) -> _CharSet:
    return a[0] | b[0], a[1] or b[1]


class _Item:
    """One step of a flattened sequence: its characters, least width, degree (0: rigid), and
    whether it is a repeat (which, once reached last, succeeds without backtracking)."""

    __slots__ = ("chars", "degree", "repeat", "width")

    def __init__(self, chars: _CharSet, width: int, degree: int, repeat: bool = False) -> None:
        self.chars = chars
        self.width = width
        self.degree = degree
        self.repeat = repeat


def _items(seq: Any, out: list[_Item]) -> list[_Item]:
    """Flatten a parsed sequence into items; raise ``_Unsafe`` for what is not allowed."""
    for op, av in seq:
        if op in _SINGLE_CHAR_OPS:
            out.append(_Item(_char_set(op, av), 1, 0))
        elif op is _sre.AT:
            if av not in (_sre.AT_BEGINNING, _sre.AT_END_STRING):
                raise _Unsafe(av)
        elif op is _sre.SUBPATTERN:
            if av[1] or av[2]:  # inline flags
                raise _Unsafe(op)
            _items(av[3], out)
        elif op is _sre.BRANCH:
            alternatives = [_items(alt, []) for alt in av[1]]
            chars: _CharSet = (0, False)
            for alt in alternatives:
                for item in alt:
                    chars = _union(chars, item.chars)
            width = min(sum(i.width for i in alt) for alt in alternatives)
            degree = max(_degree(alt, anchored=True, tail=False) for alt in alternatives)
            if not _disjoint_alternatives(av[1]):
                # Two ways through the same text: a sequence of such (`(a|aa){30}`) is exponential.
                degree = max(degree, 1)
            out.append(_Item(chars, width, degree))
        elif op in _REPEAT_OPS:
            low, high, body = av
            if high == low:
                if len(body) == 1 and body[0][0] in _SINGLE_CHAR_OPS:
                    out.append(_Item(_char_set(*body[0]), low, 0))
                    continue
                inner = _items(body, [])
                if any(i.degree for i in inner) and low > _MAX_INLINED_REPEAT:
                    raise _Unsafe("large repeat of a variable-length group")
                for _ in range(min(low, _MAX_INLINED_REPEAT) if inner else 0):
                    out.extend(inner)
                if low > _MAX_INLINED_REPEAT:
                    out.append(_Item(_ANY_CHAR, low * sum(i.width for i in inner), 0))
            elif len(body) == 1 and body[0][0] in _SINGLE_CHAR_OPS:
                out.append(_Item(_char_set(*body[0]), low, 1, repeat=True))
            else:
                chars, width = _deterministic(body)
                out.append(_Item(chars, low * width, 1, repeat=True))
        else:
            raise _Unsafe(op)  # backreferences, lookarounds, atomic groups, ...
    return out


def _deterministic(seq: Any) -> tuple[_CharSet, int]:
    """Characters and width of a repeated group's body, which must match at most one way from
    any position and never match the empty string; else ``_Unsafe``."""
    items = _items(seq, [])
    if any(i.degree for i in items):
        raise _Unsafe("quantifier inside a repeated group")
    _check_branches(seq)
    width = sum(i.width for i in items)
    if width == 0:
        raise _Unsafe("repeated group can match the empty string")
    chars: _CharSet = (0, False)
    for item in items:
        chars = _union(chars, item.chars)
    return chars, width


def _disjoint_alternatives(alternatives: Any) -> bool:
    """Whether at most one alternative can start at any position (none matches empty)."""
    seen: _CharSet = (0, False)
    for alt in alternatives:
        first = _first_chars(alt)
        if first is None or _meets(seen, first):
            return False
        seen = _union(seen, first)
    return True


def _check_branches(seq: Any) -> None:
    for op, av in seq:
        if op is _sre.SUBPATTERN:
            _check_branches(av[3])
        elif op in _REPEAT_OPS:
            _check_branches(av[2])
        elif op is _sre.BRANCH:
            if not _disjoint_alternatives(av[1]):
                raise _Unsafe("alternatives that can match the same text")
            for alt in av[1]:
                _check_branches(alt)


def _first_chars(seq: Any) -> _CharSet | None:
    """The characters a (quantifier-free) sequence can start with; None if it can be empty."""
    for op, av in seq:
        if op is _sre.AT:
            continue
        if op in _SINGLE_CHAR_OPS:
            return _char_set(op, av)
        if op is _sre.SUBPATTERN:
            first = _first_chars(av[3])
        elif op is _sre.BRANCH:
            first = (0, False)
            for alt in av[1]:
                alt_first = _first_chars(alt)
                if alt_first is None:
                    return None
                first = _union(first, alt_first)
        elif op in _REPEAT_OPS and av[0] > 0:
            first = _first_chars(av[2])
        else:
            return None
        if first is not None:
            return first
    return None


def _degree(items: list[_Item], *, anchored: bool, tail: bool) -> int:
    """The longest chain of elastic items that can trade characters (the search scan counts as
    one unless anchored); with ``tail``, a last repeat never backtracks: reaching it means the
    match succeeded."""
    if not anchored:
        items = [_Item(_ANY_CHAR, 0, 1), *items]
    best = [0] * len(items)
    last = len(items) - 1 if tail and items and items[-1].repeat else -1
    for j, item in enumerate(items):
        if not item.degree or j == last:
            continue
        chain = 0
        for i in range(j):
            if not best[i] or best[i] <= chain:
                continue
            shared = (item.chars[0] & items[i].chars[0], item.chars[1] and items[i].chars[1])
            if not (shared[0] or shared[1]):
                continue
            if all(not k.width or _meets(k.chars, shared) for k in items[i + 1 : j]):
                chain = best[i]
        best[j] = chain + item.degree
    return max(best, default=0)


def _single_char_repeat(node: Any) -> bool:
    op, av = node
    return (
        op in _REPEAT_OPS and av[0] != av[1] and len(av[2]) == 1 and av[2][0][0] in _SINGLE_CHAR_OPS
    )


def _bounded_regex(translated: str, regex: re.Pattern[str]) -> tuple[re.Pattern[str], int]:
    """The pattern to search with and the longest value it may run on; ``_Unsafe`` if none."""
    if len(translated) > _MAX_REGEX_LENGTH:
        raise _Unsafe("pattern too long")
    tree = _sre_parser.parse(translated)
    data = tree.data
    anchored = bool(data) and data[0] == (_sre.AT, _sre.AT_BEGINNING)
    changed = False
    # Only the boolean outcome of a search matters: trim leading/trailing `C{m,n}` to `C{m}`.
    while data and _single_char_repeat(data[-1]):
        low, _, body = data[-1][1]
        changed = True
        if low:
            data[-1] = (_sre.MAX_REPEAT, (low, low, body))
            break
        del data[-1]
    while not anchored and data and _single_char_repeat(data[0]):
        low, _, body = data[0][1]
        changed = True
        if low:
            data[0] = (_sre.MAX_REPEAT, (low, low, body))
            break
        del data[0]
    if changed:
        try:
            regex = _sre_compiler.compile(tree)
        except Exception:  # private API: analyse and run the pattern as written instead
            tree = _sre_parser.parse(translated)
    items = _items(tree.data, [])
    if tree.data and tree.data[-1] == (_sre.AT, _sre.AT_END_STRING):
        items.append(_Item((0, False), 0, 0))  # the end anchor can fail: the last item is no tail
    if sum(i.width for i in items) > _MAX_REGEX_WIDTH:
        raise _Unsafe("pattern too wide")
    degree = _degree(items, anchored=anchored, tail=True)
    if degree <= 1:
        return regex, sys.maxsize
    if degree == 2:
        return regex, _QUADRATIC_INPUT
    raise _Unsafe(f"degree {degree}")


def _regex_search(info: _RegexInfo, value: str) -> bool | None:
    """Search, or None when the value is one the two regex engines could read differently
    or too long for this pattern's cost."""
    if len(value) > info.max_input:
        return None
    if info.end_anchor and info.repeats and value.endswith("\n"):
        return None
    if not value.isascii():
        if any("\ud800" <= c <= "\udfff" for c in value):
            return None
        if info.word_class and any(
            not c.isascii() and not (c.isalpha() or c.isdecimal()) for c in value
        ):
            return None
    if info.space_class and any(c in value for c in "\x1c\x1d\x1e\x1f"):
        return None
    try:
        return info.regex.search(value) is not None
    except Exception:
        return None


# --- dates ---------------------------------------------------------------------------------------

_RELATIVE_DATE = re.compile(r"^-?(?P<n>[0-9]+)(?P<u>[a-z])$")
_YEAR_ONLY = re.compile(r"\d{4}")
_SPACED_OFFSET = re.compile(r" ([+-]\d{2}:\d{2})$")


def _parse_datetime(value: str) -> _dt.datetime | None:
    text = value.strip()
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    elif text.upper().endswith(" UTC"):
        text = text[:-4] + "+00:00"
    elif _YEAR_ONLY.fullmatch(text):
        now = _dt.datetime.now()
        try:
            return _dt.datetime(int(text), now.month, now.day, tzinfo=_UTC)
        except ValueError:
            return None
    text = _SPACED_OFFSET.sub(r"\1", text)
    try:
        parsed = _dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=_UTC)


def _months_ago(now: _dt.datetime, months: int) -> _dt.datetime | None:
    index = now.year * 12 + now.month - 1
    target = index - months
    year, month = divmod(target, 12)
    if not 1 <= year <= 9999:
        return None
    day = now.day
    # Clamp through every month passed on the way (Mar 31 - 2 months = Jan 28, via Feb 28).
    for step in range(index - 1, target - 1, -1):
        if day <= 28:
            break
        day = min(day, calendar.monthrange(step // 12, step % 12 + 1)[1])
    return now.replace(year=year, month=month + 1, day=day)


def _years_ago(now: _dt.datetime, years: int) -> _dt.datetime | None:
    year = now.year - years
    if not 1 <= year <= 9999:
        return None
    day = 28 if years > 0 and (now.month, now.day) == (2, 29) else now.day
    return now.replace(year=year, day=day)


def _relative_date(number: int, unit: str) -> _dt.datetime | None:
    now = _dt.datetime.now(_UTC)
    if unit == "h":
        return now - _dt.timedelta(hours=number)
    if unit == "d":
        return now - _dt.timedelta(days=number)
    if unit == "w":
        return now - _dt.timedelta(weeks=number)
    if unit == "m":
        return _months_ago(now, number)
    return _years_ago(now, number)


# --- semver --------------------------------------------------------------------------------------


def _semver_part(part: str) -> int | None:
    if not part or not part.isdecimal() or (len(part) > 1 and part[0] == "0"):
        return None
    try:
        return int(part)
    except ValueError:  # more digits than sys.get_int_max_str_digits() allows
        return None


def _parse_semver(value: Any) -> tuple[int, int, int] | None:
    text = str(value).strip().lstrip("vV").split("-")[0].split("+")[0]
    parts = text.split(".")
    if not parts[0]:
        return None
    major = _semver_part(parts[0])
    minor = _semver_part(parts[1]) if len(parts) > 1 and parts[1] else 0
    patch = _semver_part(parts[2]) if len(parts) > 2 and parts[2] else 0
    if major is None or minor is None or patch is None:
        return None
    return (major, minor, patch)


def _semver_bounds(operator: str, value: Any) -> Any:
    """The parsed filter: a version, or (lower, upper) for range operators; None if invalid."""
    if operator == "semver_wildcard":
        cleaned = str(value).strip().lstrip("vV").replace("*", "").rstrip(".")
        parts = [p for p in cleaned.split(".") if p]
        if not parts:
            return None
        maybe = [_semver_part(p) for p in parts[:3]]
        nums = [x for x in maybe if x is not None]
        if len(nums) != len(maybe):
            return None
        if len(nums) == 1:
            return (nums[0], 0, 0), (nums[0] + 1, 0, 0)
        if len(nums) == 2:
            return (nums[0], nums[1], 0), (nums[0], nums[1] + 1, 0)
        return (nums[0], nums[1], nums[2]), (nums[0], nums[1], nums[2] + 1)
    version = _parse_semver(value)
    if version is None or operator not in ("semver_tilde", "semver_caret"):
        return version
    major, minor, patch = version
    if operator == "semver_tilde":
        return version, (major, minor + 1, 0)
    if major > 0:
        return version, (major + 1, 0, 0)
    if minor > 0:
        return version, (0, minor + 1, 0)
    return version, (0, 0, patch + 1)


# --- compiled property filters -------------------------------------------------------------------

_EQUALITY = ("exact", "is_not", "is_set", "is_not_set")
_TEXT = (
    "icontains",
    "not_icontains",
    "starts_with",
    "not_starts_with",
    "ends_with",
    "not_ends_with",
)
_REGEX = ("regex", "not_regex")
_NUMERIC = ("gt", "gte", "lt", "lte")
_DATES = ("is_date_before", "is_date_after")
_SEMVER = (
    "semver_eq",
    "semver_neq",
    "semver_gt",
    "semver_gte",
    "semver_lt",
    "semver_lte",
    "semver_tilde",
    "semver_caret",
    "semver_wildcard",
)
_KNOWN_OPERATORS = frozenset(_EQUALITY + _TEXT + _REGEX + _NUMERIC + _DATES + _SEMVER)
_COHORT_OPERATORS = ("exact", "in", "not_in")


class _Filter:
    """A compiled property filter; ``match`` returns True, False or an ``_Undecided``."""

    __slots__ = ("bad_value", "key", "missing", "problem")

    def __init__(self, key: Any, problem: _Undecided | None = None) -> None:
        self.key = key
        self.problem = problem
        # An unusable filter outranks missing context, so it replaces it.
        self.missing = problem or _Undecided(f"missing_property:{key}", _MISSING_CONTEXT)
        self.bad_value = problem or _Undecided(f"invalid_property_value:{key}", _MISSING_CONTEXT)

    def match(self, props: Mapping[str, Any], ctx: _Context) -> Any:
        raise NotImplementedError


class _UnknownOperator(_Filter):
    __slots__ = ()

    def match(self, props: Mapping[str, Any], ctx: _Context) -> Any:
        return self.problem


class _CrashFilter(_Filter):
    __slots__ = ()

    def match(self, props: Mapping[str, Any], ctx: _Context) -> Any:
        raise _Malformed("malformed property filter")


class _IsSet(_Filter):
    __slots__ = ("expect",)

    def __init__(self, key: Any, expect: bool) -> None:
        super().__init__(key)
        self.expect = expect

    def match(self, props: Mapping[str, Any], ctx: _Context) -> Any:
        if self.key not in props:
            return self.missing
        return self.expect


_EXACT_EMPTY, _EXACT_BOOL, _EXACT_LIST, _EXACT_SCALAR = range(4)


class _Exact(_Filter):
    __slots__ = ("mode", "negate", "target")

    def __init__(self, key: Any, value: Any, negate: bool, matching_version: Any) -> None:
        problem = None
        target: Any = None
        if value == []:
            mode = _EXACT_EMPTY
        elif matching_version != 2 and _boolean_like(value):
            mode, target = _EXACT_BOOL, _truthy(value)
        else:
            texts = [_as_text(v) for v in (value if isinstance(value, list) else [value])]
            if any(t is None for t in texts):
                problem = _Undecided(f"invalid_filter_value:{key}", _UNSUPPORTED)
            if isinstance(value, list):
                mode, target = _EXACT_LIST, frozenset(t.lower() for t in texts if t is not None)
            else:
                mode, target = _EXACT_SCALAR, (texts[0] or "").lower()
        super().__init__(key, problem)
        self.mode = mode
        self.target = target
        self.negate = negate

    def match(self, props: Mapping[str, Any], ctx: _Context) -> Any:
        value = props.get(self.key, _MISSING)
        if value is _MISSING:
            return self.missing
        text = value if value.__class__ is str else _as_text(value)
        if text is None:
            return self.bad_value
        mode = self.mode
        if mode == _EXACT_SCALAR:
            if self.problem is not None:
                return self.problem
            matched = text.lower() == self.target
        elif mode == _EXACT_LIST:
            if self.problem is not None:
                return self.problem
            matched = text.lower() in self.target
        elif mode == _EXACT_BOOL:
            matched = _truthy(value) == self.target
        else:
            matched = _truthy(value)
        return matched is not self.negate


class _Text(_Filter):
    __slots__ = ("kind", "needle", "negate")

    def __init__(self, key: Any, operator: str, value: Any) -> None:
        text = _as_text(value)
        super().__init__(
            key,
            None if text is not None else _Undecided(f"invalid_filter_value:{key}", _UNSUPPORTED),
        )
        self.needle = text.translate(_ASCII_LOWER) if text is not None else ""
        self.negate = operator.startswith("not_")
        self.kind = operator.removeprefix("not_")

    def match(self, props: Mapping[str, Any], ctx: _Context) -> Any:
        value = props.get(self.key, _MISSING)
        if value is _MISSING:
            return self.missing
        text = _as_text(value)
        if text is None:
            return self.bad_value
        if self.problem is not None:
            return self.problem
        text = text.translate(_ASCII_LOWER)
        if self.kind == "icontains":
            matched = self.needle in text
        elif self.kind == "starts_with":
            matched = text.startswith(self.needle)
        else:
            matched = text.endswith(self.needle)
        return matched is not self.negate


class _Regex(_Filter):
    __slots__ = ("info", "negate")

    def __init__(self, key: Any, operator: str, value: Any) -> None:
        pattern = str(value)
        info = _prepare_regex(pattern) if pattern else True
        super().__init__(
            key, _Undecided(f"unsupported_regex:{key}", _UNSUPPORTED) if info is _DEFER else None
        )
        self.info: Any = info
        self.negate = operator == "not_regex"

    def match(self, props: Mapping[str, Any], ctx: _Context) -> Any:
        value = props.get(self.key, _MISSING)
        if value is _MISSING:
            return self.missing
        text = _as_text(value)
        if text is None:
            return self.bad_value
        info = self.info
        if info is True:
            return not self.negate
        if info is None:
            return False  # invalid syntax never matches, under either operator
        if info is _DEFER:
            return self.problem
        found = _regex_search(info, text)
        if found is None:
            return _Undecided(f"unsupported_regex:{self.key}", _UNSUPPORTED)
        return found is not self.negate


# Comparison operators by name, chosen once when a filter is compiled (numeric and semver
# filters share them; anything unlisted falls back to `<=`, as the last branch always did).
_ORDERINGS = {
    "gt": _op.gt,
    "gte": _op.ge,
    "lt": _op.lt,
    "lte": _op.le,
    "eq": _op.eq,
    "neq": _op.ne,
}


class _Numeric(_Filter):
    __slots__ = ("compare", "threshold")

    def __init__(self, key: Any, operator: str, value: Any) -> None:
        threshold = _to_number(value)
        super().__init__(
            key,
            None
            if threshold is not None
            else _Undecided(f"invalid_filter_value:{key}", _UNSUPPORTED),
        )
        self.threshold = threshold
        self.compare = _ORDERINGS.get(operator, _op.le)

    def match(self, props: Mapping[str, Any], ctx: _Context) -> Any:
        value = props.get(self.key, _MISSING)
        if value is _MISSING:
            return self.missing
        threshold = self.threshold
        if threshold is None:
            return self.problem
        number = _to_number(value)
        if number is None:
            return False
        return self.compare(number, threshold)


class _Date(_Filter):
    __slots__ = ("before", "fixed", "relative")

    def __init__(self, key: Any, operator: str, value: Any) -> None:
        text = str(value)
        relative = None
        m = _RELATIVE_DATE.search(text)
        # Over 10,000 units is never relative (as in posthog); reading the digits' length first
        # keeps int() away from values past sys.get_int_max_str_digits().
        if m is not None and len(m.group("n").lstrip("0")) <= 4:
            number, unit = int(m.group("n")), m.group("u")
            if unit in "hdwmy":
                relative = (number, unit)
        self.relative = relative
        self.fixed = _parse_datetime(text)
        self.before = operator == "is_date_before"
        usable = self.fixed is not None or (
            relative is not None and _relative_date(*relative) is not None
        )
        super().__init__(
            key, None if usable else _Undecided(f"invalid_filter_value:{key}", _UNSUPPORTED)
        )

    def match(self, props: Mapping[str, Any], ctx: _Context) -> Any:
        value = props.get(self.key, _MISSING)
        if value is _MISSING:
            return self.missing
        if value is None:
            return False
        boundary: Any = _relative_date(*self.relative) if self.relative is not None else None
        if boundary is None:
            boundary = self.fixed
        if boundary is None:
            return self.problem or _Undecided(f"invalid_filter_value:{self.key}", _UNSUPPORTED)
        if isinstance(value, _dt.datetime):
            moment: Any = value if value.tzinfo is not None else value.replace(tzinfo=_UTC)
        elif isinstance(value, _dt.date):
            moment, boundary = value, boundary.date()
        elif isinstance(value, str):
            moment = _parse_datetime(value)
            if moment is None:
                return self.bad_value
        else:
            return self.bad_value
        return moment < boundary if self.before else moment > boundary


class _Semver(_Filter):
    __slots__ = ("bounds", "compare")

    def __init__(self, key: Any, operator: str, value: Any) -> None:
        bounds = _semver_bounds(operator, value)
        super().__init__(
            key,
            None if bounds is not None else _Undecided(f"invalid_filter_value:{key}", _UNSUPPORTED),
        )
        self.bounds = bounds
        # None: a range operator (tilde/caret/wildcard), matched as lower <= version < upper.
        self.compare = (
            None
            if operator in ("semver_tilde", "semver_caret", "semver_wildcard")
            else _ORDERINGS.get(operator.removeprefix("semver_"), _op.le)
        )

    def match(self, props: Mapping[str, Any], ctx: _Context) -> Any:
        value = props.get(self.key, _MISSING)
        if value is _MISSING:
            return self.missing
        if value is None:
            return False
        bounds = self.bounds
        if bounds is None:
            return self.problem
        version = _parse_semver(value)
        if version is None:
            return self.bad_value
        compare = self.compare
        if compare is None:
            return bounds[0] <= version < bounds[1]
        return compare(version, bounds)


class _Cohort(_Filter):
    __slots__ = ("cohort_id", "operator")

    def __init__(self, prop: Mapping[str, Any]) -> None:
        self.cohort_id = str(prop.get("value"))
        self.operator = prop.get("operator") or "exact"
        super().__init__(prop.get("key"))

    def match(self, props: Mapping[str, Any], ctx: _Context) -> Any:
        group = ctx.defs._cohort_groups.get(self.cohort_id)
        if group is None:
            # Not in the definitions: a static cohort, only the server knows its members.
            return _Undecided(f"static_cohort:{self.cohort_id}", _UNSUPPORTED, server=True)
        if self.operator not in _COHORT_OPERATORS:
            return _Undecided(f"unsupported_cohort_operator:{self.operator}", _UNSUPPORTED)
        # Each cohort is decided once per flag evaluation: a graph that reaches one cohort by
        # many paths (A -> B twice -> C twice ...) would otherwise cost 2**depth.
        memo = ctx.cohorts
        memo_key = (self.cohort_id, id(props))
        result = memo.get(memo_key, _MISSING)
        if result is _IN_PROGRESS:
            raise _Malformed("cohorts refer to each other in a cycle")
        if result is _MISSING:
            ctx.depth += 1
            if ctx.depth > 64:
                raise _Malformed("cohorts nest too deeply")
            memo[memo_key] = _IN_PROGRESS
            try:
                result = group.match(props, ctx)
            except BaseException:
                del memo[memo_key]
                raise
            finally:
                ctx.depth -= 1
            memo[memo_key] = result
        if result is True or result is False:
            return result is not (self.operator == "not_in")
        return result


_IN_PROGRESS: Any = object()  # a cohort being decided: meeting it again is a cycle


class _Dependency(_Filter):
    __slots__ = ("chain", "expected", "shape_ok")

    def __init__(self, prop: Mapping[str, Any]) -> None:
        super().__init__(prop.get("key"))
        self.expected = prop.get("value")
        # A malformed dependency is a definite no-match, as on the server.
        self.shape_ok = (
            prop.get("operator", "exact") == "flag_evaluates_to"
            and bool(self.key)
            and self.expected is not None
        )
        self.chain = prop.get("dependency_chain", _MISSING)

    def match(self, props: Mapping[str, Any], ctx: _Context) -> Any:
        if not self.shape_ok:
            return False
        chain = self.chain
        key = self.key
        if chain is _MISSING or not isinstance(chain, list):
            return _Undecided(f"malformed_dependency:{key}", _UNSUPPORTED)
        if not chain:
            return _Undecided(f"circular_dependency:{key}", _UNSUPPORTED)
        cache = ctx.cache
        by_key = ctx.defs.flags_by_key
        for dep in chain:
            if dep not in cache and dep not in by_key:
                cache[dep] = None
                return _Undecided(f"missing_dependency:{dep}", _UNSUPPORTED)
        for dep in chain:
            if dep not in cache:
                outcome = _evaluate_dependency(by_key[dep], props, ctx)
                if outcome is not None:
                    return outcome
        actual = cache.get(key)
        if actual is None:
            if key in by_key and key in cache:
                return _Undecided(f"unresolved_dependency:{key}", _UNRESOLVED_DEPENDENCY)
            return _Undecided(f"missing_dependency:{key}", _UNSUPPORTED)
        expected = self.expected
        if isinstance(actual, str) and actual:
            if isinstance(expected, bool):
                return expected
            return isinstance(expected, str) and actual == expected
        return isinstance(actual, bool) and isinstance(expected, bool) and actual == expected


def compile_filter(prop: Any, matching_version: Any = 1) -> _Filter:
    """Compile one filter of a condition or cohort group (internal to phactor.flags)."""
    if not isinstance(prop, dict):
        return _CrashFilter(None)
    kind = prop.get("type")
    if kind == "cohort":
        return _Cohort(prop)
    if kind == "flag":
        return _Dependency(prop)
    operator = prop.get("operator") or "exact"
    key = prop.get("key")
    value = prop.get("value")
    if not isinstance(operator, str) or operator not in _KNOWN_OPERATORS:
        return _UnknownOperator(key, _Undecided(f"unknown_operator:{operator}", _UNSUPPORTED))
    try:
        hash(key)
    except TypeError:
        return _CrashFilter(None)
    if operator in ("is_set", "is_not_set"):
        return _IsSet(key, operator == "is_set")
    if operator in ("exact", "is_not"):
        return _Exact(key, value, operator == "is_not", matching_version)
    if operator in _TEXT:
        return _Text(key, operator, value)
    if operator in _REGEX:
        return _Regex(key, operator, value)
    if operator in _NUMERIC:
        return _Numeric(key, operator, value)
    if operator in _DATES:
        return _Date(key, operator, value)
    return _Semver(key, operator, value)


# --- cohort property groups ----------------------------------------------------------------------


class PropertyGroup:
    """A compiled cohort property group (AND/OR of filters and nested groups)."""

    __slots__ = ("entries", "is_and", "malformed")

    def __init__(self, group: Any, matching_version: Any = 1) -> None:
        self.malformed = False
        self.is_and = True
        self.entries: tuple[Any, ...] = ()
        if group == {}:
            return
        if (
            not isinstance(group, dict)
            or group.get("type") not in ("AND", "OR")
            or not isinstance(group.get("values"), list)
        ):
            self.malformed = True
            return
        self.is_and = group["type"] == "AND"
        entries: list[Any] = []
        for entry in group["values"]:
            if not isinstance(entry, dict):
                entries.append(None)
            elif entry == {} or "values" in entry or entry.get("type") in ("AND", "OR"):
                entries.append((PropertyGroup(entry, matching_version), False))
            else:
                entries.append(
                    (compile_filter(entry, matching_version), bool(entry.get("negation", False)))
                )
        self.entries = tuple(entries)

    def match(self, props: Mapping[str, Any], ctx: _Context) -> Any:
        """True, False or an ``_Undecided`` for these properties."""
        if self.malformed:
            return _Undecided("malformed_cohort", _UNSUPPORTED, server=True)
        if not self.entries:
            return True
        is_and = self.is_and
        decisive = None
        undecided = None
        # No short-circuit: a later entry that needs the server must still be seen.
        for entry in self.entries:
            if entry is None:
                return _Undecided("malformed_cohort", _UNSUPPORTED, server=True)
            item, negation = entry
            result = item.match(props, ctx)
            if result is True or result is False:
                effective = result is not negation
                if effective is not is_and:
                    decisive = effective
            elif result.server:
                return result
            else:
                undecided = _pick(undecided, result)
        if decisive is not None:
            return decisive
        if undecided is not None:
            return undecided
        return is_and


# --- compiled flags ------------------------------------------------------------------------------

_INHERIT: Any = object()


class _Condition:
    __slots__ = ("aggregation", "filters", "index", "rollout", "variant")

    def __init__(self, condition: Any, index: int, matching_version: Any) -> None:
        self.index = index
        if not isinstance(condition, dict):
            raise _Malformed("condition is not an object")
        self.aggregation = condition.get("aggregation_group_type_index", _INHERIT)
        props = condition.get("properties") or []
        if isinstance(props, list):
            self.filters: Any = tuple(compile_filter(p, matching_version) for p in props)
        else:
            self.filters = _CRASH
        rollout = condition.get("rollout_percentage")
        if rollout is None:
            self.rollout: Any = None
        else:
            try:
                self.rollout = rollout / 100
            except Exception:
                self.rollout = _CRASH
        self.variant = condition.get("variant")


class CompiledFlag:
    """One flag definition, parsed once; evaluation reads only these fields."""

    __slots__ = (
        "active",
        "aggregation",
        "by_device",
        "conditions",
        "continuity",
        "definition_problem",
        "early_exit",
        "enrollment",
        "filters_ok",
        "flag_id",
        "holdout",
        "key",
        "payloads",
        "raw",
        "variant_keys",
        "variant_table",
        "version",
    )

    def __init__(self, raw: dict[str, Any], matching_version: Any = 1) -> None:
        self.raw = raw
        self.key = raw["key"]
        self.flag_id = raw.get("id")
        self.version = raw.get("version")
        self.active = bool(raw.get("active"))
        self.continuity = bool(raw.get("ensure_experience_continuity", False))
        self.definition_problem: _Undecided | None = None
        filters = raw.get("filters") or {}
        self.filters_ok = isinstance(filters, dict)
        if not self.filters_ok:
            filters = {}
        self.aggregation = filters.get("aggregation_group_type_index")
        self.early_exit = bool(filters.get("early_exit"))
        self.enrollment = filters.get("feature_enrollment") is True
        self.by_device = (
            raw.get("bucketing_identifier") or filters.get("bucketing_identifier")
        ) == "device_id"
        payloads = filters.get("payloads") or {}
        self.payloads = payloads if isinstance(payloads, dict) else None
        self.holdout = self._compile_holdout(filters.get("holdout"))
        self.variant_keys, self.variant_table = self._compile_variants(filters.get("multivariate"))
        self.conditions = self._compile_conditions(filters.get("groups"), matching_version)

    @classmethod
    def uncompilable(cls, raw: dict[str, Any]) -> CompiledFlag:
        """A flag whose definition could not be compiled at all: it is always unresolved
        (``"malformed_definition"``), as a dependency too, and never affects other flags."""
        flag = cls.__new__(cls)
        flag.raw = raw
        flag.key = raw["key"]
        flag.flag_id = raw.get("id")
        flag.version = raw.get("version")
        flag.active = True
        flag.continuity = False
        flag.definition_problem = None
        flag.filters_ok = False  # evaluation stops here, as for filters that are not an object
        flag.aggregation = None
        flag.early_exit = flag.enrollment = flag.by_device = False
        flag.payloads = None
        flag.holdout = None
        flag.variant_keys = flag.variant_table = flag.conditions = ()
        return flag

    @staticmethod
    def _compile_holdout(holdout: Any) -> Any:
        if not holdout:
            return None
        if not isinstance(holdout, dict):
            return _CRASH
        percentage, holdout_id = holdout.get("exclusion_percentage"), holdout.get("id")
        if percentage is None or holdout_id is None:
            return None
        try:
            clamped = min(max(float(percentage), 0.0), 100.0)
        except Exception:
            return _CRASH
        return f"holdout-{holdout_id}", clamped

    @staticmethod
    def _compile_variants(multivariate: Any) -> tuple[Any, Any]:
        if not multivariate:
            return (), ()
        if not isinstance(multivariate, dict):
            return _CRASH, _CRASH
        variants = multivariate.get("variants") or []
        try:
            keys = [v["key"] for v in variants]
        except Exception:
            return _CRASH, _CRASH
        table = []
        low: Any = 0
        try:
            for v in variants:
                high = low + v["rollout_percentage"] / 100
                table.append((low, high, v["key"]))
                low = high
        except Exception:
            return keys, _CRASH
        return keys, tuple(table)

    @staticmethod
    def _compile_conditions(groups: Any, matching_version: Any) -> Any:
        if not groups:
            return ()
        if not isinstance(groups, list):
            return _CRASH
        conditions: list[Any] = []
        for index, condition in enumerate(groups):
            try:
                conditions.append(_Condition(condition, index, matching_version))
            except _Malformed:
                # Conditions before it still decide the flag, as in the reference evaluator.
                conditions.append(_CRASH)
                break
        return tuple(conditions)


# --- evaluation ----------------------------------------------------------------------------------


class _Context:
    """One evaluation's state: flag values decided so far (``cache``) and cohort outcomes
    (``cohorts``, by (cohort id, id of the properties)); both start empty for each flag."""

    __slots__ = ("cache", "cohorts", "defs", "depth", "device_id", "distinct_id")

    def __init__(self, defs: Definitions, distinct_id: Any, device_id: Any) -> None:
        self.defs = defs
        self.distinct_id = distinct_id
        self.device_id = device_id
        self.cache: dict[Any, Any] = {}
        self.cohorts: dict[tuple[str, int], Any] = {}
        self.depth = 0


def _match_filters(filters: Any, props: Mapping[str, Any], ctx: _Context) -> Any:
    if filters is _CRASH:
        raise _Malformed("condition properties are not a list")
    undecided = None
    server = None
    for f in filters:
        try:
            result = f.match(props, ctx)
        except Exception:
            # After an inconclusive filter a broken one just ends the condition as inconclusive.
            if undecided is None:
                raise
            break
        if result is True:
            continue
        if result is False:
            return False
        if result.server and undecided is None:
            server = result
        undecided = _pick(undecided, result)
    if server is not None:
        return server
    if undecided is None:
        return True
    # A static cohort after another inconclusive filter no longer stops later conditions.
    return _Undecided(undecided.reason, undecided.rank) if undecided.server else undecided


_NO_MATCH = 0
_OUT_OF_ROLLOUT = 1


def _match_conditions(
    flag: CompiledFlag,
    props: Mapping[str, Any],
    bucketing: Any,
    ctx: _Context,
    groups: Mapping[str, Any],
    group_props: Mapping[str, Any],
    mapping: Mapping[str, Any],
) -> Any:
    """Returns (value, condition_index, reason) or an ``_Undecided``."""
    if not flag.filters_ok:
        raise _Malformed("filters is not an object")
    if flag.enrollment:
        if flag.aggregation is not None:
            return _Undecided("group_feature_enrollment", _UNSUPPORTED)
        enrollment_key = f"$feature_enrollment/{flag.key}"
        if enrollment_key not in props:
            return _Undecided(f"missing_property:{enrollment_key}", _MISSING_CONTEXT)
        enrolled = props[enrollment_key]
        return (enrolled is True or enrolled == "true"), None, "feature_enrollment"
    holdout = flag.holdout
    if holdout is not None:
        if holdout is _CRASH:
            raise _Malformed("holdout")
        variant, percentage = holdout
        if percentage == 100.0 or not _holdout_hash(bucketing) > percentage / 100:
            return variant, None, "holdout"
    variant_keys = flag.variant_keys
    conditions = flag.conditions
    if variant_keys is _CRASH or conditions is _CRASH:
        raise _Malformed("variants or conditions")
    flag_aggregation = flag.aggregation
    undecided = None
    for condition in conditions:
        if condition is _CRASH:
            raise _Malformed("condition")
        aggregation = condition.aggregation
        cond_props, cond_bucketing = props, bucketing
        if (
            aggregation is not _INHERIT
            and aggregation != flag_aggregation
            and aggregation is not None
        ):
            # Mixed targeting: this condition reads a group although the flag does not.
            group_name = mapping.get(str(aggregation))
            if not group_name or group_name not in groups:
                continue
            if group_name not in group_props:
                undecided = _pick(
                    undecided,
                    _Undecided(f"missing_group_properties:{group_name}", _MISSING_CONTEXT),
                )
                continue
            cond_props, cond_bucketing = group_props[group_name], groups[group_name]
        filters = condition.filters
        rollout = condition.rollout
        outcome: Any = None
        if filters:
            outcome = _match_filters(filters, cond_props, ctx)
            if outcome is False:
                continue
            if outcome is not True:
                if outcome.server:
                    problem = flag.definition_problem
                    if problem is not None and problem.rank < outcome.rank:
                        return _Undecided(problem.reason, problem.rank, server=True)
                    return outcome
                undecided = _pick(undecided, outcome)
                continue
        if rollout is not None and (not filters or outcome is True):
            if rollout is _CRASH:
                raise _Malformed("rollout_percentage")
            if bucket_hash(flag.key, cond_bucketing) > rollout:
                if flag.early_exit:
                    break
                continue
        override = condition.variant
        if override and override in variant_keys:
            value: Any = override
        else:
            value = _pick_variant(flag, cond_bucketing)
        if not value or not isinstance(value, str):
            value = True
        return value, condition.index, "condition_match"
    if undecided is not None:
        return undecided
    return False, None, "no_condition_match"


def _pick_variant(flag: CompiledFlag, bucketing: Any) -> Any:
    table = flag.variant_table
    if table is _CRASH:
        raise _Malformed("variants")
    if not table:
        return None
    point = bucket_hash(flag.key, bucketing, "variant")
    for low, high, key in table:
        if low <= point < high:
            return key
    return None


def _evaluate_dependency(
    dep: CompiledFlag, props: Mapping[str, Any], ctx: _Context
) -> _Undecided | None:
    """Evaluate and cache one flag of a dependency chain; an ``_Undecided`` if it cannot be."""
    cache = ctx.cache
    key = dep.key
    if not dep.active:
        cache[key] = False
        return None
    unresolved = _Undecided(f"unresolved_dependency:{key}", _UNRESOLVED_DEPENDENCY)
    if dep.continuity:
        cache[key] = None
        return unresolved
    if not dep.filters_ok:
        raise _Malformed("filters is not an object")
    bucketing = ctx.distinct_id
    if dep.aggregation is None and dep.by_device:
        if not ctx.device_id:
            cache[key] = None
            return unresolved
        bucketing = ctx.device_id
    outcome = _match_conditions(dep, props, bucketing, ctx, {}, {}, {})
    if isinstance(outcome, _Undecided):
        if outcome.server:
            return _Undecided(unresolved.reason, unresolved.rank, server=True)
        cache[key] = None
        return unresolved
    cache[key] = outcome[0]
    return None


def _payload_for(flag: CompiledFlag, value: bool | str) -> Any:
    payloads = flag.payloads
    if not payloads:
        return None
    if value is True:
        return payloads.get("true")
    if value is False:
        return payloads.get("false")
    return payloads.get(value)


def _evaluate_one(
    flag: CompiledFlag,
    ctx: _Context,
    distinct_id: str,
    person: dict[str, Any],
    groups: Mapping[str, Any],
    group_props: Mapping[str, Any],
) -> Any:
    if not flag.active:
        return False, None, "disabled"
    if flag.continuity:
        return _Undecided("ensure_experience_continuity", _EXPERIENCE_CONTINUITY)
    if not flag.filters_ok:
        raise _Malformed("filters is not an object")
    mapping = ctx.defs.group_type_mapping
    aggregation = flag.aggregation
    if aggregation is not None:
        group_name = mapping.get(str(aggregation))
        if not group_name:
            return _Undecided(f"unknown_group_type:{aggregation}", _UNSUPPORTED)
        if group_name not in groups:
            # The server would answer the same, so this is a decided False, not a remote case.
            return False, None, "group_not_passed"
        if group_name not in group_props:
            return _Undecided(f"missing_group_properties:{group_name}", _MISSING_CONTEXT)
        group_key = groups[group_name]
        ctx.distinct_id = group_key
        return _match_conditions(
            flag, group_props[group_name], group_key, ctx, groups, group_props, mapping
        )
    ctx.distinct_id = distinct_id
    bucketing: Any = distinct_id
    if flag.by_device:
        if not ctx.device_id:
            return flag.definition_problem or _Undecided("missing_device_id", _MISSING_CONTEXT)
        bucketing = ctx.device_id
    return _match_conditions(flag, person, bucketing, ctx, groups, group_props, mapping)


def _is_mapping_or_none(value: Any) -> bool:
    return value is None or type(value) is dict or isinstance(value, Mapping)


def evaluate(
    defs: Definitions,
    distinct_id: str,
    *,
    groups: Mapping[str, Any] | None = None,
    person_properties: Mapping[str, Any] | None = None,
    group_properties: Mapping[str, Mapping[str, Any]] | None = None,
    flag_keys: Iterable[str] | None = None,
    device_id: str | None = None,
) -> tuple[dict[str, FlagResult], dict[str, str]]:
    """Evaluate flags locally; returns (decided results by key, unresolved key -> reason).

    ``distinct_id`` is added to the person properties (unless given there) and ``$group_key`` to
    each passed group's properties, as PostHog does. Never raises for malformed definitions.
    """
    # `type(...) is dict` first: an ABC isinstance check costs more than the rest of a simple
    # flag's evaluation, and plain dicts are what callers pass.
    if type(distinct_id) is not str and not isinstance(distinct_id, str):
        raise TypeError(f"distinct_id must be a str, not {type(distinct_id).__name__}")
    if not _is_mapping_or_none(person_properties):
        raise TypeError("person_properties must be a mapping")
    if not _is_mapping_or_none(groups):
        raise TypeError("groups must be a mapping")
    if not _is_mapping_or_none(group_properties):
        raise TypeError("group_properties must be a mapping")
    person = dict(person_properties) if person_properties else {}
    person.setdefault("distinct_id", distinct_id)
    groups = dict(groups) if groups else {}
    group_props: dict[str, dict[str, Any]] = {}
    for name, group_key in groups.items():
        extra = group_properties.get(name) if group_properties else None
        if extra is not None and not isinstance(extra, Mapping):
            raise TypeError(f"group_properties[{name!r}] must be a mapping")
        group_props[name] = {"$group_key": group_key, **(extra or {})}

    results: dict[str, FlagResult] = {}
    unresolved: dict[str, str] = {}
    if flag_keys is None:
        selected: Iterable[CompiledFlag] = defs.flags
    else:
        if isinstance(flag_keys, str):
            raise TypeError("flag_keys must be an iterable of str, not a str")
        by_key = defs.flags_by_key
        selected = []
        unique = (
            flag_keys
            if type(flag_keys) is tuple and len(flag_keys) == 1
            else dict.fromkeys(flag_keys)
        )
        for key in unique:
            flag = by_key.get(key)
            if flag is None:
                unresolved[key] = "unknown_flag"
            else:
                selected.append(flag)
    ctx = _Context(defs, distinct_id, device_id)
    for flag in selected:
        if ctx.cache:
            ctx.cache = {}
        if ctx.cohorts:
            ctx.cohorts = {}
        ctx.depth = 0
        try:
            outcome = _evaluate_one(flag, ctx, distinct_id, person, groups, group_props)
        except Exception:
            unresolved[flag.key] = "malformed_definition"
            continue
        if isinstance(outcome, _Undecided):
            unresolved[flag.key] = outcome.reason
            continue
        value, index, reason = outcome
        try:
            payload = _payload_for(flag, value)
        except TypeError:  # an unhashable variant key
            payload = None
        results[flag.key] = FlagResult(
            flag.key, value, payload, reason, index, flag.flag_id, flag.version
        )
    return results, unresolved
