"""Fail when any greenroom module imports itself back, however indirectly.

import-linter's ``acyclic_siblings`` contract (pyproject.toml) finds cycles between the siblings of
each package, but not a cycle between a package's ``__init__`` and one of its own modules, such as
``brokers/rabbitmq/__init__.py`` importing ``_consumer.py`` which imports the package back. This
script looks at the module graph itself and reports every strongly connected component of more
than one module.

The graph is grimp's, the one import-linter checks, and it counts every import statement: those
under ``if TYPE_CHECKING:`` and those inside functions as well as module-level ones. Imports by
string (``importlib.import_module``) are not in it; greenroom keeps those to tables that point
down (the broker URL schemes, the optional backends).
"""

from __future__ import annotations

import sys
from pathlib import Path

import grimp

PACKAGE = "greenroom"
#: The checkout this script belongs to: its package is checked, whichever one is installed.
ROOT = Path(__file__).resolve().parent.parent


def cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """The cycles of the graph, as its strongly connected components of two modules or more.

    A module is in a cycle with exactly the modules that it imports and that import it, directly
    or not.
    """
    components: set[tuple[str, ...]] = set()
    for module in graph.modules:
        # "Upstream" modules are those ``module`` imports; "downstream" ones import it.
        others = graph.find_upstream_modules(module) & graph.find_downstream_modules(module)
        if others:
            components.add(tuple(sorted({module, *others})))
    return [list(component) for component in sorted(components)]


def describe(graph: grimp.ImportGraph, component: list[str]) -> list[str]:
    """The imports inside one cycle, with their line numbers."""
    members = set(component)
    lines = []
    for importer in component:
        for imported in sorted(graph.find_modules_directly_imported_by(importer) & members):
            details = graph.get_import_details(importer=importer, imported=imported)
            where = ", ".join(str(detail["line_number"]) for detail in details)
            lines.append(f"  {importer} -> {imported} (line {where})")
    return lines


def main() -> int:
    sys.path.insert(0, str(ROOT))
    graph = grimp.build_graph(PACKAGE, cache_dir=None)
    components = cycles(graph)
    for component in components:
        print(f"Import cycle among {len(component)} modules:")
        print("\n".join(describe(graph, component)))
    if components:
        return 1
    print(f"No import cycles among the {len(graph.modules)} modules of {PACKAGE}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
