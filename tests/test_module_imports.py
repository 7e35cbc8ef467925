"""Imports flow one way: no two of dessert_mcp's modules import each other, not even through an import made inside a
function (how the optional wings load on first use). Imports for type checking only are left out; so is a package's
importing of its own submodules (and theirs of it), which is how a package names its API."""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import dessert_mcp

PACKAGE = Path(dessert_mcp.__file__).parent


def _modules() -> dict[str, Path]:
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def _imported(path: Path, known: set[str]) -> set[str]:
    """The modules of `known` that `path` imports at run time, wherever the import statement is."""
    found: set[str] = set()

    class Visitor(ast.NodeVisitor):
        def visit_If(self, node: ast.If) -> None:
            if "TYPE_CHECKING" in ast.unparse(node.test):
                for statement in node.orelse:
                    self.visit(statement)
            else:
                self.generic_visit(node)

        def visit_Import(self, node: ast.Import) -> None:
            found.update(alias.name for alias in node.names)

        def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
            if node.module is not None and node.level == 0:
                found.add(node.module)
                found.update(f"{node.module}.{alias.name}" for alias in node.names)  # a submodule by name

    Visitor().visit(ast.parse(path.read_text(), str(path)))
    return found & known


def _related(a: str, b: str) -> bool:
    return a == b or a.startswith(f"{b}.") or b.startswith(f"{a}.")


def test_no_two_modules_import_each_other_even_from_inside_a_function() -> None:
    modules = _modules()
    graph = {
        name: {other for other in _imported(path, set(modules)) if not _related(name, other)}
        for name, path in modules.items()
    }
    assert graph["dessert_mcp.tools"] >= {"dessert_mcp.service", "dessert_mcp.models"}  # the scan sees imports
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as exc:
        raise AssertionError(f"modules import each other: {' -> '.join(exc.args[1])}") from None
