"""Deadlines that hold wherever the run waits, and hosts that never answer found out."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from .conftest import invoke

REPLICATION = "source: SENTRY\ntarget: LOCAL\ndefaults:\n  object: out/{stream_name}\nstreams:\n"


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ("5", "error: --deadline: '5' has no unit: write 5s, 5m or 5h"),
        ("2.5", "error: --deadline: '2.5' has no unit: write 2.5s, 2.5m or 2.5h"),
        ("0s", "error: --deadline: '0s' is no time at all: give e.g. 30s, 50m or 2h"),
    ],
)
def test_a_deadline_needs_a_unit_and_some_time(
    cli: CliRunner, tmp_path: Path, given: str, message: str
) -> None:
    (tmp_path / "r.yaml").write_text(REPLICATION + "  issues:\n")
    result = invoke(cli, "run", "r.yaml", "--deadline", given)
    assert result.exit_code == 2
    assert result.stderr.strip() == message
    assert "Traceback" not in result.output


def test_the_help_says_what_a_deadline_keeps(cli: CliRunner) -> None:
    help_text = " ".join(invoke(cli, "run", "-h").stdout.replace("│", " ").split())
    assert "a bare number is refused" in help_text
    assert "checkpoints are kept" in help_text
    assert "save nothing" not in help_text
