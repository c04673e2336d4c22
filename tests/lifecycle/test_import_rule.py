"""The import rule of docs/architecture.md, enforced: imports go down the layers, never in a circle.

Every module under phactor/ is parsed with `ast` (nothing is imported) and placed in a layer by
the first matching pattern of PLACEMENT. A module may import from its own layer or a lower one
(LAYERS, bottom first); the import graph, in-function imports and `_lazy.lazy_exports` tables
included, has no cycle. Imports under `if TYPE_CHECKING:` are annotations only (they never run)
and are not edges. An import inside a function is allowed only when marked with a comment
`# lazy: <reason>` on its line or the line above (start-up time, say): an import moved into a
function to hide a circle shows up as that circle anyway. `devserver` is a separate tool: it
imports no phactor runtime module (only PUBLIC ones), and no runtime module imports it.
"""

from __future__ import annotations

import ast
import fnmatch
import itertools
import re
import tempfile
import textwrap
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import phactor

# Bottom first: a module may import from its own layer and the layers before it.
LAYERS = ("core", "transport", "actors", "instance", "api", "integrations")

# First match wins (fnmatch on the dotted module name). A new module that matches nothing fails
# the test: add a row (and, for a new concern, a row of docs/architecture.md's table).
PLACEMENT: tuple[tuple[str, str], ...] = (
    # a separate tool: the PostHog stand-in for tests and local development
    ("phactor.devserver", "devserver"),
    ("phactor.devserver.*", "devserver"),
    ("phactor.integrations", "integrations"),
    ("phactor.integrations.*", "integrations"),
    # the posthog package's API over the public one (a drop-in: one import line changes)
    ("phactor.compat", "integrations"),
    ("phactor.compat.*", "integrations"),
    # the public surface: module-level functions look the instance up and delegate
    ("phactor", "api"),
    ("phactor.api", "api"),
    ("phactor.testing", "api"),
    ("phactor.metrics", "api"),  # every instance's stats() as Prometheus text
    # one instance: its behaviour, its tree, the registry of instances, how the process ends
    ("phactor.instance", "instance"),
    ("phactor.tree", "instance"),
    ("phactor.registry", "instance"),
    ("phactor.aio", "instance"),  # the async view and module functions (registry below it)
    ("phactor.shutdown", "instance"),
    ("phactor.flags.methods", "instance"),
    ("phactor.errortracking", "instance"),  # the package re-exports capture_exception, loop
    ("phactor.errortracking.methods", "instance"),
    ("phactor.errortracking.loop*", "instance"),
    # actors and the shared state they work on
    ("phactor.buffer", "actors"),
    ("phactor.health", "actors"),  # last success/error, the watchdog, on_drop reports
    ("phactor.spooled", "actors"),  # the buffer with a durable spool, its writer thread
    ("phactor.supervisor", "actors"),
    ("phactor.batcher", "actors"),
    ("phactor.sender", "actors"),
    ("phactor.flags", "actors"),  # the package re-exports the FlagEvaluator
    ("phactor.flags.evaluator*", "actors"),
    ("phactor.errortracking.actor*", "actors"),
    ("phactor.errortracking.handler*", "actors"),
    ("phactor.errortracking.*hook*", "actors"),
    ("phactor.errortracking.guard*", "actors"),  # which thread is a phactor actor's
    ("phactor.errortracking.intake*", "actors"),
    ("phactor.errortracking.routing*", "actors"),  # the one root handler and hooks
    # I/O: HTTP, and the one scheduler thread timers and request deadlines run on
    ("phactor.transport", "transport"),
    ("phactor._http", "transport"),
    ("phactor.flags.http*", "transport"),
    ("phactor.timer", "transport"),
    ("phactor.spool", "transport"),  # the on-disk journal (SQLite)
    # the pure core (no threads, no I/O) and leaf helpers
    ("phactor.flags.*", "core"),
    ("phactor.errortracking.*", "core"),
    ("phactor.events", "core"),
    ("phactor.encoding", "core"),
    ("phactor.runtime", "core"),  # the runtime properties every event carries (read once)
    ("phactor.retry", "core"),
    ("phactor.config", "core"),
    ("phactor.errors", "core"),
    ("phactor.context", "core"),
    ("phactor._args", "core"),
    ("phactor._debug", "core"),
    ("phactor._guard", "core"),
    ("phactor._lazy", "core"),
    ("phactor._log", "core"),
    ("phactor._sigmask", "core"),
    ("phactor._sigwatch", "core"),
    ("phactor._version", "core"),
)

# What devserver may import from phactor (nothing today).
PUBLIC: frozenset[str] = frozenset()

# Known breaches, each waiting for the change that removes it: (importer, imported) -> who/what.
# The test fails when an entry is no longer needed, so the list only shrinks.
PENDING: Mapping[tuple[str, str], str] = {}

LAZY_MARK = re.compile(r"#\s*lazy:\s*\S")


@dataclass(frozen=True)
class Edge:
    importer: str
    imported: str
    line: int
    kind: str  # "module", "function" (inside a def), "lazy_exports"
    marked: bool = False


def module_names(root: Path, package: str) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file of the package at `root`."""
    modules: dict[str, Path] = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join([package, *parts])] = path
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _resolve(name: str, modules: Mapping[str, Path]) -> str | None:
    """The module `name` refers to: itself, or its closest enclosing module we have."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def _lazy_export_targets(
    call: ast.Call, module: str, tree: ast.Module, is_package: bool
) -> list[str]:
    """Modules a `lazy_exports(__name__, {name: relative module}, globals())` call serves."""
    if len(call.args) < 2:
        return []
    table = call.args[1]
    if isinstance(table, ast.Name):  # a module-level `_EXPORTS = {...}`
        name = table.id
        for stmt in tree.body:
            if isinstance(stmt, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == name for t in stmt.targets
            ):
                table = stmt.value
    if not isinstance(table, ast.Dict):
        return []
    package = module if is_package else module.rpartition(".")[0]
    return [
        f"{package}.{value.value}"
        for value in table.values
        if isinstance(value, ast.Constant) and isinstance(value.value, str)
    ]


def imports_of(module: str, path: Path, package: str, modules: Mapping[str, Path]) -> list[Edge]:
    """The runtime imports of one module within the package (TYPE_CHECKING blocks left out)."""
    source = path.read_text(encoding="utf-8")
    lines = source.splitlines()
    tree = ast.parse(source, str(path))
    is_package = path.name == "__init__.py"
    edges: list[Edge] = []

    def marked(node: ast.stmt) -> bool:
        first = max(node.lineno - 2, 0)
        last = node.end_lineno or node.lineno
        return any(LAZY_MARK.search(line) for line in lines[first:last])

    def add(target: str, node: ast.AST, kind: str, is_marked: bool) -> None:
        resolved = _resolve(target, modules)
        if resolved is not None and resolved != module:
            edges.append(Edge(module, resolved, getattr(node, "lineno", 0), kind, is_marked))

    def visit(node: ast.AST, in_function: bool) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child, in_function)
            return
        kind = "function" if in_function else "module"
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == package or alias.name.startswith(package + "."):
                    add(alias.name, node, kind, marked(node))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module if is_package else module.rpartition(".")[0]
                for _ in range(node.level - 1):
                    anchor = anchor.rpartition(".")[0]
                base = f"{anchor}.{base}" if base else anchor
            if base == package or base.startswith(package + "."):
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    add(sub if sub in modules else base, node, kind, marked(node))
        elif isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
            if name == "lazy_exports":
                for target in _lazy_export_targets(node, module, tree, is_package):
                    add(target, node, "lazy_exports", True)
        inside = in_function or isinstance(
            node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)
        )
        for child in ast.iter_child_nodes(node):
            visit(child, inside)

    visit(tree, False)
    return list(dict.fromkeys(edges))  # `from m import a, b`: one edge


def place(module: str, placement: Sequence[tuple[str, str]]) -> str | None:
    for pattern, layer in placement:
        if fnmatch.fnmatchcase(module, pattern):
            return layer
    return None


def cycles(edges: Iterable[Edge]) -> list[list[str]]:
    """The import circles: strongly connected components of more than one module (Tarjan)."""
    graph: dict[str, set[str]] = {}
    for edge in edges:
        graph.setdefault(edge.importer, set()).add(edge.imported)
        graph.setdefault(edge.imported, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                connect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return found


def check(
    root: Path,
    package: str,
    placement: Sequence[tuple[str, str]] = PLACEMENT,
    layers: Sequence[str] = LAYERS,
    pending: Mapping[tuple[str, str], str] = PENDING,
    public: frozenset[str] = PUBLIC,
) -> list[str]:
    """Every breach of the import rule in the package at `root`, as readable lines."""
    modules = module_names(root, package)
    problems: list[str] = []
    layer_of: dict[str, str] = {}
    for module in modules:
        layer = place(module, placement)
        if layer is None:
            problems.append(
                f"unplaced module {module}: no pattern of PLACEMENT matches it; add a row to "
                "PLACEMENT in tests/lifecycle/test_import_rule.py giving its layer "
                f"({' < '.join(layers)}, or devserver) and say where it is in "
                "docs/architecture.md"
            )
        else:
            layer_of[module] = layer
    rank = {layer: n for n, layer in enumerate(layers)}
    edges = [
        edge
        for module, path in modules.items()
        for edge in imports_of(module, path, package, modules)
    ]
    seen_pending = {(e.importer, e.imported) for e in edges} & set(pending)
    for key in sorted(set(pending) - seen_pending):
        problems.append(
            f"stale PENDING entry {key[0]} -> {key[1]} ({pending[key]}): that import is gone, "
            "remove the entry"
        )
    edges = [e for e in edges if (e.importer, e.imported) not in pending]
    for edge in edges:
        where = f"{edge.importer} (line {edge.line}) imports {edge.imported}"
        src, dst = layer_of.get(edge.importer), layer_of.get(edge.imported)
        if edge.kind == "function" and not edge.marked:
            problems.append(
                f"unmarked in-function import: {where}; import it at module level, or say why "
                "it must wait with a `# lazy: <reason>` comment (an import hidden in a "
                "function to break a circle is still a circle)"
            )
        if src is None or dst is None:
            continue
        if src == "devserver" or dst == "devserver":
            if src != dst and edge.imported not in public:
                problems.append(
                    f"devserver boundary: {where}; the devserver is a separate tool "
                    "(it uses no phactor runtime module, and none uses it)"
                )
            continue
        if rank[dst] > rank[src]:
            problems.append(f"upward import: {where}, but {src} is below {dst}")
    for component in cycles(edges):
        problems.append(f"import circle: {' <-> '.join(component)}")
    return problems


# --- the rule holds for phactor ---------------------------------------------------------------

PHACTOR_ROOT = Path(phactor.__file__).parent


def test_phactor_imports_only_downward_and_never_in_a_circle() -> None:
    problems = check(PHACTOR_ROOT, "phactor")
    assert not problems, "\n".join(problems)


def test_the_checker_sees_phactors_imports() -> None:
    """Guards against a checker that passes because it found nothing."""
    modules = module_names(PHACTOR_ROOT, "phactor")
    assert {"phactor", "phactor.api", "phactor.instance", "phactor.registry"} <= set(modules)
    edges = {
        (e.importer, e.imported, e.kind)
        for module, path in modules.items()
        for e in imports_of(module, path, "phactor", modules)
    }
    assert ("phactor.api", "phactor.instance", "module") in edges
    assert ("phactor.api", "phactor.registry", "module") in edges
    assert ("phactor", "phactor.flags.evaluations", "lazy_exports") in edges
    # nothing below api.py imports it (integrations sit above it)
    importers = {imp for imp, dst, _ in edges if dst == "phactor.api"}
    importers = {imp for imp in importers if not imp.startswith("phactor.integrations.")}
    assert importers - set(PENDING_IMPORTERS) <= {
        "phactor",
        "phactor.testing",
    }


PENDING_IMPORTERS = {importer for importer, imported in PENDING if imported == "phactor.api"}


def test_pending_breaches_name_who_removes_them() -> None:
    for (importer, imported), why in PENDING.items():
        assert importer.startswith("phactor.") and imported.startswith("phactor"), importer
        assert why.strip(), (importer, imported)


# --- the checker fails when it should ---------------------------------------------------------


def _package(root: Path, files: Mapping[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")
    return root


SYNTHETIC_PLACEMENT = (
    ("pkg", "api"),
    ("pkg.api", "api"),
    ("pkg.core", "core"),
    ("pkg.core.*", "core"),
    ("pkg.tool", "devserver"),
)


def test_checker_reports_a_back_import_a_circle_and_an_unplaced_module(tmp_path: Path) -> None:
    root = _package(
        tmp_path / "pkg",
        {
            "__init__.py": "from pkg.api import run\n",
            "api.py": "from pkg.core import helpers\n\ndef run():\n    return helpers.VALUE\n",
            "core/__init__.py": "",
            # the back-import: the core reaches up into the api
            "core/helpers.py": "from pkg import api\n\nVALUE = 1\n",
            # a circle inside one layer, closed by an import hidden in a function
            "core/a.py": "from pkg.core import b\n",
            "core/b.py": "def f():\n    from pkg.core import a  # lazy: start-up time\n",
            "stray.py": "",
        },
    )
    problems = check(root, "pkg", SYNTHETIC_PLACEMENT, ("core", "api"), pending={})
    text = "\n".join(problems)
    assert "upward import: pkg.core.helpers (line 1) imports pkg.api, but core is below api" in text
    assert "import circle: pkg.core.a <-> pkg.core.b" in text
    # pkg.core.helpers -> pkg.api -> pkg.core.helpers is a circle as well
    assert "import circle: pkg.api <-> pkg.core.helpers" in text
    assert "unplaced module pkg.stray" in text
    assert len(problems) == 4, text


def test_checker_reports_unmarked_lazy_imports_and_ignores_type_only_ones(tmp_path: Path) -> None:
    root = _package(
        tmp_path / "pkg",
        {
            "__init__.py": "",
            "api.py": (
                "def f():\n"
                "    from pkg.core import x\n"
                "\n"
                "def g():\n"
                "    # lazy: start-up time\n"
                "    from pkg.core import y\n"
            ),
            "core/__init__.py": "",
            "core/x.py": (
                "from typing import TYPE_CHECKING\n"
                "if TYPE_CHECKING:\n"
                "    from pkg.api import f\n"
                "else:\n"
                "    pass\n"
            ),
            "core/y.py": "",
        },
    )
    problems = check(root, "pkg", SYNTHETIC_PLACEMENT, ("core", "api"), pending={})
    assert len(problems) == 1, problems
    assert problems[0].startswith(
        "unmarked in-function import: pkg.api (line 2) imports pkg.core.x"
    )


def test_checker_follows_lazy_exports_and_guards_the_devserver(tmp_path: Path) -> None:
    root = _package(
        tmp_path / "pkg",
        {
            "__init__.py": (
                "from pkg._lazy import lazy_exports\n"
                "_EXPORTS = {'Thing': 'tool'}\n"
                "__getattr__ = lazy_exports(__name__, _EXPORTS, globals())\n"
            ),
            "_lazy.py": "",
            "api.py": "",
            "core/__init__.py": "",
            "tool.py": "import pkg.core\n",
        },
    )
    placement = (("pkg._lazy", "core"), *SYNTHETIC_PLACEMENT)
    problems = check(root, "pkg", placement, ("core", "api"), pending={})
    text = "\n".join(problems)
    assert "devserver boundary: pkg (line 3) imports pkg.tool" in text
    assert "devserver boundary: pkg.tool (line 1) imports pkg.core" in text
    assert len(problems) == 2, text


def test_checker_reports_a_pending_entry_that_is_no_longer_needed(tmp_path: Path) -> None:
    root = _package(tmp_path / "pkg", {"__init__.py": "", "api.py": ""})
    problems = check(
        root, "pkg", SYNTHETIC_PLACEMENT, ("core", "api"), pending={("pkg.api", "pkg.core"): "x"}
    )
    assert problems == [
        "stale PENDING entry pkg.api -> pkg.core (x): that import is gone, remove the entry"
    ]


@st.composite
def _graphs(draw: st.DrawFn) -> tuple[list[str], set[tuple[int, int]]]:
    size = draw(st.integers(2, 6))
    layers = draw(st.lists(st.sampled_from(["core", "api"]), min_size=size, max_size=size))
    pairs = [(i, j) for i in range(size) for j in range(size) if i != j]
    return layers, draw(st.sets(st.sampled_from(pairs)))


@given(_graphs())
def test_checker_reports_exactly_the_upward_imports_and_circles_of_any_graph(
    graph: tuple[list[str], set[tuple[int, int]]],
) -> None:
    layers, edges = graph
    with tempfile.TemporaryDirectory() as tmp:
        files = {"__init__.py": ""}
        for i in range(len(layers)):
            imports = [f"from pkg import m{j}" for j in sorted(j for a, j in edges if a == i)]
            files[f"m{i}.py"] = "".join(f"{line}\n" for line in imports)
        placement = (("pkg", "core"), *((f"pkg.m{i}", layer) for i, layer in enumerate(layers)))
        problems = check(_package(Path(tmp) / "pkg", files), "pkg", placement, ("core", "api"), {})

    upward = {p for p in problems if p.startswith("upward import")}
    assert upward == {
        f"upward import: pkg.m{i} (line {sorted(j for a, j in edges if a == i).index(j) + 1}) "
        f"imports pkg.m{j}, but core is below api"
        for i, j in edges
        if layers[i] == "core" and layers[j] == "api"
    }
    # Circles, independently: i and j are in one when each reaches the other.
    reach = set(edges)
    for k, i, j in itertools.product(range(len(layers)), repeat=3):
        if (i, k) in reach and (k, j) in reach:
            reach.add((i, j))
    expected = {
        " <-> ".join(
            sorted(f"pkg.m{j}" for j in range(len(layers)) if j == i or {(i, j), (j, i)} <= reach)
        )
        for i in range(len(layers))
        if (i, i) in reach
    }
    circles = {p.removeprefix("import circle: ") for p in problems if p.startswith("import circle")}
    assert circles == expected
    assert len(problems) == len(upward) + len(circles), problems


@pytest.mark.parametrize("module", ["phactor.flags.parsing", "phactor.flags.filters.semver"])
def test_new_flag_core_modules_are_placed_in_the_core(module: str) -> None:
    assert place(module, PLACEMENT) == "core"
    assert place("phactor.flags.evaluator", PLACEMENT) == "actors"
    assert place("phactor.errortracking.frames", PLACEMENT) == "core"
    assert place("phactor.errortracking.hooks", PLACEMENT) == "actors"
    assert place("phactor.errortracking.guards", PLACEMENT) == "actors"
    assert place("phactor.newthing", PLACEMENT) is None
