"""The README and docs/: short, true, and their commands work as shown in a fresh shell."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import typer

from sentry_extract.cli import app

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\((?!https?://)([^)#\s]+)(?:#([^)\s]+))?\)")
COMMAND = ".venv/bin/sentry-extract"


def code_lines(page: Path) -> list[str]:
    """The lines of the page's code blocks, heredoc bodies left out."""
    lines, in_code, heredoc = [], False, None
    for line in page.read_text().splitlines():
        if line.startswith("```"):
            in_code = not in_code
        elif in_code and heredoc is not None:
            heredoc = None if line == heredoc else heredoc
        elif in_code:
            lines.append(line)
            found = re.search(r"<<'?(\w+)'?", line)
            heredoc = found.group(1) if found else None
    return lines


def commands(page: Path) -> list[list[str]]:
    """Every `.venv/bin/sentry-extract` command in the page's code blocks, as words."""
    found = []
    joined = "\n".join(code_lines(page)).replace("\\\n", " ")
    for line in joined.splitlines():
        for part in re.split(r"&&|;", line) if COMMAND in line else []:
            words = shlex.split(part, comments=True)
            if words and words[0] == COMMAND:
                redirected = [i for i, w in enumerate(words) if w.startswith((">", "2>"))]
                found.append(words[1 : min(redirected, default=len(words))])
    return found


def anchors(page: Path) -> set[str]:
    headings = re.findall(r"^#+ (.+)$", page.read_text(), re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}


def test_the_readme_reads_in_five_minutes() -> None:
    text = README.read_text()
    assert len(text.splitlines()) < 300
    assert "make demo" in text and "make test" in text
    assert "| scenario | tool |" not in text and "## How it reads Sentry" not in text
    assert "| scenario | tool |" in (ROOT / "docs" / "performance.md").read_text()
    assert "## The fake Sentry" in (ROOT / "docs" / "how-it-reads-sentry.md").read_text()


@pytest.mark.parametrize("page", PAGES, ids=[page.name for page in PAGES])
def test_links_lead_somewhere(page: Path) -> None:
    for target, anchor in LINK.findall(page.read_text()):
        linked = (page.parent / target).resolve()
        assert linked.exists(), f"{page.name}: {target}"
        if anchor and linked.suffix == ".md":
            assert anchor in anchors(linked), f"{page.name}: {target}#{anchor}"


@pytest.mark.parametrize("page", PAGES, ids=[page.name for page in PAGES])
def test_the_command_is_called_where_a_fresh_shell_finds_it(page: Path) -> None:
    """`make demo` puts the command in .venv/bin/, which is not on PATH."""
    for line in code_lines(page):
        for part in re.split(r"&&|;|\||\$ |\* ", line):
            words = part.split()
            if words and words[0].endswith("sentry-extract"):
                assert words[0] == COMMAND, f"{page.name}: {line}"


@pytest.mark.parametrize("page", PAGES, ids=[page.name for page in PAGES])
def test_every_command_shown_parses(page: Path) -> None:
    root: Any = typer.main.get_command(app)
    for words in commands(page):
        if {"--help", "-h", "--version"} & set(words):
            continue
        command, rest = root, list(words)
        while rest and rest[0] in getattr(command, "commands", {}):
            command = command.commands[rest.pop(0)]
        assert not hasattr(command, "commands"), f"{page.name}: {words}"
        command.make_context(command.name, rest)  # raises on an unknown option or value


def test_files_the_examples_write_are_ignored_by_git() -> None:
    ignored = set((ROOT / ".gitignore").read_text().splitlines())
    for pattern in ("output/", "demo-output/", "/summary.json", "/extract.log", "/cassettes/"):
        assert pattern in ignored, pattern
