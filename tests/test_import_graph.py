"""The package's structure: no import cycle between its modules, no module over 800 lines.

Layers import downwards only (pdu -> statemachine -> transport -> association -> dispatcher ->
services -> session/client), so a cycle means a layer reaches up. Every import counts, also
those under ``TYPE_CHECKING`` and inside functions: a lazy import hides a cycle, it does not
remove it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import aiodicom

PACKAGE_DIR = Path(aiodicom.__file__).parent
MAX_LINES = 800

KNOWN_CYCLE_IMPORTS: frozenset[tuple[str, str]] = frozenset()
"""Imports (importer, imported) that close a cycle still tolerated: left out of the graph
before looking for cycles. Delete an entry once its import is gone (a test says when)."""

KNOWN_LONG_MODULES: frozenset[str] = frozenset()
"""Modules tolerated over :data:`MAX_LINES` for now. Delete an entry once it is split."""


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def package_modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE_DIR.rglob("*.py"))}


def imported_names(source: str, name: str, is_package: bool) -> set[str]:
    """Every module name ``source`` (module ``name``) imports, wherever the import stands.

    ``from a.b import c`` names ``a.b`` and ``a.b.c`` (c may be a submodule); ``import a.b``
    names ``a.b``. A package named this way (``from aiodicom import transport``) is imported
    itself: its ``__init__`` runs, with everything it imports.
    """
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = name.split(".") if is_package else name.split(".")[:-1]
                parts = parts[: len(parts) - (node.level - 1)]
                base = ".".join(parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def import_graph() -> dict[str, set[str]]:
    """Module -> the package's modules it imports."""
    modules = package_modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        names = imported_names(
            path.read_text(encoding="utf-8"), name, path.name == "__init__.py"
        )
        graph[name] = {imported for imported in names if imported in modules} - {name}
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one module (Tarjan), so the
    failure message shows a path to cut; cut it and the test shows the next one."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                connect(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component: set[str] = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(component)

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return [cycle_within(graph, component) for component in components]


def cycle_within(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    """A shortest cycle from the component's first module back to it (breadth first)."""
    start = min(component)
    came_from: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following: list[str] = []
        for node in frontier:
            for target in sorted(graph[node] & component):
                if target == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(came_from[path[-1]])
                    return [*reversed(path), start]
                if target not in came_from:
                    came_from[target] = node
                    following.append(target)
        frontier = following
    raise AssertionError(f"{sorted(component)} holds no cycle")


def without_known_cycles(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    return {
        name: {target for target in targets if (name, target) not in KNOWN_CYCLE_IMPORTS}
        for name, targets in graph.items()
    }


def test_every_kind_of_import_is_seen() -> None:
    source = (
        "from typing import TYPE_CHECKING\n"
        "from aiodicom import transport\n"
        "from aiodicom.services.find import Find\n"
        "from . import pdu\n"
        "import aiodicom.uids\n"
        "if TYPE_CHECKING:\n"
        "    from aiodicom.session import Session\n"
        "def later():\n"
        "    from .instance import Instance\n"
    )
    names = imported_names(source, "aiodicom.example", is_package=False)
    assert {
        "aiodicom", "aiodicom.transport", "aiodicom.services.find", "aiodicom.pdu",
        "aiodicom.uids", "aiodicom.session", "aiodicom.instance",
    } <= names
    # Importing from a submodule does not count as importing the package above it.
    assert "aiodicom.services" not in names


def test_cycle_finder_reports_a_path() -> None:
    graph = {"a": {"b"}, "b": {"c", "d"}, "c": {"a"}, "d": set(), "e": {"a"}}
    assert find_cycles(graph) == [["a", "b", "c", "a"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle() -> None:
    cycles = find_cycles(without_known_cycles(import_graph()))
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(cycle) for cycle in cycles)


def test_known_cycle_imports_still_exist() -> None:
    """A tolerated import that is gone must leave the list, so that it cannot come back."""
    graph = import_graph()
    gone = {(name, target) for name, target in KNOWN_CYCLE_IMPORTS if target not in graph[name]}
    assert not gone, f"remove from KNOWN_CYCLE_IMPORTS: {gone}"


def test_known_long_modules_are_still_long() -> None:
    modules = package_modules()
    split = {
        name for name in KNOWN_LONG_MODULES
        if name not in modules
        or len(modules[name].read_text(encoding="utf-8").splitlines()) <= MAX_LINES
    }
    assert not split, f"remove from KNOWN_LONG_MODULES: {split}"


def test_no_module_over_800_lines() -> None:
    too_long = {
        name: count
        for name, path in package_modules().items()
        if (count := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
        and name not in KNOWN_LONG_MODULES
    }
    assert not too_long, f"modules over {MAX_LINES} lines: {too_long}"
