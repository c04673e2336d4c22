"""Exception formatting for PostHog error tracking: Python exceptions to `$exception_list`.

The pure core of error tracking. The LoggerHandler actor calls these functions off the app's
threads; they never raise, because a failure to describe an error must not become a second error.
The only I/O is reading source files, and it goes through a `SourceCache` the caller owns.

Wire format (see shared/posthog-protocol.md, and the `posthog` package, which we match field for
field): `$exception_list` lists the outermost exception first, then, depth first, its cause or
context chain and the members of exception groups. Each entry links to its parent through
`mechanism.exception_id` / `mechanism.parent_id`; frames run outermost to innermost.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import hashlib
import linecache
import os
import re
import sys
import sysconfig
import threading
import tokenize
import types
import uuid
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

__all__ = [
    "CYCLE_MARKER",
    "DEFAULT_MAX_EXCEPTIONS",
    "DEFAULT_MAX_FRAMES",
    "MAX_LINE_BYTES",
    "MAX_VALUE_BYTES",
    "SourceCache",
    "call_site_fingerprint",
    "clean_text",
    "exception_level",
    "exception_list",
    "exception_properties",
    "is_in_app",
    "message_exception_list",
    "message_exception_properties",
    "traceback_of_caller",
    "wire_safe",
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
#: A source line is cut to this many UTF-8 bytes (as the `posthog` package does).
MAX_LINE_BYTES = 1024
#: An exception message is cut to this many UTF-8 bytes.
MAX_VALUE_BYTES = 8192
#: Lines of source shown before and after the line of each frame.
CONTEXT_LINES = 5
#: Source files larger than this are not read: such files are generated, and one would pin
#: megabytes in the cache for a few lines of context.
MAX_SOURCE_FILE_BYTES = 1024 * 1024

#: What `wire_safe` puts where a value contains itself (a reference back to an enclosing one).
CYCLE_MARKER = "<cycle>"
#: Containers nested deeper than this are cut by `wire_safe` (orjson refuses past 255 levels).
MAX_WIRE_DEPTH = 64
#: Values `wire_safe` copies at most: a structure that shares one container many times (a
#: "diamond": not a cycle, yet 2**64 paths for a tree walk) costs bounded time and size.
MAX_WIRE_NODES = 10_000

_SURROGATES_RE = re.compile("[\ud800-\udfff]")
_EXTERNAL_PATH_RE = re.compile(r"[\\/](?:site|dist)-packages[\\/]")
_HIDE_FLAGS = ("__tracebackhide__", "__traceback_hide__")
_HIDE_FLAG_SET = frozenset(_HIDE_FLAGS)

_LEVELS = {
    "fatal": "fatal",
    "critical": "fatal",
    "alert": "fatal",
    "emergency": "fatal",
    "error": "error",
    "exception": "error",
    "warning": "warning",
    "warn": "warning",
    "log": "log",
    "notice": "info",
    "info": "info",
    "debug": "debug",
    "trace": "debug",
}


def _interpreter_dirs() -> tuple[str, ...]:
    """Directories of the interpreter itself (stdlib, installed packages, scripts).

    Both the configured and the symlink-resolved spelling are kept, because a frame's filename
    is whatever path the module was imported through.
    """
    dirs: set[str] = set()
    schemes = [sysconfig.get_paths()]
    try:
        base = {"base": sys.base_prefix, "platbase": sys.base_exec_prefix}
        schemes.append(sysconfig.get_paths(vars=base))
    except Exception:
        pass
    for paths in schemes:
        for key in ("stdlib", "platstdlib", "purelib", "platlib", "scripts"):
            path = paths.get(key)
            if path:
                dirs.add(os.path.normpath(path))
                dirs.add(os.path.realpath(path))
    return tuple(sorted(d.rstrip(os.sep) + os.sep for d in dirs))


_INTERPRETER_DIRS = _interpreter_dirs()


# -- JSON-safe text and values ---------------------------------------------------------------------


def clean_text(text: str) -> str:
    """`text` with every surrogate code point replaced by U+FFFD.

    Lone surrogates come from `os.fsdecode` of a non-UTF-8 file name (and so from paths, error
    messages, log lines); they are not valid UTF-8 and JSON encoders refuse them.
    """
    if text.isascii():  # O(1) in CPython: the common case costs nothing
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return _SURROGATES_RE.sub("\ufffd", str(text))
    return text


def _clean_or_none(text: str | None) -> str | None:
    return clean_text(text) if isinstance(text, str) else text


def wire_safe(value: Any) -> Any:
    """A copy of `value` made only of JSON types, in time linear in its size. Never raises.

    For values the encoder's fast path refused (a cycle, a lone surrogate, a `__str__` that
    raises, a key that is not a string, an integer over 64 bits): a container inside itself
    becomes `CYCLE_MARKER`, surrogates become U+FFFD, other objects their (cleaned) text; past
    `MAX_WIRE_DEPTH` levels or `MAX_WIRE_NODES` values the rest is cut with a marker.
    """
    copier = _WireCopy()
    try:
        return copier.copy(value, 0)
    except Exception:  # an object whose type checks themselves raise
        return _unrepresentable(value)


class _WireCopy:
    __slots__ = ("nodes", "path")

    def __init__(self) -> None:
        self.path: set[int] = set()  # ids of the containers enclosing the current value
        self.nodes = 0

    def copy(self, value: Any, depth: int) -> Any:
        self.nodes += 1
        if self.nodes > MAX_WIRE_NODES:
            return "<truncated>"
        if value is None or isinstance(value, bool):
            return value
        if isinstance(value, str):
            return clean_text(str.__str__(value))
        if isinstance(value, int):
            number = int.__int__(value)
            return number if -(2**63) <= number < 2**64 else str(number)
        if isinstance(value, float):
            real = float.__float__(value)
            return real if real - real == 0.0 else None  # NaN and inf are not JSON
        if isinstance(value, dt.datetime | dt.date | dt.time):
            return _text_of(value, "isoformat")
        if isinstance(value, uuid.UUID | os.PathLike):
            return _text_of(value)
        if isinstance(value, bytes | bytearray | memoryview):
            return bytes(value).decode("utf-8", "replace")
        if depth >= MAX_WIRE_DEPTH:
            return "<max depth exceeded>"
        if isinstance(value, enum.Enum):
            return self.copy(value.value, depth + 1)
        if isinstance(value, Mapping | list | tuple | set | frozenset) or (
            dataclasses.is_dataclass(value) and not isinstance(value, type)
        ):
            key = id(value)
            if key in self.path:
                return CYCLE_MARKER
            self.path.add(key)
            try:
                return self._container(value, depth)
            finally:
                self.path.discard(key)
        return _text_of(value)

    def _container(self, value: Any, depth: int) -> Any:
        try:
            if isinstance(value, Mapping):
                items = list(value.items())
            elif isinstance(value, list | tuple | set | frozenset):
                return [self.copy(item, depth + 1) for item in list(value)]
            else:  # a dataclass instance
                items = [(f.name, getattr(value, f.name, None)) for f in dataclasses.fields(value)]
        except Exception:
            return _unrepresentable(value)
        result: dict[str, Any] = {}
        for k, v in items:
            result[self.key(k)] = self.copy(v, depth + 1)
        return result

    @staticmethod
    def key(key: Any) -> str:
        if isinstance(key, str):
            return clean_text(str.__str__(key))
        return _text_of(key)


def _text_of(value: Any, method: str | None = None) -> str:
    """`str(value)` (or `value.method()`), cleaned; a marker when it raises or is not text."""
    try:
        text = getattr(value, method)() if method else str(value)
        if isinstance(text, str):
            return clean_text(str.__str__(text))
    except Exception:
        pass
    return _unrepresentable(value)


def _unrepresentable(value: object) -> str:
    return f"<unrepresentable {type(value).__name__}>"


# -- source lines -------------------------------------------------------------------------------


def _read_source_file(filename: str) -> list[str]:
    """Default SourceCache loader: the file's lines, decoded as Python source is (PEP 263)."""
    if filename.startswith("<") and filename.endswith(">"):
        # exec()/doctest/IPython code registers its text in linecache under a pseudo-name.
        return linecache.getlines(filename)
    try:
        if os.path.getsize(filename) > MAX_SOURCE_FILE_BYTES:
            return []
        with tokenize.open(filename) as f:
            return f.read().splitlines()
    except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
        return []


def _new_source_cache_locks_after_fork() -> None:
    # A forked child keeps the caches (a builder may outlive the fork), but a parent thread
    # may have held one's lock at fork time.
    for cache in list(_SOURCE_CACHES):
        cache._lock = threading.Lock()


_SOURCE_CACHES: weakref.WeakSet[SourceCache] = weakref.WeakSet()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_source_cache_locks_after_fork)


class SourceCache:
    """A bounded LRU cache of source file lines, keyed by filename.

    Holds at most `max_files` files; a file that cannot be read is cached as empty so a missing
    file costs one attempt, not one per frame. `loader(filename)` returns the file's lines (with
    or without line endings) or raises; the default reads the file from disk. Files are not
    re-checked for changes: a deployment that replaces source files restarts the process.
    Thread-safe, though the LoggerHandler actor is its only intended user.
    """

    def __init__(
        self,
        max_files: int = 64,
        loader: Callable[[str], Sequence[str] | None] | None = None,
    ) -> None:
        if not isinstance(max_files, int) or isinstance(max_files, bool) or max_files < 1:
            raise TypeError(f"max_files must be a positive int, got {max_files!r}")
        self.max_files = max_files
        self._loader = loader if loader is not None else _read_source_file
        self._files: OrderedDict[str, tuple[str, ...]] = OrderedDict()
        self._lock = threading.Lock()
        _SOURCE_CACHES.add(self)
        # Per call site (file, module, line, in_app rules): everything a frame needs that does
        # not change between two exceptions raised there. An exception storm repeats the same
        # sites, so this saves most of the per-frame work (paths, source lines, in_app).
        self.sites: dict[tuple[Any, ...], tuple[Any, ...]] = {}

    def lines(self, filename: str) -> tuple[str, ...]:
        """The lines of `filename` without line endings; empty when it cannot be read."""
        with self._lock:
            cached = self._files.get(filename)
            if cached is not None:
                self._files.move_to_end(filename)
                return cached
        try:
            loaded = self._loader(filename)
            lines = tuple(clean_text(line.rstrip("\r\n")) for line in loaded) if loaded else ()
        except Exception:
            lines = ()
        with self._lock:
            self._files[filename] = lines
            self._files.move_to_end(filename)
            while len(self._files) > self.max_files:
                self._files.popitem(last=False)
        return lines

    def __len__(self) -> int:
        return len(self._files)

    def __contains__(self, filename: object) -> bool:
        return filename in self._files


def _cut(text: str, max_bytes: int) -> str:
    """`text` cut to at most `max_bytes` UTF-8 bytes on a code point boundary, marked by '...'."""
    if len(text) * 4 <= max_bytes:  # cheap exit: even all 4-byte code points would fit
        return text
    try:
        encoded = text.encode("utf-8", errors="replace")
    except Exception:
        return text[: max_bytes // 4]
    if len(encoded) <= max_bytes:
        return text
    return encoded[: max_bytes - 3].decode("utf-8", errors="ignore") + "..."


def _source_context(
    sources: SourceCache, path: str | None, lineno: int | None
) -> tuple[list[str], str | None, list[str]]:
    if not path or not isinstance(lineno, int) or lineno < 1:
        return [], None, []
    lines = sources.lines(path)
    index = lineno - 1
    if index >= len(lines):  # the file changed since the code was loaded
        return [], None, []
    pre = [_cut(line, MAX_LINE_BYTES) for line in lines[max(0, index - CONTEXT_LINES) : index]]
    post = [_cut(line, MAX_LINE_BYTES) for line in lines[index + 1 : index + 1 + CONTEXT_LINES]]
    return pre, _cut(lines[index], MAX_LINE_BYTES), post


# -- in_app -------------------------------------------------------------------------------------


def _is_pseudo_filename(filename: str) -> bool:
    return filename.startswith("<") and filename.endswith(">")


def _under(path: str, root: str) -> bool:
    root = root.rstrip(os.sep)
    return path == root or path.startswith(root + os.sep)


def is_in_app(
    module: str | None,
    abs_path: str | None,
    *,
    in_app_modules: Sequence[str] = (),
    project_root: str | None = None,
) -> bool:
    """Whether a frame is the application's own code. First rule that applies wins:

    1. `module` is one of `in_app_modules` or inside one (dotted prefix) -> True;
    2. the path is under a `site-packages`/`dist-packages` directory -> False;
    3. the path is under the interpreter's own directories (stdlib, the environment's scripts
       and package dirs) or is frozen stdlib code (`<frozen ...>`) -> False;
    4. a `project_root` is given -> True when the path is under it, else False;
    5. no `project_root` -> True: code that is neither third party nor the interpreter's is the
       app's (this includes `<string>`/`<stdin>` code the app exec'd itself).

    A frame with no path at all is False unless rule 1 claims it.
    """
    if module:
        for prefix in in_app_modules:
            if module == prefix or module.startswith(prefix + "."):
                return True
    if not abs_path:
        return False
    if _EXTERNAL_PATH_RE.search(abs_path):
        return False
    if abs_path.startswith("<frozen "):
        return False
    if abs_path.startswith(_INTERPRETER_DIRS):
        return False
    if project_root:
        return _under(abs_path, os.path.normpath(project_root))
    return True


# -- frames -------------------------------------------------------------------------------------


def _frame_filename(module: str | None, abs_path: str) -> str:
    """The path shown in the UI: relative to the import root for package modules.

    `json.decoder` at `/usr/lib/python3.11/json/decoder.py` becomes `json/decoder.py`, derived from
    the module name alone so no global import state is consulted.
    """
    if _is_pseudo_filename(abs_path):
        return abs_path
    base = os.path.basename(abs_path)
    if not module or module == "__main__":
        return base
    parts = module.split(".")
    if base in ("__init__.py", "__init__.pyc"):
        parts.append(base)
    else:
        parts[-1] = base
    suffix = os.sep.join(parts)
    if abs_path.endswith(os.sep + suffix):
        return suffix
    return base


def _is_hidden(frame: types.FrameType) -> bool:
    # Reading f_locals copies a frame's locals, so only frames whose code declares the flag pay.
    code = frame.f_code
    if _HIDE_FLAG_SET.isdisjoint(code.co_varnames):
        return False
    try:
        local_vars = frame.f_locals
        return any(bool(local_vars.get(flag)) for flag in _HIDE_FLAGS)
    except Exception:
        return False


def _serialize_frame(
    frame: types.FrameType,
    lineno: int | None,
    sources: SourceCache,
    in_app_modules: Sequence[str],
    project_root: str | None,
) -> dict[str, Any]:
    try:
        code = frame.f_code
        filename: str | None = code.co_filename or None
        function = clean_text(code.co_name) or "<unknown>"
    except Exception:
        filename, function = None, "<unknown>"
    try:
        module = frame.f_globals.get("__name__")
        if not isinstance(module, str):
            module = None
    except Exception:
        module = None

    key = (filename, module, lineno, project_root, in_app_modules)
    cacheable = True
    try:
        site = sources.sites.get(key)
    except TypeError:  # unhashable in_app_modules (a list): no caching for this call
        cacheable, site = False, None
    if site is None:
        site = _site(filename, module, lineno, sources, in_app_modules, project_root)
        if cacheable:
            if len(sources.sites) >= _MAX_SITES:
                sources.sites.clear()
            sources.sites[key] = site
    abs_path, shown, pre, line, post, in_app = site
    if module is not None:
        module = clean_text(module)
    return {
        "platform": "python",
        "filename": shown,
        "abs_path": abs_path,
        "function": function,
        "module": module,
        "lineno": lineno,
        "pre_context": list(pre),
        "context_line": line,
        "post_context": list(post),
        "in_app": in_app,
    }


_MAX_SITES = 4096


def _site(
    filename: str | None,
    module: str | None,
    lineno: int | None,
    sources: SourceCache,
    in_app_modules: Sequence[str],
    project_root: str | None,
) -> tuple[Any, ...]:
    """What a frame at this call site shows: (abs_path, filename, pre, line, post, in_app)."""
    abs_path: str | None = None
    if filename:
        abs_path = filename if _is_pseudo_filename(filename) else os.path.abspath(filename)
    try:
        pre, line, post = _source_context(sources, abs_path, lineno)
    except Exception:
        pre, line, post = [], None, []
    return (
        _clean_or_none(abs_path),
        clean_text(_frame_filename(module, abs_path)) if abs_path else None,
        tuple(pre),
        line,
        tuple(post),
        is_in_app(module, abs_path, in_app_modules=in_app_modules, project_root=project_root),
    )


def _traceback_entries(
    tb: types.TracebackType | None, max_frames: int
) -> list[tuple[types.FrameType, int | None]]:
    """(frame, lineno) pairs outermost first; past `max_frames`, the middle is dropped.

    The crash site (innermost) and the entry point (outermost) are what a reader needs; a
    recursion's middle repeats itself.
    """
    head_size = max_frames // 2
    tail_size = max_frames - head_size
    head: list[tuple[types.FrameType, int | None]] = []
    tail: list[tuple[types.FrameType, int | None]] = []
    while tb is not None:
        try:
            frame, lineno, nxt = tb.tb_frame, tb.tb_lineno, tb.tb_next
        except Exception:
            break
        if not _is_hidden(frame):
            item = (frame, lineno if isinstance(lineno, int) else None)
            if len(head) < head_size:
                head.append(item)
            else:
                tail.append(item)
                if len(tail) > 2 * tail_size:  # trim in batches: amortised O(1) per frame
                    del tail[:-tail_size]
        tb = nxt
    return head + tail[max(0, len(tail) - tail_size) :] if tail_size else head


# -- exceptions ---------------------------------------------------------------------------------


def _safe_str(value: object) -> str:
    """`str(value)` (else its repr), with surrogates replaced; never raises."""
    for to_text in (str, repr):
        try:
            text = to_text(value)
            if isinstance(text, str):
                return clean_text(text)
        except Exception:
            pass
    try:
        return f"<unprintable {type(value).__qualname__} object>"
    except Exception:
        return "<unprintable object>"


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
        "value": _cut(_safe_str(_message_of(exc)), MAX_VALUE_BYTES),
        "module": _type_module(cls),
        "mechanism": mechanism,
    }
    frames = []
    for frame, lineno in _traceback_entries(traceback, max(1, frame_budget)):
        try:
            frames.append(_serialize_frame(frame, lineno, sources, in_app_modules, project_root))
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
        "value": _cut(_safe_str(exc), MAX_VALUE_BYTES),
        "module": module,
        "mechanism": {
            "type": mechanism_type if isinstance(mechanism_type, str) else "generic",
            "handled": bool(handled),
            "synthetic": False,
            "exception_id": 0,
        },
    }


def exception_level(level: object) -> str:
    """PostHog's `$exception_level` for a level name or a `logging` level number.

    Names follow the `posthog` package ("critical" -> "fatal", "warn" -> "warning"); numbers map
    by `logging` thresholds (CRITICAL and above -> "fatal"). Anything else is "error".
    """
    if isinstance(level, str):
        return _LEVELS.get(level.lower(), "error")
    if isinstance(level, int) and not isinstance(level, bool):
        if level >= 50:
            return "fatal"
        if level >= 40:
            return "error"
        if level >= 30:
            return "warning"
        if level >= 20:
            return "info"
        return "debug"
    return "error"


def exception_properties(
    exc: BaseException,
    *,
    level: str | int = "error",
    source: str | None = None,
    handled: bool = True,
    mechanism_type: str = "generic",
    fingerprint: str | None = None,
    in_app_modules: Sequence[str] = (),
    project_root: str | None = None,
    sources: SourceCache | None = None,
    max_frames: int = DEFAULT_MAX_FRAMES,
    max_exceptions: int = DEFAULT_MAX_EXCEPTIONS,
    synthetic_traceback: types.TracebackType | None = None,
) -> dict[str, Any]:
    """The error-tracking properties of an `$exception` event for `exc`. Never raises.

    `$exception_list`, `$exception_level` (see `exception_level`), `$exception_source` when a
    source is given, and `$exception_fingerprint` when a fingerprint is given (it overrides
    PostHog's grouping). These are all the `posthog` package sends: PostHog derives
    `$exception_types`, `$exception_values`, `$exception_functions`, the issue id and its own
    fingerprint from the list at ingestion, so an SDK must not send them.
    Uncaught exceptions: `level="fatal", handled=False, mechanism_type="onuncaughtexception"`.
    """
    properties: dict[str, Any] = {
        "$exception_list": exception_list(
            exc,
            handled=handled,
            mechanism_type=mechanism_type,
            in_app_modules=in_app_modules,
            project_root=project_root,
            sources=sources,
            max_frames=max_frames,
            max_exceptions=max_exceptions,
            synthetic_traceback=synthetic_traceback,
        ),
        "$exception_level": exception_level(level),
    }
    if isinstance(source, str) and source:
        properties["$exception_source"] = source
    if isinstance(fingerprint, str) and fingerprint:
        properties["$exception_fingerprint"] = fingerprint
    return properties


# -- error records without an exception ----------------------------------------------------------


def call_site_fingerprint(
    logger_name: str | None, pathname: str | None, function: str | None, level: str | int = "error"
) -> str:
    """A stable `$exception_fingerprint` for error records logged from one call site.

    Built from the logger name, the file's base name, the function and the level, not from the
    message (interpolated values would split one issue into thousands) nor the line number (an
    edit above the call would start a new issue) nor the directory (it differs between deploys).
    """
    parts = (
        "phactor.log.v1",
        _safe_str(logger_name or "root"),
        os.path.basename(_safe_str(pathname or "")),
        _safe_str(function or ""),
        exception_level(level),
    )
    return hashlib.sha256("\0".join(parts).encode("utf-8", errors="replace")).hexdigest()


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
            "value": _cut(_safe_str(message), MAX_VALUE_BYTES),
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
            abs_path = path if _is_pseudo_filename(path) else os.path.abspath(path)
        line_no = lineno if isinstance(lineno, int) and not isinstance(lineno, bool) else None
        mod = module if isinstance(module, str) and module else None
        try:
            pre, line, post = _source_context(sources, abs_path, line_no)
        except Exception:
            pre, line, post = [], None, []
        frame = {
            "platform": "python",
            "filename": clean_text(_frame_filename(mod, abs_path)) if abs_path else None,
            "abs_path": _clean_or_none(abs_path),
            "function": clean_text(function)
            if isinstance(function, str) and function
            else "<unknown>",
            "module": _clean_or_none(mod),
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
                "value": _cut(_safe_str(message), MAX_VALUE_BYTES),
                "module": None,
                "mechanism": {
                    "type": "generic",
                    "handled": True,
                    "synthetic": True,
                    "exception_id": 0,
                },
            }
        ]


def message_exception_properties(
    message: str,
    *,
    logger_name: str | None,
    function: str | None,
    pathname: str | None,
    lineno: int | None,
    level: str | int = "error",
    source: str | None = "logging",
    module: str | None = None,
    in_app_modules: Sequence[str] = (),
    project_root: str | None = None,
    sources: SourceCache | None = None,
) -> dict[str, Any]:
    """Error-tracking properties for an error record without an exception. Never raises.

    As `exception_properties`, with `message_exception_list` as the list and
    `call_site_fingerprint` as `$exception_fingerprint`, so every record from one call site lands
    in one issue whatever its interpolated message.
    """
    properties: dict[str, Any] = {
        "$exception_list": message_exception_list(
            message,
            logger_name=logger_name,
            function=function,
            pathname=pathname,
            lineno=lineno,
            module=module,
            in_app_modules=in_app_modules,
            project_root=project_root,
            sources=sources,
        ),
        "$exception_level": exception_level(level),
        "$exception_fingerprint": call_site_fingerprint(logger_name, pathname, function, level),
    }
    if isinstance(source, str) and source:
        properties["$exception_source"] = source
    return properties


def traceback_of_caller(skip: int = 0) -> types.TracebackType | None:
    """A traceback of the calling thread's stack, outermost first, ending at the caller.

    For exceptions that were created but never raised (`capture_exception(ValueError("x"))`):
    call it on the app's thread, cheaply, and pass it as `synthetic_traceback`. `skip` drops that
    many more innermost frames (your own capture helpers). Returns None if the stack is empty.
    """
    try:
        frame: types.FrameType | None = sys._getframe(1 + max(0, skip))
    except (ValueError, TypeError):
        return None
    tb: types.TracebackType | None = None
    while frame is not None:
        tb = types.TracebackType(tb, frame, frame.f_lasti, frame.f_lineno)
        frame = frame.f_back
    return tb
