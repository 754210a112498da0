"""The house rules, read from the source: which part may import which.

Every import statement of every module is read with `ast` (imports inside functions
included: a lazy import is still a dependency), so a rule broken anywhere fails here.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# Each folder is one package of the bertdot namespace (pyproject.toml's package-dir).
PARTS = {"server": "bertdot.server", "client": "bertdot.client", "export": "bertdot.export",
         "cli": "bertdot.cli"}  # fmt: skip
SERVING_CORE = ("bertdot.server.engine", "bertdot.server.encoding", "bertdot.server.index",
                "bertdot.server.indexing")  # fmt: skip
MODEL_STACK = ("torch", "transformers", "optimum")


def _module_name(path: Path) -> str:
    folder, *rest = path.relative_to(REPO).with_suffix("").parts
    parts = [PARTS[folder], *rest]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@cache
def modules() -> dict[str, Path]:
    found = {}
    for folder in PARTS:
        for path in sorted((REPO / folder).rglob("*.py")):
            found[_module_name(path)] = path
    return found


def _imported(name: str, tree: ast.AST) -> Iterator[str]:
    """Every module `name` imports: `from a.b import c` counts as a.b.c when that is a
    module, else as a.b."""
    package = name if modules()[name].name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                yield candidate if candidate in modules() else base


@cache
def imports() -> dict[str, frozenset[str]]:
    return {
        name: frozenset(_imported(name, ast.parse(path.read_text(encoding="utf-8"))))
        for name, path in modules().items()
    }


def _within(module: str, *packages: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


def _breaches(importers: tuple[str, ...], forbidden: tuple[str, ...]) -> list[str]:
    return sorted(
        f"{name} imports {target}"
        for name, targets in imports().items()
        if _within(name, *importers)
        for target in targets
        if _within(target, *forbidden)
    )


def test_the_rules_see_every_part() -> None:
    """A sanity check of the reader itself: it finds the modules and their imports."""
    assert {"bertdot.server.engine.retriever", "bertdot.client.sync", "bertdot.cli.main"} <= set(
        modules()
    )
    assert "bertdot.server.engine.query_batcher" in imports()["bertdot.server.engine.retriever"]
    assert "grpc" in imports()["bertdot.server.rpc.servicer"]


def test_no_import_circles_between_files() -> None:
    internal = {
        name: {t for t in targets if t in modules() and t != name}
        for name, targets in imports().items()
    }
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    circles: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(internal[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for name in sorted(internal):
        if name not in index:
            visit(name)
    assert circles == []


def test_the_light_client_imports_no_other_part() -> None:
    assert _breaches(("bertdot.client",), ("bertdot.server", "bertdot.export", "bertdot.cli")) == []


def test_the_server_imports_neither_export_nor_client_nor_the_commands() -> None:
    assert _breaches(("bertdot.server",), ("bertdot.export", "bertdot.client", "bertdot.cli")) == []


def test_export_imports_the_server_only_for_its_encoding() -> None:
    server_beyond_encoding = sorted(
        breach
        for breach in _breaches(("bertdot.export",), ("bertdot.server",))
        if not _within(breach.split(" imports ")[1], "bertdot.server.encoding")
    )
    assert server_beyond_encoding == []
    assert _breaches(("bertdot.export",), ("bertdot.client", "bertdot.cli")) == []


def test_no_part_imports_the_commands_package() -> None:
    """Parts register their commands through entry points; they never import `bertdot.cli`."""
    parts = ("bertdot.server", "bertdot.client", "bertdot.export")
    assert _breaches(parts, ("bertdot.cli",)) == []


@pytest.mark.parametrize("package", SERVING_CORE)
def test_the_serving_core_imports_no_grpc(package: str) -> None:
    assert _breaches((package,), ("grpc", "grpc_health", "grpc_reflection")) == []
    # …nor the transport or process packages that do.
    assert _breaches((package,), ("bertdot.server.rpc", "bertdot.server.app")) == []


def test_torch_and_transformers_only_in_export() -> None:
    elsewhere = tuple(p for p in PARTS.values() if p != "bertdot.export")
    assert _breaches(elsewhere, MODEL_STACK) == []


def test_ray_only_in_the_ray_encode_module() -> None:
    """Ray is an optional extra for corpus encoding; nothing else may need it."""
    importers = sorted(name for name, targets in imports().items() if _within_any(targets, "ray"))
    assert importers == ["bertdot.server.indexing.ray_encode"]


def _within_any(targets: frozenset[str], package: str) -> bool:
    return any(_within(target, package) for target in targets)
