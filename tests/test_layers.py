"""The direction of imports: the model at the bottom, `source/` only HTTP, readers above
it, the pipeline above them, and no circle of modules (the fake Sentry aside)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "src" / "sentry_extract"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: Path) -> set[str]:
    """Every module of the package that `path` imports, wherever the import stands (in a
    function, or for type checking only: a dependency all the same)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def graph() -> dict[str, set[str]]:
    modules = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    return {name: imported(path) & set(modules) - {name} for name, path in modules.items()}


GRAPH = graph()


def imports_of(prefix: str) -> dict[str, set[str]]:
    return {
        name: targets
        for name, targets in GRAPH.items()
        if name == prefix or name.startswith(prefix + ".")
    }


def test_the_graph_sees_the_package() -> None:
    assert "sentry_extract.pipeline.run" in GRAPH
    assert "sentry_extract.pipeline.loader" in GRAPH["sentry_extract.pipeline.run"]


@pytest.mark.parametrize(
    ("layer", "above"),
    [
        ("sentry_extract.model", ("source", "reading", "pipeline", "targets", "config", "state")),
        ("sentry_extract.source", ("reading", "pipeline", "targets", "config", "state")),
        ("sentry_extract.reading", ("pipeline", "targets", "cli")),
        ("sentry_extract.targets", ("source", "reading", "pipeline")),
        ("sentry_extract.state", ("source", "reading", "pipeline", "targets")),
        ("sentry_extract.records", ("source", "reading", "pipeline", "targets")),
    ],
)
def test_no_layer_imports_one_above_it(layer: str, above: tuple[str, ...]) -> None:
    climbs = {
        f"{name} -> {target}"
        for name, targets in imports_of(layer).items()
        for target in targets
        if any(target.startswith(f"sentry_extract.{upper}") for upper in above)
    }
    assert climbs == set()


def test_no_circle_of_modules_outside_the_fake_sentry() -> None:
    """Tarjan's strongly connected components: every one is a single module."""
    nodes = {name for name in GRAPH if not name.startswith("sentry_extract.testing")}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    circles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in GRAPH[node] & nodes:
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

    for node in sorted(nodes):
        if node not in index:
            visit(node)
    assert circles == []
