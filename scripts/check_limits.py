"""Check the soft size limits of STYLE.md: modules ≤ 600 lines, classes ≤ 25 methods, ``__init__`` ≤ 10 parameters."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

MAX_MODULE_LINES = 600
MAX_CLASS_METHODS = 25
MAX_INIT_PARAMS = 10
#: Classes whose size is fixed by a protocol rather than by design choices.
EXEMPT_CLASSES = {
    "Middleware",  # one method per hook of the (Dramatiq-compatible) hook protocol
}


def check(path: Path) -> list[str]:
    problems: list[str] = []
    source = path.read_text(encoding="utf-8")
    lines = source.count("\n") + 1
    if lines > MAX_MODULE_LINES:
        problems.append(f"{path}: {lines} lines (limit {MAX_MODULE_LINES})")
    for node in ast.walk(ast.parse(source, str(path))):
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
                count = len(args.posonlyargs) + len(args.args) + len(args.kwonlyargs) - 1  # minus self
                if count > MAX_INIT_PARAMS:
                    problems.append(f"{path}:{method.lineno}: {node.name}.__init__ has {count} parameters")
    return problems


def main() -> int:
    problems = [p for path in sorted(Path("greenroom").rglob("*.py")) for p in check(path)]
    for problem in problems:
        print(problem)
    print(f"size limits: {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
