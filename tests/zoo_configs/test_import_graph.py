"""The modules of brickzoo.zoo import each other without a circle, lazy (in-function) imports included.

The graph is read from the source with ``ast``: every ``import`` and ``from ... import`` anywhere in a
module (at the top, in functions, in ``if`` blocks), except under ``if TYPE_CHECKING:``. A name
imported from a package that is itself a module of that package (``from brickzoo.zoo import
_config``) is an edge to that module.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE_ROOT = Path(__file__).resolve().parents[2] / "brickzoo"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE_ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def all_modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE_ROOT.rglob("*.py"))}


def _type_checking_only(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imported_modules(name: str, path: Path, known: set[str]) -> set[str]:
    """The brickzoo modules that module ``name`` imports anywhere in its source."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    skipped = {
        id(child)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and _type_checking_only(node)
        for stmt in node.body
        for child in ast.walk(stmt)
    }
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name in known)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                source = ".".join([*base, node.module] if node.module else base)
            else:
                source = node.module or ""
            for alias in node.names:
                submodule = f"{source}.{alias.name}"
                found.add(submodule if submodule in known else source)
    return {module for module in found if module in known and module != name}


def import_graph() -> dict[str, set[str]]:
    modules = all_modules()
    known = set(modules)
    return {name: imported_modules(name, path, known) for name, path in modules.items()}


def cycles(graph: dict[str, set[str]], nodes: set[str]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), restricted to ``nodes``."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node] & nodes):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
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

    for node in sorted(nodes):
        if node not in index:
            visit(node)
    return found


def test_the_graph_sees_lazy_and_relative_imports(tmp_path: Path) -> None:
    """The reader itself: a function-level import and a relative import both count, TYPE_CHECKING ones do not."""
    source = tmp_path / "mod.py"
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "from . import b\n"
        "if TYPE_CHECKING:\n"
        "    from pkg.c import C\n"
        "def f():\n"
        "    from pkg.d import x\n"
        "    import pkg.e\n"
    )
    known = {"pkg.a", "pkg.b", "pkg.c", "pkg.d", "pkg.e"}
    assert imported_modules("pkg.a", source, known) == {"pkg.b", "pkg.d", "pkg.e"}
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph, set(graph)) == [["a", "b", "c"]]


def test_zoo_config_and_datasets_use_the_validation_module_not_each_other() -> None:
    graph = import_graph()
    assert "brickzoo.zoo._validate" in graph["brickzoo.zoo._config"]
    assert "brickzoo.zoo._validate" in graph["brickzoo.zoo._datasets"]
    assert "brickzoo.zoo._config" not in graph["brickzoo.zoo._datasets"]
    assert not graph["brickzoo.zoo._validate"] - {"brickzoo.errors"}  # the toolkit imports nothing of the zoo


@pytest.mark.parametrize("package", ["brickzoo.zoo", "brickzoo.training"])
def test_no_import_circle_inside_the_package(package: str) -> None:
    graph = import_graph()
    members = {name for name in graph if name == package or name.startswith(f"{package}.")}
    assert len(members) >= 4
    assert cycles(graph, members) == []
