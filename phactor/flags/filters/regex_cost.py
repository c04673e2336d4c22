"""Regex cost analysis: run a flag regex locally only when its backtracking is provably bounded.

Reads the parse tree ``re`` itself compiles (``re._parser``); ``_bounded_regex`` returns the
pattern to search with and the longest value it may run on, or raises ``_Unsafe``.
"""

from __future__ import annotations

import re
import re._compiler as _sre_compiler  # type: ignore[import-not-found]
import re._constants as _sre  # type: ignore[import-not-found]
import re._parser as _sre_parser  # type: ignore[import-not-found]
import sys
from typing import Any

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
