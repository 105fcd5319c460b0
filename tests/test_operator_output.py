"""What an operator sees is true: JSON logs hold only JSON, a quiet run prints no table,
the summary counts every request and says when the run began and ended, and no signal is
raised that is not so (falling behind after Ctrl-C, a finished stream waiting, a lock
file left behind, a default mode silently not applied)."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from typer.testing import CliRunner

from sentry_extract.events import emit
from sentry_extract.reporting import ProgressHandler, progress_bars
from sentry_extract.testing.fake_sentry import FakeSentry, Fault

from .helpers import TOKEN, command_environment, invoke, sentry_connection

REPLICATION = (
    "source: SENTRY\ntarget: LOCAL\ndefaults:\n  object: file://out/{stream_name}\n"
    "streams:\n  '*':\n"
)


def run_process(
    folder: Path, base_url: str, *arguments: str, **inputs: Any
) -> subprocess.CompletedProcess[str]:
    """`sentry-extract run` as cron runs it: stdout and stderr into one log."""
    environment = command_environment(folder, sentry_connection(base_url, **inputs))
    return subprocess.run(
        [sys.executable, "-m", "sentry_extract", "run", "r.yaml", *arguments],
        cwd=folder,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=120,
        check=False,
    )


def test_a_json_log_holds_json_lines_only(tmp_path: Path, fake: FakeSentry) -> None:
    (tmp_path / "r.yaml").write_text(REPLICATION)
    log: list[str] = []
    fake.inject(Fault("/teams/", 503, body={"detail": "busy"}, times=1))
    fake.settings.forbidden_projects = frozenset({"project-1"})  # warnings, a retry
    for run in range(3):
        finished = run_process(tmp_path, fake.base_url, "--log-format", "json")
        assert finished.returncode == (1 if run == 0 else 0), finished.stdout[-2000:]
        log += finished.stdout.splitlines()
        fake.settings.forbidden_projects = frozenset()
    documents = [json.loads(line) for line in log]  # every line, stdout and stderr together
    ends = [document for document in documents if document["event"] == "run_end"]
    assert len(ends) == 3
    first, last = ends[0], ends[-1]
    assert first["exit_code"] == 1 and last["exit_code"] == 0 and last["requests"] > 0
    assert {stream["name"] for stream in last["streams"]} >= {"issues", "events"}
    began, ended = (datetime.fromisoformat(last[key]) for key in ("started_at", "ended_at"))
    assert began <= ended
    assert any(document["level"] == "warning" for document in documents)


def test_quiet_prints_no_table_and_says_each_problem_on_stderr(
    cli: CliRunner, fake: FakeSentry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SENTRY", sentry_connection(fake.base_url))
    (tmp_path / "r.yaml").write_text(REPLICATION)
    fake.settings.forbidden_projects = frozenset({"project-1"})
    result = invoke(cli, "run", "r.yaml", "-q")
    assert result.exit_code == 1 and result.stdout == ""
    assert "events: project 'project-1' skipped" in result.stderr
    fake.settings.forbidden_projects = frozenset()
    again = invoke(cli, "run", "r.yaml", "--quiet")
    assert (again.exit_code, again.stdout, again.stderr) == (0, "", "")


def test_the_summary_counts_a_rejected_tokens_request_and_has_its_times(
    cli: CliRunner, fake: FakeSentry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SENTRY", sentry_connection(fake.base_url, token="sntryu_test_wrong"))
    (tmp_path / "r.yaml").write_text(REPLICATION)
    result = invoke(cli, "run", "r.yaml", "--summary-json", "s.json")
    assert result.exit_code == 1
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["requests"] == len(fake.requests) == 1
    began, ended = (datetime.fromisoformat(summary[key]) for key in ("started_at", "ended_at"))
    assert began <= ended


def test_the_check_of_the_organization_is_counted_in_the_totals_not_a_row(
    cli: CliRunner, fake: FakeSentry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SENTRY", sentry_connection(fake.base_url))
    (tmp_path / "r.yaml").write_text(REPLICATION.replace("'*':", "teams:"))
    result = invoke(cli, "run", "r.yaml", "--summary-json", "s.json")
    assert result.exit_code == 0 and "(preflight)" not in result.stdout
    assert "2 requests (1 to check the organization first)" in result.stdout
    summary = json.loads((tmp_path / "s.json").read_text())
    assert [stream["name"] for stream in summary["streams"]] == ["teams"]
    assert summary["requests"] == len(fake.requests) == 2


def test_a_finished_streams_progress_row_stays_finished() -> None:
    console = Console(file=io.StringIO(), width=120, force_terminal=True)
    progress = progress_bars(console)
    handler = ProgressHandler(progress)
    logger = logging.getLogger("sentry_extract.test_finished_rows")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        with progress:
            for stream in ("issues", "events"):
                emit(logger, logging.INFO, "stream_start", "start", stream=stream)
            emit(logger, logging.INFO, "stream_end", "end", stream="issues", rows=5, status="ok")
            emit(logger, logging.INFO, "rate_limit_wait", "wait", group="events", seconds=34.0)
            notes = {task.description: task.fields["note"] for task in progress.tasks}
    finally:
        logger.removeHandler(handler)
    assert notes == {"issues": "ok", "events": "waiting 34.0s (rate limit)"}


def test_no_lock_file_is_left_after_runs(workspace: Any) -> None:
    workspace.replication()
    for _ in range(2):
        assert workspace.run().exit_code == 0
    left = sorted(str(path) for path in (workspace.folder / "out").rglob("*.lock"))
    assert left == []


def test_a_default_mode_that_does_not_fit_is_said_once_in_the_dry_run_and_the_run(
    cli: CliRunner, fake: FakeSentry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SENTRY", sentry_connection(fake.base_url))
    (tmp_path / "r.yaml").write_text(
        REPLICATION.replace(
            "defaults:\n",
            "defaults:\n  mode: backfill\n  source_options:\n    range: '2026-11-01,2026-11-02'\n",
        ).replace("'*':", "issues:\n  teams:")
    )
    note = "note: defaults.mode backfill does not apply to streams without a time range: "
    plan = invoke(cli, "run", "r.yaml", "--dry-run")
    assert plan.exit_code == 0
    assert [line for line in plan.stdout.splitlines() if line.startswith("note:")] == [
        note + "teams (full-refresh)"
    ]
    assert "issues  backfill" in plan.stdout and "teams  full-refresh" in plan.stdout
    result = invoke(cli, "run", "r.yaml", "--log-format", "json")
    notes = [line for line in result.stderr.splitlines() if '"event": "replication_note"' in line]
    assert len(notes) == 1 and "teams (full-refresh)" in notes[0]


def test_the_token_is_in_no_output(tmp_path: Path, fake: FakeSentry) -> None:
    (tmp_path / "r.yaml").write_text(REPLICATION.replace("'*':", "teams:"))
    finished = run_process(tmp_path, fake.base_url, "--log-format", "json", "--debug")
    assert finished.returncode == 0
    assert TOKEN not in finished.stdout


def test_the_duckdb_queries_of_docs_scaling_work_as_written(workspace: Any) -> None:
    """Run on a local folder laid out as the example's replication lays out the bucket."""
    import duckdb

    workspace.replication(
        "  issues:\n  events:\n",
        mode="incremental",
        object_template="file://{folder}/sentry/acme/{{stream_name}}/year={{part_year}}/month={{part_month}}",
    )
    assert workspace.run().exit_code == 0
    text = (Path(__file__).parent.parent / "docs" / "scaling.md").read_text()
    example = text.split("```sql\n", 1)[1].split("```", 1)[0]
    statements = [part.strip() for part in example.split(";") if "SELECT" in part]
    assert len(statements) == 2
    folder = f"{workspace.folder}/"
    connection = duckdb.connect()
    per_project = connection.execute(statements[0].replace("s3://my-bucket/", folder)).fetchall()
    assert per_project and sum(count for _, count in per_project) > 0
    live = connection.execute(statements[1].replace("s3://my-bucket/", folder)).fetchone()
    assert live is not None and live[0] > 0


def test_the_process_ends_with_the_commands_status_and_all_it_wrote(tmp_path: Path) -> None:
    """The command ends its process itself once its output is flushed, without the
    interpreter's teardown: the status and every line still come out."""
    (tmp_path / "r.yaml").write_text("source: [\n")
    finished = run_process(tmp_path, "http://127.0.0.1:9")
    assert finished.returncode == 2, finished.stdout
    lines = finished.stdout.strip().splitlines()
    assert len(lines) == 1 and "r.yaml" in lines[0] and "Traceback" not in finished.stdout
    helped = subprocess.run(
        [sys.executable, "-m", "sentry_extract", "run", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert helped.returncode == 0
    assert "--summary-json" in helped.stdout and helped.stdout.endswith("\n")
