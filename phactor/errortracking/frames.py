"""Frames and source context: a traceback to the `frames` of one `$exception_list` entry.

Part of the pure core: no threads; the only I/O is reading source files, through a `SourceCache`
the caller owns (the LoggerHandler keeps one per incarnation). A frame carries its file and
function, five lines of source on each side of its line, and `in_app` (`is_in_app`). A deep
stack keeps its outermost and innermost frames; frames that set `__tracebackhide__` are left
out. `traceback_of_caller` makes a stack for an exception that was never raised.
"""

from __future__ import annotations

import linecache
import os
import re
import sys
import sysconfig
import threading
import tokenize
import types
import weakref
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

from phactor.errortracking.wire import clean_or_none, clean_text, cut_text

__all__ = [
    "CONTEXT_LINES",
    "MAX_LINE_BYTES",
    "MAX_SOURCE_FILE_BYTES",
    "SourceCache",
    "frame_filename",
    "is_in_app",
    "is_pseudo_filename",
    "serialize_frame",
    "source_context",
    "traceback_entries",
    "traceback_of_caller",
]

#: A source line is cut to this many UTF-8 bytes (as the `posthog` package does).
MAX_LINE_BYTES = 1024
#: Lines of source shown before and after the line of each frame.
CONTEXT_LINES = 5
#: Source files larger than this are not read: such files are generated, and one would pin
#: megabytes in the cache for a few lines of context.
MAX_SOURCE_FILE_BYTES = 1024 * 1024

_EXTERNAL_PATH_RE = re.compile(r"[\\/](?:site|dist)-packages[\\/]")
_HIDE_FLAGS = ("__tracebackhide__", "__traceback_hide__")
_HIDE_FLAG_SET = frozenset(_HIDE_FLAGS)


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


def source_context(
    sources: SourceCache, path: str | None, lineno: int | None
) -> tuple[list[str], str | None, list[str]]:
    if not path or not isinstance(lineno, int) or lineno < 1:
        return [], None, []
    lines = sources.lines(path)
    index = lineno - 1
    if index >= len(lines):  # the file changed since the code was loaded
        return [], None, []
    pre = [cut_text(line, MAX_LINE_BYTES) for line in lines[max(0, index - CONTEXT_LINES) : index]]
    post = [cut_text(line, MAX_LINE_BYTES) for line in lines[index + 1 : index + 1 + CONTEXT_LINES]]
    return pre, cut_text(lines[index], MAX_LINE_BYTES), post


# -- in_app -------------------------------------------------------------------------------------


def is_pseudo_filename(filename: str) -> bool:
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


def frame_filename(module: str | None, abs_path: str) -> str:
    """The path shown in the UI: relative to the import root for package modules.

    `json.decoder` at `/usr/lib/python3.11/json/decoder.py` becomes `json/decoder.py`, derived from
    the module name alone so no global import state is consulted.
    """
    if is_pseudo_filename(abs_path):
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


def serialize_frame(
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
        abs_path = filename if is_pseudo_filename(filename) else os.path.abspath(filename)
    try:
        pre, line, post = source_context(sources, abs_path, lineno)
    except Exception:
        pre, line, post = [], None, []
    return (
        clean_or_none(abs_path),
        clean_text(frame_filename(module, abs_path)) if abs_path else None,
        tuple(pre),
        line,
        tuple(post),
        is_in_app(module, abs_path, in_app_modules=in_app_modules, project_root=project_root),
    )


def traceback_entries(
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
