"""flags/ stays small and acyclic: no module imports one that imports it back, even for types."""

from __future__ import annotations

import ast
from pathlib import Path

import resilience.flags

PACKAGE = Path(resilience.flags.__file__).parent
MAX_LINES = 450


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
            found.add(node.module.split(".")[0])
    return found


def test_no_import_circle_and_no_module_over_the_limit() -> None:
    modules = {p.stem: p for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    graph = {name: _imports(path) & set(modules) for name, path in modules.items()}
    for name, path in modules.items():
        assert len(path.read_text().splitlines()) <= MAX_LINES, name

    def reaches(start: str, target: str, seen: set[str]) -> bool:
        for nxt in graph[start]:
            if nxt == target or (nxt not in seen and reaches(nxt, target, seen | {nxt})):
                return True
        return False

    circles = [name for name in graph if reaches(name, name, {name})]
    assert circles == []
