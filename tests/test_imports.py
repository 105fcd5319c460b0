"""Imports go one way: no circles, and no module imports one of a layer above its own.

Every module under src/ is parsed (nothing is imported or run); every `import` counts,
those under `if TYPE_CHECKING:` and inside functions too. A circle is a set of modules
that import each other, directly or through others; an import of a package's `__init__`
is not followed there, since it only gathers names. A layer may import its own layer and
the ones below; `source/` (HTTP) and `targets/` (where rows go) sit side by side and never
import each other.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "src"
PACKAGE = "sentry_extract"

# Bottom to top. A module belongs to the entry that is the longest prefix of its name
# (relative to the package; "" is the package's own `__init__`).
LAYERS: tuple[tuple[str, ...], ...] = (
    ("errors", "files", "events"),  # what everything shares
    ("model", "state"),  # streams as data, windows, modes; the state kept between runs
    ("records",),  # rows -> typed Arrow batches
    ("source", "targets"),  # HTTP only; where rows go (see APART)
    ("config",),  # connections and replications, parsed once
    ("reading",),  # one reader per way of reading a stream, reconcile, lag
    ("pipeline", "reporting"),  # the run, and how it shows
    ("testing",),  # the fake Sentry, which `sentry-extract fake` serves
    ("api",),  # the library call: run, describe, plan
    # the command line, the Dagster assets, and the package's `__init__` (the library's
    # names, loaded when first used)
    ("cli", "__main__", "dagster", ""),
)
APART = ("source", "targets")  # the same layer, and neither imports the other

# What breaks the rules knowingly: nothing. A line here must name a break that happens
# (the test fails on one that no longer does), with the reason beside it.
KNOWN_BREAKS: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Import:
    importer: str  # module names relative to the package ("" for its __init__)
    imported: str
    line: int
    of_package: bool  # the imported module is a package's `__init__`


def modules(root: Path) -> dict[str, Path]:
    """Every module under `root` by dotted name, packages by their folder's name."""
    found = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def imports(root: Path) -> Iterator[Import]:
    """Each import of a module of the tree by another. `from package import module` is an
    import of the module, not of the package's `__init__` as well."""
    known = modules(root)
    for name, path in known.items():
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    kept = package[: len(package) - node.level + 1]
                    base = ".".join([*kept, base] if base else kept)
                names = [base, *(f"{base}.{alias.name}" for alias in node.names)]
            else:
                continue
            targets = {_known_part(target, known) for target in names} - {"", name}
            for target in sorted(targets):
                if not any(other.startswith(f"{target}.") for other in targets):
                    of_package = known[target].name == "__init__.py"
                    yield Import(_relative(name), _relative(target), node.lineno, of_package)


def _known_part(name: str, known: dict[str, Path]) -> str:
    """The longest leading part of a dotted name that is a module of the tree ("": none)."""
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name


def _relative(name: str) -> str:
    return "" if name == PACKAGE else name.removeprefix(f"{PACKAGE}.")


def circles(found: list[Import]) -> list[list[str]]:
    """Sets of modules that import each other (Tarjan's strongly connected components)."""
    graph: dict[str, set[str]] = {}
    for edge in found:
        graph.setdefault(edge.importer, set())
        graph.setdefault(edge.imported, set())
        if not edge.of_package:
            graph[edge.importer].add(edge.imported)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for other in sorted(graph[module]):
            if other not in index:
                visit(other)
                low[module] = min(low[module], low[other])
            elif other in on_stack:
                low[module] = min(low[module], index[other])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return components


def unit(module: str) -> tuple[int, str]:
    """The layer a module belongs to, and the table entry that put it there."""
    matches = [
        (len(entry), depth, entry)
        for depth, entries in enumerate(LAYERS)
        for entry in entries
        if module == entry or (entry and module.startswith(f"{entry}."))
    ]
    if not matches:
        raise AssertionError(f"{PACKAGE}.{module} has no layer: add it to LAYERS")
    _, depth, entry = max(matches)
    return depth, entry


def broken_rules(root: Path) -> dict[str, str]:
    """Each circle and each import against the layers, with the line that shows it."""
    found = list(imports(root))
    broken = {
        "circle: " + " <-> ".join(members): "modules that import each other"
        for members in circles(found)
    }
    for edge in found:
        importer_layer, importer_unit = unit(edge.importer)
        imported_layer, imported_unit = unit(edge.imported)
        where = f"{edge.importer or PACKAGE} line {edge.line}"
        if imported_layer > importer_layer:
            reason = f"{where}: {imported_unit} is a layer above {importer_unit or PACKAGE}"
        elif {importer_unit, imported_unit} == set(APART):
            reason = f"{where}: {' and '.join(APART)} never import each other"
        else:
            continue
        broken.setdefault(f"{edge.importer} -> {edge.imported}", reason)
    return broken


def test_every_module_has_a_layer() -> None:
    for name in modules(SOURCE / PACKAGE):
        unit(name)


def test_imports_make_no_circle_and_never_climb() -> None:
    broken = broken_rules(SOURCE)
    unexpected = {text: why for text, why in broken.items() if text not in KNOWN_BREAKS}
    assert not unexpected, "\n".join(f"{text}  ({why})" for text, why in sorted(unexpected.items()))
    gone = sorted(KNOWN_BREAKS - broken.keys())
    assert not gone, "no longer happens; remove from KNOWN_BREAKS: " + ", ".join(gone)


def test_the_readme_draws_the_layers_as_they_are() -> None:
    """README's layout line: parts joined by `->`, each of a layer below the one before,
    and the parts side by side (`source/` and `targets/`) of one layer. What stands in
    parentheses is a comment on the part before it."""
    text = (ROOT / "README.md").read_text()
    line = text[text.index("Layout, ") :].split("\n\n")[0]
    chain = re.sub(r"\([^()]*\)", "", line).split("->")
    drawn = [
        {unit(name.removesuffix(".py").strip("/").replace("/", "."))[0] for name in names}
        for names in (re.findall(r"`([^`]+)`", part) for part in chain)
    ]
    assert all(len(layers) == 1 for layers in drawn), drawn
    depths = [layers.pop() for layers in drawn]
    assert depths == sorted(depths, reverse=True) and len(set(depths)) == len(depths), depths
    assert len(depths) >= len(LAYERS) - 1  # every layer but the fake Sentry's


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        (  # two modules importing each other, one only for its types
            {
                "config/__init__.py": "",
                "config/a.py": "from sentry_extract.config import b\n",
                "config/b.py": "from typing import TYPE_CHECKING\n"
                "if TYPE_CHECKING:\n    from sentry_extract.config.a import A\n",
            },
            {"circle: config.a <-> config.b"},
        ),
        (  # the bottom importing the command line, inside a function
            {"errors.py": "def f():\n    from sentry_extract.cli import app\n", "cli.py": ""},
            {"errors -> cli"},
        ),
        (  # the HTTP side importing a target, relatively
            {"source/__init__.py": "", "source/client.py": "from ..targets import base\n"}
            | {"targets/__init__.py": "", "targets/base.py": ""},
            {"source.client -> targets.base"},
        ),
        (  # what is allowed: downwards, and through a package's __init__ without a circle
            {
                "cli.py": "from sentry_extract import pipeline\n",
                "pipeline/__init__.py": "from sentry_extract.pipeline.run import run\n",
                "pipeline/run.py": "from sentry_extract import errors\n",
                "errors.py": "",
            },
            set(),
        ),
    ],
)
def test_the_rules_find_what_they_look_for(
    tmp_path: Path, files: dict[str, str], expected: set[str]
) -> None:
    for name, text in files.items():
        path = tmp_path / PACKAGE / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    (tmp_path / PACKAGE / "__init__.py").touch()
    assert set(broken_rules(tmp_path)) == expected
