"""Fail if any two modules of the project import each other, directly or through others (run by `make lint`).

Imports under ``if TYPE_CHECKING:`` do not count: they never run.
"""

import sys

import grimp

PACKAGES = ["orchestrator", "optimizers", "dispatchers", "stores", "recipes"]


def _related(a: str, b: str) -> bool:
    """The same module, or a package and a module inside it (``orchestrator.core`` from ``.core.events``)."""
    return a == b or a.startswith(b + ".") or b.startswith(a + ".")


def main() -> int:
    graph = grimp.build_graph(*PACKAGES, exclude_type_checking_imports=True)
    ours = sorted(m for m in graph.modules if m.split(".")[0] in PACKAGES)
    cycles = set()
    for module in ours:
        for imported in graph.find_modules_directly_imported_by(module):
            if imported.split(".")[0] not in PACKAGES or _related(module, imported):
                continue
            back = graph.find_shortest_chain(importer=imported, imported=module, as_packages=False)
            if back:
                cycles.add(" -> ".join((module, *back)))
    for cycle in sorted(cycles):
        print("import cycle:", cycle)
    print(f"{len(ours)} modules, {len(cycles)} import cycles")
    return 1 if cycles else 0


if __name__ == "__main__":
    sys.exit(main())
