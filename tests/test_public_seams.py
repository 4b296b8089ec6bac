"""Public seams only (STYLE rule 12): bridge/ uses its dependencies through their public API.

Every module under bridge/ is parsed with ``ast``. Refused: an import of another package's
private module or name (a segment with a leading underscore, or uvicorn's protocol classes,
Quart's ASGI connection classes, hypercorn's protocol module), a class inheriting from a name
imported from a server's protocol module or from ``quart.asgi``, and a class inheriting from
another package's class that defines a private (single-underscore) method, an override of that
class's internals.
"""

from __future__ import annotations

import ast
import importlib
from dataclasses import dataclass
from pathlib import Path

import pytest

BRIDGE = Path(__file__).resolve().parent.parent / "bridge"

# Modules that are internals even though no segment starts with an underscore.
PRIVATE_MODULES = ("uvicorn.protocols", "quart.asgi", "hypercorn.protocol", "granian._granian")
# Modules whose classes are a server's or framework's machinery: never a base class here.
PROTOCOL_MODULES = (
    "uvicorn.protocols",
    "hypercorn.protocol",
    "granian.asgi",
    "granian.rsgi",
    "granian._granian",
    "quart.asgi",
)
ALLOWED_PRIVATE = {"__future__"}


@dataclass(frozen=True)
class Finding:
    path: str
    line: int
    what: str


def _within(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def _private_segment(dotted: str) -> bool:
    return any(part.startswith("_") for part in dotted.split("."))


def _own(module: str) -> bool:
    return module == "bridge" or module.startswith("bridge.")


def findings_in(source: str, path: str = "<source>") -> list[Finding]:
    """What breaks rule 12 in one module's source."""
    tree = ast.parse(source)
    found: list[Finding] = []
    imported: dict[str, str] = {}  # local name -> the module it came from (non-bridge only)

    def refuse(node: ast.AST, what: str) -> None:
        found.append(Finding(path, getattr(node, "lineno", 0), what))

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                module = alias.name
                if _own(module) or module in ALLOWED_PRIVATE:
                    continue
                if _private_segment(module) or _within(module, PRIVATE_MODULES):
                    refuse(node, f"import of a private module {module}")
                imported[(alias.asname or module).split(".")[0]] = module
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level or _own(module) or module in ALLOWED_PRIVATE:
                continue
            if _private_segment(module) or _within(module, PRIVATE_MODULES):
                refuse(node, f"import from a private module {module}")
            for alias in node.names:
                if alias.name.startswith("_"):
                    refuse(node, f"import of a private name {module}.{alias.name}")
                imported[alias.asname or alias.name] = f"{module}.{alias.name}"

    for node in ast.walk(tree):
        if not isinstance(node, ast.ClassDef):
            continue
        for base in node.bases:
            origin = _origin(base, imported)
            if origin is None:
                continue
            if _within(origin, PROTOCOL_MODULES):
                refuse(node, f"class {node.name} inherits from {origin}")
            inherited = _resolve(origin)
            for item in node.body:
                if (
                    isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef)
                    and _is_private(item.name)
                    and hasattr(inherited, item.name)
                ):
                    refuse(item, f"class {node.name} overrides {origin}.{item.name}")
    return found


def _origin(base: ast.expr, imported: dict[str, str]) -> str | None:
    """The dotted origin of a base class imported from another package, else None."""
    parts: list[str] = []
    while isinstance(base, ast.Attribute):
        parts.insert(0, base.attr)
        base = base.value
    if isinstance(base, ast.Subscript):  # Generic[T] and the like
        return _origin(base.value, imported)
    if not isinstance(base, ast.Name) or base.id not in imported:
        return None
    return ".".join([imported[base.id], *parts])


def _resolve(dotted: str) -> object:
    """The object ``dotted`` names (a class of a dependency), or None if it cannot be found."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            found: object = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for name in parts[cut:]:
            found = getattr(found, name, None)
        return found
    return None


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def test_bridge_uses_its_dependencies_through_public_seams_only() -> None:
    found = [
        finding
        for path in sorted(BRIDGE.rglob("*.py"))
        for finding in findings_in(path.read_text(), str(path.relative_to(BRIDGE.parent)))
    ]
    assert not found, "\n".join(f"{f.path}:{f.line}: {f.what}" for f in found)


@pytest.mark.parametrize(
    "source",
    [
        "from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol",
        "import uvicorn.protocols.http.h11_impl",
        "from quart.asgi import ASGIHTTPConnection",
        "from quart.utils import _private_helper",
        "from hypercorn.protocol.h11 import H11Protocol",
        "import granian._granian",
        "from httpx._config import Timeout",
        "import quart.asgi as qa",
        "from uvicorn.protocols.http import httptools_impl\n"
        "class P(httptools_impl.HttpToolsProtocol):\n    pass",
        "import httpx\nclass C(httpx.AsyncClient):\n    async def _send_single_request(self, r):\n"
        "        pass",
        "from quart import Quart\nclass Q(Quart):\n    def _find_error_handler(self, e, b):\n"
        "        pass",
    ],
)
def test_the_scan_refuses(source: str) -> None:
    assert findings_in(source)


@pytest.mark.parametrize(
    "source",
    [
        "from __future__ import annotations",
        "from bridge._x import y\nfrom ._z import w",
        "from quart import Quart\nclass Q(Quart):\n    def create_url_adapter(self, r):\n"
        "        pass\n    def __init__(self):\n        pass",
        "from hypercorn.typing import ASGIReceiveCallable",
        "class Own:\n    def _helper(self):\n        pass",
        "import httpx\nclass S(httpx.AsyncByteStream):\n    def _own_helper(self):\n        pass",
        "request._get_current_object()",
    ],
)
def test_the_scan_allows(source: str) -> None:
    assert not findings_in(source)
