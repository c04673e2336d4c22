"""Flag regexes: translation to Python ``re`` and the guarded search.

Only the syntax Python and the server's Rust engine read the same way is run here; anything else
is deferred to the server (``unsupported_regex``). ``_prepare_regex`` translates and compiles a
pattern (cached), after ``regex_cost`` has shown its backtracking is bounded; ``_regex_search``
refuses the values the two engines could read differently.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Any

from phactor.flags.filters.regex_cost import _bounded_regex

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
