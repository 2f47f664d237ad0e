"""The import graph of ``src/taskroll`` points one way (DESIGN.md, rule 15).

Every module under ``src/taskroll`` is parsed with :mod:`ast` (not imported), and each
of its imports of another taskroll module is put in one of three kinds:

* ``top``: runs when the module is imported (module level, class bodies, ``try``
  blocks); a cycle among these is a circle and fails the suite;
* ``deferred``: inside a function, run when the function is called; these may close
  a cycle only through the edges listed in ``ALLOWED_DEFERRED_CYCLE_EDGES``;
* ``type_checking``: under ``if TYPE_CHECKING:``, seen only by type checkers.

``from package import name`` counts as an import of ``package.name`` when that is a
module, else of ``package``. Importing ``a.b`` is counted as an import of ``a.b`` only,
not of the package ``a`` that Python also runs (every module would otherwise sit in a
circle with its package's ``__init__``).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

SOURCE_ROOT = Path(__file__).resolve().parents[2] / "src"
PACKAGE = "taskroll"

TOP = "top"
DEFERRED = "deferred"
TYPE_CHECKING_KIND = "type_checking"

#: Function-level imports that close a circle, each a lazy re-export kept for a Qlib name's
#: place; every entry must still exist (remove it when its import goes).
#: ``taskroll.train.record.PortAnaRecord`` (Qlib's ``qlib.workflow.record_temp``) resolves
#: through ``record.__getattr__`` to ``port_record.py``, which imports ``record``.
ALLOWED_DEFERRED_CYCLE_EDGES: set[tuple[str, str]] = set()


@dataclass(frozen=True)
class ImportEdge:
    """One import of a taskroll module by another.

    Attributes:
        importer: Dotted name of the importing module.
        imported: Dotted name of the imported module.
        kind: ``top``, ``deferred`` or ``type_checking``.
        line: Line of the import statement.
    """

    importer: str
    imported: str
    kind: str
    line: int


def find_modules(source_root: Path = SOURCE_ROOT) -> dict[str, tuple[Path, bool]]:
    """Return ``{dotted name: (path, is a package)}`` for every module of the package."""
    modules: dict[str, tuple[Path, bool]] = {}
    for path in sorted((source_root / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(source_root).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts = parts[:-1]
        modules[".".join(parts)] = (path, is_package)
    return modules


def _is_type_checking_test(test: ast.expr) -> bool:
    if isinstance(test, ast.Name):
        return test.id == "TYPE_CHECKING"
    return isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"


def _walk_imports(node: ast.AST, kind: str) -> Iterator[tuple[ast.Import | ast.ImportFrom, str]]:
    """Yield every import below ``node`` with its kind (the innermost reason wins)."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.Import | ast.ImportFrom):
            yield child, kind
        elif isinstance(child, ast.If) and _is_type_checking_test(child.test):
            for statement in child.body:
                yield from _walk_imports(ast.Module(body=[statement], type_ignores=[]),
                                         TYPE_CHECKING_KIND)
            for statement in child.orelse:
                yield from _walk_imports(ast.Module(body=[statement], type_ignores=[]), kind)
        elif isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            yield from _walk_imports(child, kind if kind == TYPE_CHECKING_KIND else DEFERRED)
        else:
            yield from _walk_imports(child, kind)


def _resolve(statement: ast.Import | ast.ImportFrom, importer: str, is_package: bool,
             modules: dict[str, tuple[Path, bool]]) -> list[str]:
    """Return the taskroll modules an import statement loads."""
    if isinstance(statement, ast.Import):
        return [alias.name for alias in statement.names if alias.name in modules]
    base = statement.module or ""
    if statement.level:
        anchor = importer.split(".") if is_package else importer.split(".")[:-1]
        anchor = anchor[: len(anchor) - (statement.level - 1)]
        base = ".".join([*anchor, base] if base else anchor)
    targets = []
    for alias in statement.names:
        submodule = f"{base}.{alias.name}"
        if submodule in modules:
            targets.append(submodule)
        elif base in modules:
            targets.append(base)
    return sorted(set(targets))


def import_edges(source_root: Path = SOURCE_ROOT) -> list[ImportEdge]:
    """Return every import of a taskroll module by a taskroll module, self-imports excluded."""
    modules = find_modules(source_root)
    edges: list[ImportEdge] = []
    for importer, (path, is_package) in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for statement, kind in _walk_imports(tree, TOP):
            for imported in _resolve(statement, importer, is_package, modules):
                if imported != importer:
                    edges.append(ImportEdge(importer, imported, kind, statement.lineno))
    return edges


def find_cycles(edges: list[ImportEdge]) -> list[list[str]]:
    """Return the strongly connected components with more than one module (Tarjan).

    Each component is sorted; the list is sorted by its first member.
    """
    graph: dict[str, set[str]] = {}
    for edge in edges:
        graph.setdefault(edge.importer, set()).add(edge.imported)
        graph.setdefault(edge.imported, set())
    index: dict[str, int] = {}
    lowest: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = lowest[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for neighbour in sorted(graph[node]):
            if neighbour not in index:
                visit(neighbour)
                lowest[node] = min(lowest[node], lowest[neighbour])
            elif neighbour in on_stack:
                lowest[node] = min(lowest[node], index[neighbour])
        if lowest[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(components)


def _describe(component: list[str], edges: list[ImportEdge]) -> str:
    members = set(component)
    return "\n".join(f"  {edge.importer}:{edge.line} -> {edge.imported} ({edge.kind})"
                     for edge in edges if edge.importer in members and edge.imported in members)


@pytest.fixture(scope="module")
def edges() -> list[ImportEdge]:
    return import_edges()


def test_the_parser_sees_all_three_kinds(edges: list[ImportEdge]) -> None:
    # A broken classifier would pass every cycle check vacuously.
    found = {(edge.importer, edge.imported, edge.kind) for edge in edges}
    assert ("taskroll.train.mlflow_experiment", "taskroll.train.recorder", TOP) in found
    assert ("taskroll.train.facade", "taskroll.train.experiment_manager", TOP) in found
    assert {edge.kind for edge in edges} == {TOP, DEFERRED, TYPE_CHECKING_KIND}
    assert len(find_modules()) > 50


def test_cycle_finder_reports_a_circle_and_ignores_a_chain() -> None:
    def edge(importer: str, imported: str) -> ImportEdge:
        return ImportEdge(importer, imported, TOP, 1)

    chain = [edge("a", "b"), edge("b", "c")]
    assert find_cycles(chain) == []
    assert find_cycles([*chain, edge("c", "a"), edge("c", "d")]) == [["a", "b", "c"]]


def test_relative_and_package_imports_resolve(tmp_path: Path) -> None:
    package = tmp_path / PACKAGE
    (package / "inner").mkdir(parents=True)
    (package / "__init__.py").write_text("from taskroll import inner\n")
    (package / "inner" / "__init__.py").write_text("from .leaf import thing\n")
    (package / "inner" / "leaf.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "from .. import other\n"
        "if TYPE_CHECKING:\n    from taskroll.inner import sibling\n"
        "def later():\n    import taskroll.other\n")
    (package / "inner" / "sibling.py").write_text("")
    (package / "other.py").write_text("")
    found = {(edge.importer, edge.imported, edge.kind) for edge in import_edges(tmp_path)}
    assert found == {
        ("taskroll", "taskroll.inner", TOP),
        ("taskroll.inner", "taskroll.inner.leaf", TOP),
        ("taskroll.inner.leaf", "taskroll.other", TOP),
        ("taskroll.inner.leaf", "taskroll.inner.sibling", TYPE_CHECKING_KIND),
        ("taskroll.inner.leaf", "taskroll.other", DEFERRED),
    }


def test_no_cycle_among_top_level_imports(edges: list[ImportEdge]) -> None:
    top = [edge for edge in edges if edge.kind == TOP]
    cycles = find_cycles(top)
    assert cycles == [], "import circles:\n" + "\n\n".join(
        _describe(component, top) for component in cycles)


def test_deferred_imports_close_no_cycle_beyond_the_listed_exceptions(
        edges: list[ImportEdge]) -> None:
    runtime = [edge for edge in edges if edge.kind != TYPE_CHECKING_KIND
               and (edge.importer, edge.imported) not in ALLOWED_DEFERRED_CYCLE_EDGES]
    cycles = find_cycles(runtime)
    assert cycles == [], "import circles through function-level imports:\n" + "\n\n".join(
        _describe(component, runtime) for component in cycles)
    # Each exception is still there (else remove it) and is really function-level.
    used = {(edge.importer, edge.imported): edge.kind for edge in edges
            if (edge.importer, edge.imported) in ALLOWED_DEFERRED_CYCLE_EDGES}
    assert set(used) == ALLOWED_DEFERRED_CYCLE_EDGES, (
        f"remove from ALLOWED_DEFERRED_CYCLE_EDGES: {ALLOWED_DEFERRED_CYCLE_EDGES - set(used)}")
    top_level = {pair for pair in ALLOWED_DEFERRED_CYCLE_EDGES
                 if any(edge.kind == TOP and (edge.importer, edge.imported) == pair
                        for edge in edges)}
    assert top_level == set()


def test_recorder_does_not_import_experiment(edges: list[ImportEdge]) -> None:
    from_recorder = {(edge.imported, edge.kind) for edge in edges
                     if edge.importer == "taskroll.train.recorder"}
    assert not any(imported == "taskroll.train.experiment" for imported, _ in from_recorder), (
        from_recorder)
    # Nor, at any level (function, TYPE_CHECKING), a module that imports it.
    above = {"taskroll.train.mlflow_experiment", "taskroll.train.experiment_manager",
             "taskroll.train.facade"}
    assert not any(imported in above for imported, _ in from_recorder), from_recorder
    # At import time the recorder module needs nothing above it in train/.
    assert {imported for imported, kind in from_recorder if kind == TOP} <= {
        "taskroll.errors", "taskroll.store.references", "taskroll.store.urls",
        "taskroll.train.process", "taskroll.train.recorder_qlib", "taskroll.train.tracking"}


def test_experiment_modules_import_one_way(edges: list[ImportEdge]) -> None:
    order = ["taskroll.train.tracking", "taskroll.train.recorder",
             "taskroll.train.mlflow_experiment", "taskroll.train.experiment_manager",
             "taskroll.train.facade", "taskroll.train.experiment"]
    backwards = [edge for edge in edges
                 if edge.kind == TOP and edge.importer in order and edge.imported in order
                 and order.index(edge.imported) >= order.index(edge.importer)]
    assert backwards == []


def test_importing_the_recorder_loads_no_experiment_module() -> None:
    # The same property at run time, in a fresh interpreter.
    script = ("import sys, taskroll.train.recorder\n"
              "print(' '.join(sorted(name for name in sys.modules"
              " if name.startswith('taskroll.train.'))))\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            check=True, cwd=SOURCE_ROOT.parent, timeout=120)
    loaded = set(result.stdout.split())
    assert "taskroll.train.recorder" in loaded
    assert loaded.isdisjoint({"taskroll.train.experiment", "taskroll.train.mlflow_experiment",
                              "taskroll.train.experiment_manager", "taskroll.train.facade"})


def test_experiment_names_come_from_the_module_above_the_recorder() -> None:
    from taskroll.train import experiment, experiment_manager, facade, mlflow_experiment
    from taskroll.train import recorder as recorder_module

    assert experiment.R is facade.R
    assert experiment.RecorderFacade is facade.RecorderFacade
    assert experiment.ExperimentManager is experiment_manager.ExperimentManager
    assert experiment.Experiment is mlflow_experiment.Experiment
    assert experiment.DEFAULT_EXPERIMENT_NAME == "Experiment"
    # The recorder module no longer hands out the names defined above it.
    for name in ("R", "RecorderFacade", "ExperimentManager", "Experiment"):
        assert not hasattr(recorder_module, name), name
