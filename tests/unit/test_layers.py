"""The import structure: no cycles, and dockkit's layers never reach up.

Every module's imports are read with :mod:`ast`, those inside functions included (a
deferred import is still a dependency, and hiding one in a function to dodge a cycle is
what these tests catch). ``import a.b.c`` counts as importing ``a.b.c`` only, not ``a``
and ``a.b``: Python runs the parents' ``__init__`` first, but that is how packages load,
not a dependency of the importing code; counting it would make every module depend on
:mod:`dockkit`, whose lazy names (``dockkit.Executor``, ``dockkit.Cluster``) reach every
layer, and so report cycles that are not there. What a package's ``__init__`` loads at
import time does run before each of its modules, so it is held to the lowest layer among
them (:func:`test_package_inits_load_nothing_above_their_modules_at_import_time`).
``from a import b`` is an import of the module ``a.b`` where there is one, else of ``a``.

The layers are those of the README's module map (Development), lowest first; a module
imports only its own layer and those below it.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[2]

#: Lowest first. A name stands for the module and everything under it.
LAYERS = [
    ("shared", {"dockkit.errors", "dockkit.config", "dockkit.version"}),
    ("runtime", {"dockkit.runtime"}),
    ("launch", {"dockkit.launch"}),
    ("SDK", {"dockkit.executor", "dockkit.futures", "dockkit.shared", "dockkit.runner", "dockkit.plan",
             "dockkit.log", "dockkit.progress"}),
    ("cluster", {"dockkit.cluster"}),
    ("CLI", {"dockkit.cli", "dockkit.__main__"}),
]
#: dockkit/__init__.py, the package's public face: it names the SDK and the Cluster
#: (lazily), so it sits with the CLI at the top, and nothing inside the package imports it.
PUBLIC_FACE = "dockkit"


class Import(NamedTuple):
    target: str
    where: str  # path:line
    eager: bool  # at module level: runs when the module is imported


class Module(NamedTuple):
    name: str
    path: Path
    shown: str  # its path from the checkout, for messages
    is_package: bool


def modules(package: str, root: Path = ROOT) -> dict[str, Module]:
    found = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        name = ".".join(parts[:-1] if is_package else parts)
        found[name] = Module(name, path, str(path.relative_to(root)), is_package)
    return found


def _walk(node, eager: bool = True):
    """Every node under ``node`` with whether it runs at import time."""
    for child in ast.iter_child_nodes(node):
        yield child, eager
        inside_function = isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        yield from _walk(child, eager and not inside_function)


def imports(module: Module, known: dict[str, Module]) -> list[Import]:
    """The imports of ``module`` that name a module of ``known``, anywhere in it."""
    tree = ast.parse(module.path.read_text(), filename=str(module.path))
    found = []
    for node, eager in _walk(tree):
        where = f"{module.shown}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package of this module
                package = module.name.split(".")
                package = package if module.is_package else package[:-1]
                package = package[:len(package) - node.level + 1]
                base = ".".join(package + ([node.module] if node.module else []))
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                       for alias in node.names]
        else:
            continue
        found += [Import(t, where, eager) for t in targets if t in known and t != module.name]
    return found


def graph(package: str, root: Path = ROOT) -> dict[str, dict[str, Import]]:
    """Module → the modules it imports, each with where (its first import)."""
    known = modules(package, root)
    edges: dict[str, dict[str, Import]] = {}
    for name, module in known.items():
        edges[name] = {}
        for imp in imports(module, known):
            edges[name].setdefault(imp.target, imp)
    return edges


class Cycle(NamedTuple):
    loop: list[str]  # a → … → a
    caught: set[str]  # every module of its strongly connected component


def cycles(edges: dict[str, dict[str, Import]]) -> list[Cycle]:
    """One cycle per strongly connected component that has one (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    components: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in edges[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(component)

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return [Cycle(_loop_through(min(c), c, edges), c) for c in components]


def describe(cycle: Cycle, edges) -> str:
    """The cycle, each import with where it is, and the other modules caught in it."""
    steps = [f"{a} → {b} ({edges[a][b].where})" for a, b in zip(cycle.loop, cycle.loop[1:])]
    others = sorted(cycle.caught - set(cycle.loop))
    also = f"\n  (also in a cycle with these: {', '.join(others)})" if others else ""
    return "import cycle:\n    " + "\n    ".join(steps) + also


def _loop_through(start: str, component: set[str], edges) -> list[str]:
    """The shortest path start → … → start inside ``component``."""
    came_from: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for nxt in sorted(edges[node]):
                if nxt == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(came_from[path[-1]])
                    return [start, *reversed(path[:-1]), start]
                if nxt in component and nxt not in came_from:
                    came_from[nxt] = node
                    following.append(nxt)
        frontier = following
    raise AssertionError(f"no cycle through {start}")


def layer(module: str) -> int | None:
    if module == PUBLIC_FACE:
        return len(LAYERS) - 1
    for rank, (_, names) in enumerate(LAYERS):
        if any(module == name or module.startswith(name + ".") for name in names):
            return rank
    return None


def _named(module: str) -> str:
    if module == PUBLIC_FACE:
        return f"{module} (the public face, over every layer)"
    return f"{module} ({LAYERS[layer(module)][0]})"


# --- the tests ----------------------------------------------------------------------------------
def test_the_dockkit_modules_import_one_another_without_a_cycle():
    edges = graph("dockkit")
    found = cycles(edges)
    assert not found, "\n".join(describe(cycle, edges) for cycle in found)


def test_the_benchmark_modules_import_one_another_without_a_cycle():
    edges = graph("benchmarks")
    found = cycles(edges)
    assert not found, "\n".join(describe(cycle, edges) for cycle in found)


def test_every_dockkit_module_has_a_layer():
    unplaced = sorted(name for name in modules("dockkit") if layer(name) is None)
    assert not unplaced, (f"modules in no layer: {', '.join(unplaced)}; add them to LAYERS here "
                          "and to the README's module map")


def test_no_dockkit_module_imports_a_layer_above_its_own():
    edges = graph("dockkit")
    wrong = [f"{_named(source)} → {_named(target)} ({imp.where})"
             for source, targets in sorted(edges.items()) for target, imp in targets.items()
             if None not in (layer(source), layer(target)) and layer(target) > layer(source)]
    assert not wrong, "imports of a higher layer:\n    " + "\n    ".join(wrong)


def test_package_inits_load_nothing_above_their_modules_at_import_time():
    """An ``__init__`` runs before any module of its package: what it imports at once
    (outside functions) loads with each of them, so it must not be above any of them."""
    known = modules("dockkit")
    wrong = []
    for package in (m for m in known.values() if m.is_package):
        inside = [name for name in known if name.startswith(package.name + ".")]
        floor = min(layer(name) for name in inside)
        wrong += [f"{package.name} → {_named(imp.target)} ({imp.where}), run before "
                  f"{LAYERS[floor][0]} modules"
                  for imp in imports(package, known) if imp.eager and layer(imp.target) > floor]
    assert not wrong, "package inits load a higher layer at import time:\n    " + "\n    ".join(wrong)


def test_the_checks_see_deferred_imports_and_name_the_cycle(tmp_path):
    """The checks themselves: an import inside a function counts, and the message names it."""
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from pkg import b\n")
    (package / "b.py").write_text("def later():\n    from pkg.a import thing\n")
    (package / "c.py").write_text("import pkg.b\nfrom . import a\n")
    edges = graph("pkg", tmp_path)
    assert edges["pkg.c"] == {"pkg.b": Import("pkg.b", "pkg/c.py:1", True),
                              "pkg.a": Import("pkg.a", "pkg/c.py:2", True)}
    assert edges["pkg.b"]["pkg.a"].eager is False
    (cycle,) = cycles(edges)
    assert cycle.caught == {"pkg.a", "pkg.b"}
    assert describe(cycle, edges) == ("import cycle:\n    pkg.a → pkg.b (pkg/a.py:1)\n"
                                      "    pkg.b → pkg.a (pkg/b.py:2)")
