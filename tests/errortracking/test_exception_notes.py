"""PEP 678 notes (`add_note`) reach `$exception_list`: appended to the entry's value, one per line,
as Python's own traceback prints them (the `posthog` package sends none: the value it sends is
ours without the notes), bounded in count and size, surrogate-safe, never raising."""

from __future__ import annotations

import traceback
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from posthog import exception_utils as ph

import phactor
import phactor.testing
from phactor.errortracking import exception_list
from phactor.errortracking.exceptions import MAX_NOTE_BYTES, MAX_NOTES, MAX_VALUE_BYTES


def raised(exc: BaseException) -> BaseException:
    try:
        raise exc
    except BaseException as caught:
        return caught


def posthog_value(exc: BaseException) -> str:
    """The value the posthog package sends for `exc` (its own functions)."""
    return ph.exceptions_from_error_tuple((type(exc), exc, exc.__traceback__))[0]["value"]


def printed_after_the_message(exc: BaseException) -> list[str]:
    """The lines Python's traceback prints after `Type: message` (the notes)."""
    lines = "".join(traceback.format_exception_only(exc)).split("\n")
    return lines[len(f"{type(exc).__name__}: {exc}".split("\n")) :][:-1]


def test_notes_follow_the_message_one_per_line_as_python_prints_them():
    exc = ValueError("bad row")
    exc.add_note("while importing batch 7")
    exc.add_note("row 12:\n  id=3")
    [entry] = exception_list(raised(exc), handled=True)
    assert entry["value"] == "bad row\nwhile importing batch 7\nrow 12:\n  id=3"
    assert entry["value"].split("\n")[1:] == printed_after_the_message(exc)
    assert entry["value"].startswith(posthog_value(exc))


def test_each_exception_of_a_chain_keeps_its_own_notes():
    inner = KeyError("k")
    inner.add_note("inner note")
    outer = RuntimeError("outer")
    outer.__cause__ = inner
    entries = exception_list(raised(outer), handled=True)
    assert [e["value"] for e in entries] == ["outer", "'k'\ninner note"]


# Text that is not a lone surrogate: what posthog and Python print the same way.
plain_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=60)


@given(message=plain_text, notes=st.lists(plain_text, max_size=MAX_NOTES))
def test_differential_the_value_is_posthogs_plus_the_notes(message: str, notes: list[str]):
    exc = ValueError(message)
    for note in notes:
        exc.add_note(note)
    [entry] = exception_list(raised(exc), handled=True)
    theirs = posthog_value(exc)
    assert entry["value"] == ("\n".join([theirs, *notes]) if notes else theirs)
    if notes:
        assert entry["value"].split("\n")[len(theirs.split("\n")) :] == printed_after_the_message(
            exc
        )


@given(
    notes=st.lists(
        st.one_of(
            st.text(max_size=MAX_NOTE_BYTES * 2),  # lone surrogates included
            st.integers(),
            st.just("x" * (MAX_NOTE_BYTES * 2)),
        ),
        max_size=MAX_NOTES * 3,
    )
)
def test_notes_are_bounded_in_count_and_size_and_surrogate_safe(notes: list[Any]):
    exc = ValueError("m")
    exc.__notes__ = list(notes)  # what add_note builds, with non-str notes too
    [entry] = exception_list(raised(exc), handled=True)
    value = entry["value"]
    value.encode("utf-8")  # no lone surrogate left: it encodes
    assert len(value.encode("utf-8")) <= MAX_VALUE_BYTES + MAX_NOTES * (MAX_NOTE_BYTES + 1) + 64
    if len(notes) > MAX_NOTES:
        assert value.endswith(f"({len(notes) - MAX_NOTES} more notes)")


class _HostileNotes(list):
    def __iter__(self):
        raise RuntimeError("no iterating me")

    def __len__(self):
        raise RuntimeError("no measuring me")


class _BadStr:
    def __str__(self) -> str:
        raise RuntimeError("no str")

    __repr__ = __str__


def test_hostile_notes_never_break_the_entry():
    for notes in (_HostileNotes(["x"]), "a plain str", 42, None, [_BadStr()], (n for n in "ab")):
        exc = ValueError("m")
        exc.__notes__ = notes
        [entry] = exception_list(raised(exc), handled=True)
        assert entry["value"].startswith("m")
        assert entry["type"] == "ValueError"


def test_a_captured_exceptions_notes_reach_the_event(instance_name: str):
    inst = phactor.start(instance_name, test_mode=True)
    exc = ValueError("charge failed")
    exc.add_note("customer cus_42")
    assert inst.capture_exception(raised(exc)) is not None
    assert inst.flush(5)
    [event] = [e for e in phactor.testing.events(instance_name) if e["event"] == "$exception"]
    assert event["properties"]["$exception_list"][0]["value"] == "charge failed\ncustomer cus_42"
