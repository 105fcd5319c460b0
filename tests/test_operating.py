"""Operating from cron and CI: JSON event lines, the summary file, dry runs, progress
bars, discovery for machines, and help for every command and option."""

from __future__ import annotations

import io
import json
import logging
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import typer
from rich.console import Console
from typer.testing import CliRunner

from sentry_extract.cli import app
from sentry_extract.events import emit
from sentry_extract.model.windows import format_datetime
from sentry_extract.reporting import ProgressHandler, progress_bars
from sentry_extract.source.catalog import STREAM_NAMES, WILDCARD_NAMES
from sentry_extract.testing.fake_sentry import FakeSentry, Fault
from sentry_extract.testing.organization import FakeOrganization

from .helpers import Workspace, invoke, sentry_connection

README = Path(__file__).resolve().parent.parent / "README.md"
REPLICATION = (
    "source: SENTRY\ntarget: LOCAL\ndefaults:\n  object: file://out/{stream_name}\n"
    "streams:\n  '*':\n"
)


@pytest.fixture
def ready(
    cli: CliRunner, fake: FakeSentry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> CliRunner:
    monkeypatch.setenv("SENTRY", sentry_connection(fake.base_url))
    (tmp_path / "r.yaml").write_text(REPLICATION)
    return cli


def test_json_log_lines_carry_every_event(ready: CliRunner, fake: FakeSentry) -> None:
    fake.inject(Fault("/teams/", 503, body={"detail": "busy"}, times=1))
    fake.inject(Fault("/members/", 429, body="slow down", times=1, headers={"Retry-After": "0.2"}))
    result = invoke(ready, "run", "r.yaml", "--log-format", "json")
    assert result.exit_code == 0, result.stderr
    lines = [json.loads(line) for line in result.stderr.splitlines()]
    events = [line["event"] for line in lines]
    assert events[0] == "run_start" and events[-1] == "run_end"
    for event in ("stream_start", "page", "retry", "rate_limit_wait", "stream_end"):
        assert event in events, event
    ends = {line["stream"]: line for line in lines if line["event"] == "stream_end"}
    assert set(ends) == set(WILDCARD_NAMES)
    assert ends["events"]["rows"] > 0 and ends["events"]["requests"] > 1
    assert ends["teams"]["retries"] == 1
    assert lines[-1]["exit_code"] == 0 and lines[-1]["rows"] == sum(
        end["rows"] for end in ends.values()
    )
    assert all({"time", "level", "message"} <= set(line) for line in lines)


def test_summary_json_for_machines(ready: CliRunner, fake: FakeSentry, tmp_path: Path) -> None:
    fake.settings.forbidden_projects = frozenset({"project-1"})
    result = invoke(ready, "run", "r.yaml", "--summary-json", "summary.json")
    assert result.exit_code == 1
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["exit_code"] == 1
    streams = {stream["name"]: stream for stream in summary["streams"]}
    assert streams["events"]["status"] == "partial"
    assert streams["events"]["problems"][0].startswith("project 'project-1' skipped")
    assert set(streams["issues"]) >= {"mode", "rows", "requests", "retries", "seconds", "status"}
    assert summary["rows"] == sum(stream["rows"] for stream in summary["streams"])


def plan_of(stdout: str) -> dict[str, list[str]]:
    """The dry run's lines by stream: its heading, then its indented lines."""
    plans: dict[str, list[str]] = {}
    for line in stdout.splitlines()[:-1]:
        if not line.startswith(" "):
            plans[line.split()[0]] = [line]
        else:
            plans[list(plans)[-1]].append(" ".join(line.split()))
    return plans


def test_dry_run_plans_from_the_saved_state_and_writes_nothing(
    ready: CliRunner, fake: FakeSentry, tmp_path: Path
) -> None:
    plan = invoke(ready, "run", "r.yaml", "--dry-run")
    assert plan.exit_code == 0
    assert fake.requests == [] and not (tmp_path / "out").exists()
    assert plan.stdout.splitlines()[-1] == "dry run: nothing was requested or written"
    plans = plan_of(plan.stdout)
    assert list(plans) == list(WILDCARD_NAMES)
    assert plans["issues"][0].split() == ["issues", "incremental", "into", "file://out/issues"]
    assert plans["issues"][1].endswith(" (a year, no anchor_date)")
    assert " ".join(plans["events"][2:]).startswith(
        "request GET /api/0/projects/acme/{project}/events/?full=true&per_page=100 &start="
    )
    assert invoke(ready, "run", "r.yaml").exit_code == 0
    state = json.loads((tmp_path / "out" / "issues" / "_sentry_extract_state.json").read_text())
    saved = datetime.fromisoformat(next(iter(state["streams"].values()))["state"]["watermark"])
    plans = plan_of(invoke(ready, "run", "r.yaml", "--dry-run").stdout)
    start = format_datetime(saved - timedelta(hours=1))  # the lookback before the last run
    assert plans["issues"][1].startswith(f"window {start} to ")
    assert plans["issues"][1].endswith(" (saved state)")


def test_dry_run_shows_the_saved_state_of_each_project(
    ready: CliRunner, fake: FakeSentry, tmp_path: Path, organization: FakeOrganization
) -> None:
    assert invoke(ready, "run", "r.yaml", "--streams", "events").exit_code == 0
    state = json.loads((tmp_path / "out" / "events" / "_sentry_extract_state.json").read_text())
    saved = next(iter(state["streams"].values()))["state"]["project_watermarks"]
    assert len(saved) == len(organization.projects)
    plans = plan_of(invoke(ready, "run", "r.yaml", "--dry-run", "--streams", "events").stdout)
    lines = plans["events"][1:]
    lines = lines[: next(i for i, line in enumerate(lines) if line.startswith("request "))]
    windows = [line.removeprefix("window").strip() for line in lines]
    for project_id, watermark in sorted(saved.items()):
        start = format_datetime(datetime.fromisoformat(watermark) - timedelta(hours=1))
        assert f"project {project_id}: {start} to " in "\n".join(windows)
    assert all(w.endswith(" (saved state)") for w in windows[:-1])
    assert windows[-1].startswith("other projects: ")


def test_dry_run_fits_a_100_column_terminal(ready: CliRunner, tmp_path: Path) -> None:
    assert invoke(ready, "run", "r.yaml").exit_code == 0
    plan = invoke(ready, "run", "r.yaml", "--dry-run")
    assert plan.exit_code == 0
    assert max(len(line) for line in plan.stdout.splitlines()) <= 100, plan.stdout


@pytest.mark.parametrize(
    "arguments",
    [
        ["--deadline", "5x"],
        ["--mode", "merge"],
        ["--streams", "event"],
        ["--record", "a", "--replay", "b"],
        ["--log-format", "xml"],
        ["--replay", "no-such-folder"],
    ],
    ids=["deadline", "mode", "streams", "record-and-replay", "log-format", "replay"],
)
def test_dry_run_checks_options_as_run_does(ready: CliRunner, arguments: list[str]) -> None:
    ran = invoke(ready, "run", "r.yaml", *arguments)
    planned = invoke(ready, "run", "r.yaml", "--dry-run", *arguments)
    assert ran.exit_code == planned.exit_code == 2
    assert planned.stderr == ran.stderr and planned.stderr.startswith("error: ")


def test_discover_for_machines(ready: CliRunner) -> None:
    result = invoke(ready, "conns", "discover", "SENTRY", "--columns", "-o", "json")
    assert result.exit_code == 0
    endpoints = {endpoint["endpoint"]: endpoint for endpoint in json.loads(result.stdout)}
    assert list(endpoints) == list(STREAM_NAMES)
    assert endpoints["events"]["primary_key"] == ["project_id", "event_id"]
    assert {"name": "date_created", "type": "timestamp"} in endpoints["events"]["columns"]
    assert endpoints["issues"]["incremental"] is True


def test_progress_bars_show_rows_requests_and_waits() -> None:
    screen = io.StringIO()
    progress = progress_bars(Console(file=screen, force_terminal=True, width=120))
    handler = ProgressHandler(progress)
    logger = logging.getLogger("sentry_extract.test_progress")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        with progress:
            emit(logger, logging.INFO, "stream_start", "start", stream="events")
            emit(logger, logging.INFO, "page", "page", stream="events", total_rows=1234, requests=7)
            emit(logger, logging.INFO, "rate_limit_wait", "wait", group="events", seconds=12.5)
            progress.refresh()
            logger.warning("project 'x' skipped")
            emit(
                logger,
                logging.INFO,
                "stream_end",
                "end",
                stream="events",
                rows=1234,
                requests=7,
                status="ok",
            )
    finally:
        logger.removeHandler(handler)
    text = screen.getvalue()
    assert "events" in text and "1,234 rows" in text and "7 requests" in text
    assert "waiting 12.5s (rate limit)" in text
    assert "project 'x' skipped" in text


def commands(group: Any, prefix: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    """Every command under a group, with its path (typer vendors its own click)."""
    found = []
    for name, command in getattr(group, "commands", {}).items():
        found.append(((*prefix, name), command))
        found.extend(commands(command, (*prefix, name)))
    return found


def test_every_command_and_option_has_help_and_is_in_the_readme() -> None:
    readme = README.read_text()
    sandbox = (README.parent / "docs" / "sandbox.md").read_text()
    listed = commands(typer.main.get_command(app))
    assert len(listed) == 12  # run, fake, maintain, conns and its 5, state and its 2: each checked
    for path, command in listed:
        assert command.help, f"{' '.join(path)} has no help"
        assert f"sentry-extract {' '.join(path)}" in readme, f"{' '.join(path)} not in README"
        documented = sandbox if path == ("fake",) else readme  # the practice server's flags
        for parameter in command.params:
            if parameter.param_type_name == "option" and parameter.name != "help":
                assert parameter.help, f"{' '.join(path)} {parameter.opts[0]} has no help"
                assert parameter.opts[0] in documented, f"{parameter.opts[0]} not documented"


def test_the_dry_run_shows_the_first_request_the_run_sends(
    workspace: Workspace, fake: FakeSentry
) -> None:
    """The dry run and the run ask the same reader: on a first run from a year back, the
    first slice reaches what Sentry keeps (before it, Sentry answers nothing), in the
    plan as in the run."""
    from datetime import UTC
    from urllib.parse import parse_qsl

    from sentry_extract.config.connections import discover_connections
    from sentry_extract.config.replication import load_replication
    from sentry_extract.pipeline import plan_replication

    path = workspace.replication("  issues:\n")
    started = datetime.now(UTC).replace(microsecond=0)
    replication = load_replication(path, workspace.environ, started)
    [plan] = plan_replication(replication, discover_connections(workspace.environ))
    assert workspace.run(path, started=started).exit_code == 0
    first = fake.requests_to("/issues/")[0]
    planned = dict(parse_qsl(plan.first_request.split("?", 1)[1], keep_blank_values=True))
    assert (planned["start"], planned["end"]) == (first.param("start"), first.param("end"))
    assert datetime.fromisoformat(planned["end"]) > datetime.fromisoformat(planned["start"])
