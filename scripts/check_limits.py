"""Check the soft size limits of STYLE.md: modules ≤ 400 code lines, classes ≤ 25 methods, ``__init__`` ≤ 10 parameters.

Code lines are what a reader has to read as code: blank lines, comment-only lines and docstrings do
not count, so that splitting a module is the way to stay under the limit, never dropping a comment
or trimming a docstring.
"""

from __future__ import annotations

import ast
import io
import sys
import tokenize
from pathlib import Path

MAX_MODULE_CODE_LINES = 400
MAX_CLASS_METHODS = 25
MAX_INIT_PARAMS = 10
#: Classes whose size is fixed by a protocol rather than by design choices.
EXEMPT_CLASSES = {
    "Middleware",  # one method per hook of the (Dramatiq-compatible) hook protocol
}


def docstring_lines(tree: ast.Module) -> set[int]:
    """The line numbers taken by the docstrings of the module, its classes and its functions."""
    lines: set[int] = set()
    for node in ast.walk(tree):
        if not isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        first = node.body[0] if node.body else None
        if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
            lines.update(range(first.lineno, (first.end_lineno or first.lineno) + 1))
    return lines


def code_lines(source: str, tree: ast.Module) -> int:
    """How many lines hold code: tokens other than comments, outside docstrings."""
    skip = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER}
    lines: set[int] = set()
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type not in skip:
            lines.update(range(token.start[0], token.end[0] + 1))
    return len(lines - docstring_lines(tree))


def check(path: Path) -> list[str]:
    problems: list[str] = []
    source = path.read_text(encoding="utf-8")
    tree = ast.parse(source, str(path))
    count = code_lines(source, tree)
    if count > MAX_MODULE_CODE_LINES:
        problems.append(f"{path}: {count} code lines (limit {MAX_MODULE_CODE_LINES})")
    for node in ast.walk(tree):
        if not isinstance(node, ast.ClassDef):
            continue
        methods = [n for n in node.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
        # Overloads and typing-only stubs are one method each.
        names = {m.name for m in methods}
        if len(names) > MAX_CLASS_METHODS and node.name not in EXEMPT_CLASSES:
            problems.append(f"{path}:{node.lineno}: class {node.name} has {len(names)} methods")
        for method in methods:
            if method.name == "__init__":
                args = method.args
                params = len(args.posonlyargs) + len(args.args) + len(args.kwonlyargs) - 1  # minus self
                if params > MAX_INIT_PARAMS:
                    problems.append(f"{path}:{method.lineno}: {node.name}.__init__ has {params} parameters")
    return problems


def main() -> int:
    paths = sorted(Path("greenroom").rglob("*.py"))
    if "--sizes" in sys.argv:
        for path in paths:
            source = path.read_text(encoding="utf-8")
            print(f"{code_lines(source, ast.parse(source)):5d}  {path}")
        return 0
    problems = [p for path in paths for p in check(path)]
    for problem in problems:
        print(problem)
    print(f"size limits: {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
