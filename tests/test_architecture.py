"""The shape of the code (docs/architecture.md), checked by parsing every module's imports.

* No import cycles among the project's modules.
* No function-local imports of project modules, except in the entry points (the command line and
  the Airflow glue), where lazy imports keep start-up and the scheduler's parse cheap.
* Steps never import other steps; a step module spells no path under the data root.
* No module under pipelines/, features/ or models/ over 400 lines, no function over 80 lines.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from tests.conftest import REPO

PACKAGES = ("pipelines", "features", "models")
ENTRY_POINTS = ("pipelines/cli", "pipelines/airflow_tasks.py", "dags/")
MAX_MODULE_LINES, MAX_FUNCTION_LINES = 400, 80


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for pkg in (*PACKAGES, "dags") for p in sorted((REPO / pkg).rglob("*.py"))}


def imported(node: ast.AST, module: str) -> list[str]:
    """Project modules an import statement loads (``from pipelines.infra import storage`` loads
    ``pipelines.infra.storage`` when that is a module, else the package)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.split(".")[0] in PACKAGES]
    if not isinstance(node, ast.ImportFrom) or node.level or (node.module or "").split(".")[0] not in PACKAGES:
        return []
    out = []
    for a in node.names:
        sub = f"{node.module}.{a.name}"
        out.append(sub if sub in MODULES else node.module)
    return out


def import_graph() -> tuple[dict[str, set[str]], dict[str, list[tuple[int, str]]]]:
    """(module -> project modules imported at module level, module -> [(line, module)] imported
    inside functions or classes)."""
    top: dict[str, set[str]] = {}
    local: dict[str, list[tuple[int, str]]] = {}
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text())
        top[name] = {m for stmt in tree.body for m in imported(stmt, name)}
        # Imports under `if TYPE_CHECKING:` or try/except at module level still count as top level.
        for stmt in tree.body:
            if isinstance(stmt, (ast.If, ast.Try)):
                top[name] |= {m for n in ast.walk(stmt) for m in imported(n, name)}
        nested = [n for stmt in tree.body if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
                  for n in ast.walk(stmt)]
        local[name] = [(n.lineno, m) for n in nested for m in imported(n, name)]
    return top, local


def test_no_import_cycles():
    top, _ = import_graph()
    # A package's __init__ is imported before its modules: an edge to the package is an edge to it.
    graph = {m: {d for d in deps if d in MODULES and d != m} for m, deps in top.items()}
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for d in sorted(graph[m]):
            if state.get(d) == 1:
                cycles.append(stack[stack.index(d):] + [d])
            elif d not in state:
                visit(d)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    assert cycles == [], "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_no_function_local_imports_of_project_modules_outside_the_entry_points():
    _, local = import_graph()
    offenders = [f"{MODULES[m].relative_to(REPO)}:{line} imports {dep}" for m, found in local.items()
                 for line, dep in found
                 if not str(MODULES[m].relative_to(REPO)).startswith(ENTRY_POINTS)]
    assert offenders == []


def test_steps_never_import_steps_and_spell_no_paths():
    top, _ = import_graph()
    steps = [m for m in MODULES if m.startswith("pipelines.steps.")]
    assert len(steps) >= 9
    crossing = [f"{m} imports {d}" for m in steps for d in top[m] if d.startswith("pipelines.steps")]
    assert crossing == []
    # Paths and file names under the data root belong to pipelines/artifacts.py.
    spelled = [f"{MODULES[m].relative_to(REPO)}: {lit!r}" for m in steps
               for node in ast.walk(ast.parse(MODULES[m].read_text()))
               if isinstance(node, ast.Constant) and isinstance(node.value, str)
               for lit in [node.value] if re.search(r"\.(parquet|json|npz|duckdb|html)$|^ds=|/ds=", lit)]
    assert spelled == []


def test_no_partition_path_is_built_outside_the_artifacts_module():
    pattern = re.compile(r'/\s*f"ds=\{')
    found = [f"{p.relative_to(REPO)}:{i}" for m, p in MODULES.items() if m != "pipelines.artifacts"
             for i, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    assert found == []


@pytest.mark.parametrize("package", PACKAGES)
def test_module_and_function_sizes(package):
    too_long = []
    for m, p in MODULES.items():
        if not m.startswith(package):
            continue
        text = p.read_text()
        if len(text.splitlines()) > MAX_MODULE_LINES:
            too_long.append(f"{p.relative_to(REPO)}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    too_long.append(f"{p.relative_to(REPO)}:{node.lineno} {node.name}: {n} lines")
    assert too_long == []


def test_the_checks_see_what_they_claim():
    """The parser above finds a known top-level edge, a known lazy import in an entry point, and
    a function's length, so an empty offender list means something."""
    top, local = import_graph()
    assert "pipelines.config" in top["pipelines.artifacts"]
    assert "pipelines.infra.storage" in top["pipelines.artifacts"]
    assert any(dep.startswith("pipelines.") for _, dep in local["pipelines.airflow_tasks"])
    tree = ast.parse("def f():\n    import pipelines.run\n    return 1\n")
    fn = tree.body[0]
    assert fn.end_lineno - fn.lineno + 1 == 3 and imported(fn.body[0], "x") == ["pipelines.run"]
