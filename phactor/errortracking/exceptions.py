"""Exceptions to `$exception_list` entries: one exception, its chain and its group members.

Part of the pure core (no threads; source lines only through the caller's `SourceCache`).
Wire format (see shared/posthog-protocol.md, and the `posthog` package, which we match field for
field): `$exception_list` lists the outermost exception first, then, depth first, its cause or
context chain and the members of exception groups. Each entry links to its parent through
`mechanism.exception_id` / `mechanism.parent_id`; frames run outermost to innermost (`frames`).
An error record without an exception gets a one-entry list (`message_exception_list`).
"""

from __future__ import annotations

import os
import types
from collections.abc import Iterator, Sequence
from typing import Any

from phactor.errortracking.frames import (
    SourceCache,
    frame_filename,
    is_in_app,
    is_pseudo_filename,
    serialize_frame,
    source_context,
    traceback_entries,
)
from phactor.errortracking.wire import clean_or_none, clean_text, cut_text, safe_str

__all__ = [
    "DEFAULT_MAX_EXCEPTIONS",
    "DEFAULT_MAX_FRAMES",
    "MAX_GROUP_MEMBER_INSPECTIONS",
    "MAX_NOTES",
    "MAX_NOTE_BYTES",
    "MAX_TOTAL_FRAMES",
    "MAX_VALUE_BYTES",
    "exception_list",
    "message_exception_list",
]

#: Frames kept per exception; a deeper stack keeps its outermost and innermost halves.
DEFAULT_MAX_FRAMES = 100
#: Entries in one `$exception_list` (the `posthog` package uses the same bound).
DEFAULT_MAX_EXCEPTIONS = 50
#: Frames across the whole list. Bounds the event size (PostHog drops events over ~900 KiB) when a
#: group holds many members with deep stacks; past it each exception keeps only its crash site.
MAX_TOTAL_FRAMES = 400
#: Group members looked at in one call, counting duplicates, so a huge group costs bounded time.
MAX_GROUP_MEMBER_INSPECTIONS = 1_000
#: An exception message is cut to this many UTF-8 bytes.
MAX_VALUE_BYTES = 8192
#: PEP 678 notes shown after the message (more: one line says how many were left out).
MAX_NOTES = 16
#: Each note is cut to this many UTF-8 bytes.
MAX_NOTE_BYTES = 1024


# -- exceptions ---------------------------------------------------------------------------------


def _message_of(exc: BaseException) -> object:
    """What to show as the exception's message.

    A `message` or `detail` attribute wins over `str(exc)`, as in the `posthog` package: it is the
    bare message of an ExceptionGroup (without "(2 sub-exceptions)") and of many libraries'
    errors (Django REST framework's `detail`, for one).
    """
    for attr in ("message", "detail"):
        try:
            value = getattr(exc, attr, None)
        except Exception:
            continue
        if value:
            return value
    return exc


def _notes_of(exc: BaseException) -> str:
    """The exception's PEP 678 notes as Python's traceback prints them after the message: one
    per line (`"\\n" + note` each), at most `MAX_NOTES` of `MAX_NOTE_BYTES` each; "" for none.

    The `posthog` package sends no notes; they are often the one clue that tells two failures
    of one line apart ("while importing row 12"), so they go in the value. Never raises.
    """
    try:
        notes = getattr(exc, "__notes__", None)
        if notes is None:
            return ""
        if isinstance(notes, str) or not isinstance(notes, (list, tuple)):
            notes = [notes]  # as Python, which shows a __notes__ that is no sequence whole
        shown = []
        for note in notes[:MAX_NOTES]:
            if isinstance(note, str):
                note = note[:MAX_NOTE_BYTES]  # a character is at least a byte: cut before work
            shown.append("\n" + cut_text(safe_str(note), MAX_NOTE_BYTES))
        if len(notes) > MAX_NOTES:
            shown.append(f"\n({len(notes) - MAX_NOTES} more notes)")
        return "".join(shown)
    except Exception:
        return ""


def _type_name(cls: type) -> str:
    name = getattr(cls, "__qualname__", None) or getattr(cls, "__name__", None)
    return clean_text(name) if isinstance(name, str) else "<unknown>"


def _type_module(cls: type) -> str | None:
    module = getattr(cls, "__module__", None)
    if not isinstance(module, str) or module in ("builtins", "__builtins__"):
        return None
    return clean_text(module)


def _linked_exception(exc: BaseException) -> tuple[BaseException | None, str]:
    """The exception `exc` chains to and how, with the rules `traceback` prints by."""
    try:
        cause = exc.__cause__
        if isinstance(cause, BaseException):
            return cause, "cause"
        if not exc.__suppress_context__:
            context = exc.__context__
            if isinstance(context, BaseException):
                return context, "context"
    except Exception:
        pass
    return None, ""


def _group_members(exc: BaseException) -> Sequence[BaseException]:
    if not isinstance(exc, BaseExceptionGroup):
        return ()
    try:
        members = exc.exceptions
        return members if isinstance(members, tuple) else ()
    except Exception:
        return ()


def _single_entry(
    exc: BaseException,
    *,
    exception_id: int,
    parent_id: int | None,
    link: str,
    handled: bool,
    mechanism_type: str,
    synthetic: bool,
    traceback: types.TracebackType | None,
    frame_budget: int,
    sources: SourceCache,
    in_app_modules: Sequence[str],
    project_root: str | None,
) -> dict[str, Any]:
    cls = type(exc)
    mechanism: dict[str, Any]
    if parent_id is None:
        mechanism = {"type": mechanism_type, "handled": handled, "synthetic": synthetic}
    else:
        # As in the `posthog` package: a linked exception's handling is its root's business.
        mechanism = {"type": "chained", "synthetic": False, "source": link, "parent_id": parent_id}
    mechanism["exception_id"] = exception_id
    if isinstance(exc, BaseExceptionGroup):
        mechanism["is_exception_group"] = True
    errno = getattr(exc, "errno", None) if isinstance(exc, OSError) else None
    if isinstance(errno, int):
        mechanism["meta"] = {"errno": {"number": errno}}

    entry: dict[str, Any] = {
        "type": _type_name(cls),
        "value": cut_text(safe_str(_message_of(exc)), MAX_VALUE_BYTES) + _notes_of(exc),
        "module": _type_module(cls),
        "mechanism": mechanism,
    }
    frames = []
    for frame, lineno in traceback_entries(traceback, max(1, frame_budget)):
        try:
            frames.append(serialize_frame(frame, lineno, sources, in_app_modules, project_root))
        except Exception:
            continue
    if frames:
        entry["stacktrace"] = {"type": "raw", "frames": frames}
    return entry


def _walk(
    root: BaseException, max_exceptions: int
) -> Iterator[tuple[BaseException, int, int | None, str]]:
    """(exception, exception_id, parent_id, link) depth first: a node, its chain, its members.

    Bounded by `max_exceptions` outputs and `MAX_GROUP_MEMBER_INSPECTIONS` group members looked
    at; an exception met twice (a cycle, or one object in two places) is listed once.
    """
    seen: set[int] = set()
    keep_alive: list[BaseException] = []  # ids are only unique while the objects live
    inspections = 0
    next_id = 0
    stack: list[tuple[BaseException, int | None, str]] = [(root, None, "")]
    while stack and next_id < max_exceptions:
        exc, parent_id, link = stack.pop()
        if id(exc) in seen:
            continue
        seen.add(id(exc))
        keep_alive.append(exc)
        exception_id = next_id
        next_id += 1
        yield exc, exception_id, parent_id, link

        # Pushed in reverse so the chain pops first, then members in order.
        members = _group_members(exc)
        room = min(len(members), MAX_GROUP_MEMBER_INSPECTIONS - inspections)
        if room > 0:
            inspections += room
            for member in reversed(members[:room]):
                if isinstance(member, BaseException):
                    stack.append((member, exception_id, "member"))
        linked, how = _linked_exception(exc)
        if linked is not None:
            stack.append((linked, exception_id, how))


def exception_list(
    exc: BaseException,
    *,
    handled: bool,
    mechanism_type: str = "generic",
    in_app_modules: Sequence[str] = (),
    project_root: str | None = None,
    sources: SourceCache | None = None,
    max_frames: int = DEFAULT_MAX_FRAMES,
    max_exceptions: int = DEFAULT_MAX_EXCEPTIONS,
    synthetic_traceback: types.TracebackType | None = None,
) -> list[dict[str, Any]]:
    """The `$exception_list` for `exc`: one entry per exception, outermost first. Never raises.

    Linked exceptions follow depth first: `__cause__`, else `__context__` unless
    `__suppress_context__` (mechanism `source` "cause"/"context"), then the members of an
    exception group (source "member"). Only the root carries `handled` and `mechanism_type`;
    linked entries are `"chained"` with a `parent_id`, as the `posthog` package sends them.

    `synthetic_traceback` stands in for the stack of an exception that was never raised (see
    `traceback_of_caller`); the entry is then marked `synthetic`. Source lines come from
    `sources`; pass a long-lived `SourceCache` (None reads files afresh for this call only).
    `in_app` follows `is_in_app`.
    """
    try:
        if sources is None:
            sources = SourceCache()
        if not isinstance(exc, BaseException):
            return [_not_an_exception_entry(exc, handled, mechanism_type)]
        max_exceptions = max(1, int(max_exceptions))
        max_frames = max(1, int(max_frames))
        in_app_modules = tuple(m for m in in_app_modules if isinstance(m, str) and m)
        entries: list[dict[str, Any]] = []
        frames_left = MAX_TOTAL_FRAMES
        for item, exception_id, parent_id, link in _walk(exc, max_exceptions):
            try:
                traceback = item.__traceback__
            except Exception:
                traceback = None
            synthetic = False
            if item is exc and traceback is None and synthetic_traceback is not None:
                traceback, synthetic = synthetic_traceback, True
            entry = _single_entry(
                item,
                exception_id=exception_id,
                parent_id=parent_id,
                link=link,
                handled=bool(handled),
                mechanism_type=mechanism_type,
                synthetic=synthetic,
                traceback=traceback,
                frame_budget=min(max_frames, frames_left),
                sources=sources,
                in_app_modules=in_app_modules,
                project_root=project_root,
            )
            frames_left -= len(entry.get("stacktrace", {}).get("frames", ()))
            entries.append(entry)
        return entries
    except Exception:
        return [_not_an_exception_entry(exc, handled, mechanism_type)]


def _not_an_exception_entry(exc: object, handled: bool, mechanism_type: str) -> dict[str, Any]:
    # Last resort: keep the type and message even when walking the exception failed.
    try:
        type_name = _type_name(type(exc))
        module = _type_module(type(exc))
    except Exception:
        type_name, module = "<unknown>", None
    return {
        "type": type_name,
        "value": cut_text(safe_str(exc), MAX_VALUE_BYTES),
        "module": module,
        "mechanism": {
            "type": mechanism_type if isinstance(mechanism_type, str) else "generic",
            "handled": bool(handled),
            "synthetic": False,
            "exception_id": 0,
        },
    }


def message_exception_list(
    message: str,
    *,
    logger_name: str | None,
    function: str | None,
    pathname: str | None,
    lineno: int | None,
    module: str | None = None,
    in_app_modules: Sequence[str] = (),
    project_root: str | None = None,
    sources: SourceCache | None = None,
) -> list[dict[str, Any]]:
    """A one-entry `$exception_list` for an error record that carries no exception. Never raises.

    type = the logger name, value = the message (cut to `MAX_VALUE_BYTES`), mechanism `generic`,
    handled, `synthetic` (no exception object exists), and one frame: the logging call site.
    PostHog's own grouping uses the type and the in-app frame when a stack is present, never the
    message; `message_exception_properties` adds an explicit call-site fingerprint on top.
    `module` (the caller's `__name__`, when known) only serves `in_app_modules` matching.
    """
    try:
        if sources is None:
            sources = SourceCache()
        type_name = (
            clean_text(logger_name) if isinstance(logger_name, str) and logger_name else "root"
        )
        entry: dict[str, Any] = {
            "type": type_name,
            "value": cut_text(safe_str(message), MAX_VALUE_BYTES),
            "module": None,
            "mechanism": {
                "type": "generic",
                "handled": True,
                "synthetic": True,
                "exception_id": 0,
            },
        }
        path = pathname if isinstance(pathname, str) and pathname else None
        abs_path = None
        if path:
            abs_path = path if is_pseudo_filename(path) else os.path.abspath(path)
        line_no = lineno if isinstance(lineno, int) and not isinstance(lineno, bool) else None
        mod = module if isinstance(module, str) and module else None
        try:
            pre, line, post = source_context(sources, abs_path, line_no)
        except Exception:
            pre, line, post = [], None, []
        frame = {
            "platform": "python",
            "filename": clean_text(frame_filename(mod, abs_path)) if abs_path else None,
            "abs_path": clean_or_none(abs_path),
            "function": clean_text(function)
            if isinstance(function, str) and function
            else "<unknown>",
            "module": clean_or_none(mod),
            "lineno": line_no,
            "pre_context": pre,
            "context_line": line,
            "post_context": post,
            "in_app": is_in_app(
                mod,
                abs_path,
                in_app_modules=tuple(m for m in in_app_modules if isinstance(m, str) and m),
                project_root=project_root,
            ),
        }
        entry["stacktrace"] = {"type": "raw", "frames": [frame]}
        return [entry]
    except Exception:
        return [
            {
                "type": "root",
                "value": cut_text(safe_str(message), MAX_VALUE_BYTES),
                "module": None,
                "mechanism": {
                    "type": "generic",
                    "handled": True,
                    "synthetic": True,
                    "exception_id": 0,
                },
            }
        ]
