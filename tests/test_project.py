"""The project's own chores: what CI runs, and how strict the suite is."""

from __future__ import annotations

import shlex
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_ci_runs_the_tests_and_the_lint() -> None:
    script = (ROOT / ".ci" / "run").read_text()
    commands = [
        shlex.split(line)
        for line in script.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert ["make", "test"] in commands
    assert ["make", "lint"] in commands


def test_a_warning_fails_the_suite() -> None:
    with pytest.raises(UserWarning, match="nobody expected"):
        warnings.warn("nobody expected this", UserWarning, stacklevel=1)
