"""docs/python-and-orchestrators.md: its Python blocks run, in order, as a reader runs
them (the replication in the working folder, connections in the environment), against
the fake Sentry. The Airflow DAG needs Airflow: it is compiled, and the function it
calls is run."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from sentry_extract.testing.fake_sentry import FakeSentry

from .helpers import sentry_connection

PAGE = Path(__file__).resolve().parent.parent / "docs" / "python-and-orchestrators.md"
REPLICATION = (
    "source: SENTRY\ntarget: LOCAL\ndefaults:\n  object: file://out/{stream_name}\n"
    "streams:\n  teams:\n  issues:\n"
)


def python_blocks(page: Path) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```$", page.read_text(), re.MULTILINE | re.DOTALL)


def test_the_python_on_the_page_runs(
    cli: CliRunner,
    fake: FakeSentry,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("SENTRY", sentry_connection(fake.base_url))
    (tmp_path / "replication.yaml").write_text(REPLICATION)
    blocks = python_blocks(PAGE)
    assert len(blocks) == 6
    names: dict[str, Any] = {}
    ran = 0
    for number, block in enumerate(blocks):
        code = compile(block, f"{PAGE.name} block {number + 1}", "exec")
        if "from airflow" not in block:
            exec(code, names)
            ran += 1
    assert ran == 5
    assert names["report"].exit_code == 0
    assert names["result"].success
    printed = capsys.readouterr().out
    assert "teams: ok, " in printed and "issues: ok, " in printed
    assert "fix the input (2): --streams: unknown stream 'isues'" in printed
    assert "teams full-refresh file://out/teams" in printed
    assert "acme/out/teams " in printed  # the Dagster asset and its rows
    rows = names["extract_sentry"]("replication.yaml")
    assert set(rows) == {"teams", "issues"} and rows["teams"] > 0  # issues: none new since
