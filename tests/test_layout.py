"""The layout rules the code keeps: small functions, one module for errors, no asserts on input."""

from __future__ import annotations

import ast
from pathlib import Path

import brickzoo

PACKAGE = Path(brickzoo.__file__).parent
MAX_FUNCTION_LINES = 80


def _functions(tree: ast.AST) -> list[ast.FunctionDef | ast.AsyncFunctionDef]:
    return [node for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))]


def _code_lines(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """Lines from ``def`` to the end of the body, not counting the docstring."""
    length = (node.end_lineno or node.lineno) - node.lineno + 1
    first = node.body[0]
    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
        length -= (first.end_lineno or first.lineno) - first.lineno + 1
    return length


def test_no_function_in_the_package_is_longer_than_80_lines() -> None:
    too_long = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in _functions(ast.parse(path.read_text(encoding="utf-8"))):
            length = _code_lines(node)
            if length > MAX_FUNCTION_LINES:
                too_long.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {node.name} ({length} lines)")
    assert not too_long, "functions longer than 80 lines (docstrings not counted):\n" + "\n".join(too_long)


def test_no_assert_statements_in_the_package() -> None:
    found = [
        f"{path.relative_to(PACKAGE.parent)}:{node.lineno}"
        for path in sorted(PACKAGE.rglob("*.py"))
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.Assert)
    ]
    assert not found, f"assert statements (user input is checked with brickzoo.errors instead): {found}"


def test_exceptions_are_raised_from_brickzoo_errors_or_builtins() -> None:
    """Every ``class ...Error`` of the package is defined in brickzoo/errors.py."""
    elsewhere = [
        f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {node.name}"
        for path in sorted(PACKAGE.rglob("*.py"))
        if path.name != "errors.py"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.ClassDef) and node.name.endswith(("Error", "Exception"))
    ]
    assert not elsewhere, f"exception classes outside brickzoo/errors.py: {elsewhere}"
