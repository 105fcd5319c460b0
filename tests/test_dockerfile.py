"""The Dockerfile, checked without a Docker daemon: what it copies is in the build context
(.dockerignore read as Docker reads it), what `pip install .` reads is there too, the
base image's Python is one the project supports, and the entry point is the command."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import pytest
from packaging.specifiers import SpecifierSet

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments left out."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1])
        for line in lines
        if line and not line.startswith("#")
    ]


def arguments(name: str) -> list[str]:
    return [rest for instruction, rest in instructions() if instruction == name]


def ignore_patterns() -> list[tuple[bool, re.Pattern[str]]]:
    """(excludes, pattern) in order; `**` any folders, `*` and `?` within one name."""
    patterns = []
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        excludes = not line.startswith("!")
        text = line.removeprefix("!").strip("/")
        parts = re.split(r"(\*\*/|\*\*|\*|\?)", text)
        wildcards = {"**/": "(?:.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}
        regex = "".join(wildcards.get(part, re.escape(part)) for part in parts)
        patterns.append((excludes, re.compile(f"{regex}$")))
    return patterns


def in_context(relative: str) -> bool:
    """Docker's rule: the last pattern matching the path or one of its folders decides."""
    parts = relative.split("/")
    candidates = ["/".join(parts[: index + 1]) for index in range(len(parts))]
    included = True
    for excludes, pattern in ignore_patterns():
        if any(pattern.match(candidate) for candidate in candidates):
            included = not excludes
    return included


def context_files() -> list[str]:
    skipped = {".git", ".venv"}  # large; the patterns are checked on them below
    found = []
    for path in ROOT.rglob("*"):
        relative = path.relative_to(ROOT).as_posix()
        if path.is_file() and relative.split("/")[0] not in skipped and in_context(relative):
            found.append(relative)
    return found


def copy_sources() -> list[str]:
    sources = []
    for rest in arguments("COPY"):
        words = [word for word in rest.split() if not word.startswith("--")]
        sources.extend(words[:-1])
    return sources


def test_every_copy_source_exists_in_the_context() -> None:
    assert copy_sources()
    files = context_files()
    for source in copy_sources():
        assert (ROOT / source).exists(), source
        held = [
            f for f in files if f == source.rstrip("/") or f.startswith(source.rstrip("/") + "/")
        ]
        assert held, f"{source} is excluded by .dockerignore"


def test_what_pip_install_reads_is_in_the_context_and_copied() -> None:
    needed = ["pyproject.toml", PYPROJECT["project"]["readme"]]
    where = PYPROJECT["tool"]["setuptools"]["packages"]["find"]["where"]
    modules = [
        path.relative_to(ROOT).as_posix()
        for folder in where
        for path in (ROOT / folder).rglob("*.py")
        if "__pycache__" not in path.parts
    ]
    assert modules
    copied = [source.rstrip("/") for source in copy_sources()]
    for relative in [*needed, *modules]:
        assert in_context(relative), relative
        assert any(relative == c or relative.startswith(c + "/") for c in copied), relative


@pytest.mark.parametrize(
    "relative",
    [
        ".git/HEAD",
        ".venv/bin/python",
        "tests/test_dockerfile.py",
        "demo-output/issues/part-1.parquet",
        ".local-postgres/data/PG_VERSION",
        ".pytest_cache/README.md",
        ".mypy_cache/3.11/x.json",
        "src/sentry_extract/__pycache__/cli.cpython-311.pyc",
        "src/sentry_extract.egg-info/PKG-INFO",
        "output/sentry/issues/part-1.parquet",
        "bench/.venvs/dlt/bin/python",
        ".env.sling",
    ],
)
def test_the_context_leaves_out_what_the_image_does_not_need(relative: str) -> None:
    assert not in_context(relative)


def test_the_base_image_python_satisfies_requires_python() -> None:
    (base,) = arguments("FROM")
    found = re.fullmatch(r"python:(\d+\.\d+)(?:\.\d+)?-slim", base)
    assert found, base
    assert found.group(1) in SpecifierSet(PYPROJECT["project"]["requires-python"])


def test_the_entrypoint_is_the_console_script_and_runs_as_a_user() -> None:
    (entrypoint,) = arguments("ENTRYPOINT")
    (command,) = arguments("CMD")
    assert json.loads(entrypoint) == list(PYPROJECT["project"]["scripts"])
    assert json.loads(command) == ["--help"]
    order = [instruction for instruction, _ in instructions()]
    (user,) = arguments("USER")
    assert user not in ("root", "0")
    assert order.index("USER") < order.index("ENTRYPOINT")
    assert any("pip install --no-cache-dir ." in rest for rest in arguments("RUN"))
