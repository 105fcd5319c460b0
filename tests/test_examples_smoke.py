"""The examples' cassettes replay offline, into Parquet and into PostgreSQL, with the
recorded row counts: the CI smoke test a user would run against their own recordings."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.dataset as ds
import pytest
from typer.testing import CliRunner

from .helpers import invoke, pg_rows

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
NAMES = sorted(p.name for p in (EXAMPLES / "cassettes").iterdir() if p.is_dir())


def expected_rows(name: str) -> dict[str, int]:
    rows: dict[str, int] = json.loads(
        (EXAMPLES / "cassettes" / name / "expected-rows.json").read_text()
    )
    return rows


@pytest.mark.parametrize("name", NAMES)
def test_replay_into_parquet(cli: CliRunner, tmp_path: Path, name: str) -> None:
    result = invoke(
        cli,
        "run",
        str(EXAMPLES / f"parquet-{name}.yaml"),
        "--replay",
        str(EXAMPLES / "cassettes" / name),
    )
    assert result.exit_code == 0, result.stdout + result.stderr
    stored = {
        dataset.name: ds.dataset(dataset, format="parquet").count_rows()
        for dataset in (tmp_path / "output").glob("*/*")
    }
    assert stored == expected_rows(name)


@pytest.mark.parametrize("name", NAMES)
def test_replay_into_postgres(
    cli: CliRunner, pg_url: str, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    monkeypatch.setenv("MY_POSTGRES", pg_url)
    result = invoke(
        cli,
        "run",
        str(EXAMPLES / f"reference-{name}.yaml"),
        "--replay",
        str(EXAMPLES / "cassettes" / name),
    )
    assert result.exit_code == 0, result.stdout + result.stderr
    stored = {}
    for schema, table in pg_rows(
        pg_url,
        "SELECT schemaname, tablename FROM pg_tables WHERE "
        "schemaname NOT IN ('pg_catalog', 'information_schema') "
        # a closed session's staging table lingers in pg_temp_N until its backend exits
        "AND schemaname !~ '^pg_temp' AND tablename <> '_sentry_extract_state'",
    ):
        stored[table] = pg_rows(pg_url, f'SELECT count(*) FROM "{schema}"."{table}"')[0][0]
    assert stored == expected_rows(name)
