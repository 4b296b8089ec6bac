"""The package's shape is part of its contract with a newcomer: a short top level that reads as
the architecture, no import cycle between its parts, and joserfc used in one place.

The import graph is read from the source (every ``import``, including those inside functions
and under ``TYPE_CHECKING``), so a cycle that only shows at type-checking time counts too.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

BRIDGE = Path(__file__).resolve().parents[1] / "bridge"
MAX_TOP_LEVEL = 16


def _top_level() -> list[str]:
    return sorted(
        p.stem if p.is_file() else p.name
        for p in BRIDGE.iterdir()
        if p.name not in {"__init__.py", "__pycache__"}
        and (p.suffix == ".py" or (p.is_dir() and (p / "__init__.py").exists()))
    )


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(BRIDGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """The ``bridge.*`` modules a file imports (``from bridge import x`` names ``bridge.x``)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("bridge.")}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "bridge":
                found |= {f"bridge.{a.name}" for a in node.names}
            elif node.module.startswith("bridge."):
                found.add(node.module)
    return found


def _part(module: str) -> str:
    """The top-level entry a module belongs to: ``bridge.sessions.manager`` -> ``sessions``."""
    return module.split(".")[1]


def top_level_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = defaultdict(set)
    for path in BRIDGE.rglob("*.py"):
        module = _module_name(path)
        if module == "bridge":
            continue
        for target in _imports(path):
            if _part(target) != _part(module):
                graph[_part(module)].add(_part(target))
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_top_level_is_short() -> None:
    entries = _top_level()
    assert len(entries) <= MAX_TOP_LEVEL, entries


def test_no_import_cycle_between_the_top_level_parts() -> None:
    assert find_cycle(top_level_graph()) is None


def test_the_cycle_check_finds_a_cycle() -> None:
    # The check itself: a graph with identity -> sessions -> identity is reported.
    graph = {"identity": {"errors", "sessions"}, "sessions": {"store", "identity"}, "store": set()}
    assert find_cycle(graph) == ["identity", "sessions", "identity"]
    assert find_cycle({"a": {"b"}, "b": {"c"}}) is None


def test_the_readme_layout_names_every_module() -> None:
    readme = (BRIDGE.parent / "README.md").read_text()
    layout = readme.split("## Layout", 1)[1].split("\n## ", 1)[0]
    missing = [
        str(path.relative_to(BRIDGE.parent))
        for path in sorted(BRIDGE.rglob("*.py"))
        if path.name != "__init__.py" and path.name not in layout
    ]
    assert not missing, missing


def test_joserfc_is_used_in_one_module() -> None:
    users = sorted(
        str(path.relative_to(BRIDGE.parent))
        for path in BRIDGE.rglob("*.py")
        if any(m == "joserfc" or m.startswith("joserfc.") for m in _all_imports(path))
    )
    assert len(users) <= 2, users


def _all_imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


MAX_OPEN_DICTS = 40


def test_untyped_dicts_are_few() -> None:
    # Each ``dict[str, Any]`` left is a real open mapping (claims, a peer's JSON, an ASGI
    # scope); a shape the bridge knows is a Struct or a TypedDict.
    count = sum(p.read_text().count("dict[str, Any]") for p in BRIDGE.rglob("*.py"))
    assert count <= MAX_OPEN_DICTS, count


def test_every_reference_in_a_docstring_names_real_code() -> None:
    # :mod:`bridge.x`, :func:`bridge.x.f`, :class:`...`, :meth:`...`, :data:`...`: a module
    # moved or a name renamed leaves no reference behind that points nowhere.
    import importlib
    import re

    refs = {
        ref.rstrip(".")
        for path in BRIDGE.rglob("*.py")
        for ref in re.findall(
            r":(?:mod|func|class|meth|data|attr):`(bridge\.[\w.]+)`", path.read_text()
        )
    }
    missing = []
    for ref in sorted(refs):
        parts = ref.split(".")
        for i in range(len(parts), 0, -1):
            try:
                obj: object = importlib.import_module(".".join(parts[:i]))
            except ImportError:
                continue
            try:
                for attr in parts[i:]:
                    obj = getattr(obj, attr)
            except AttributeError:
                missing.append(ref)
            break
    assert refs and not missing, missing
