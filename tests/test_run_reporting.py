"""Every run ends reported: whatever stops it, `--summary-json` is written with the
process's exit code and what stopped it, and a JSON log ends with `run_end`.

Cron and CI read exactly these, so each failure path is run here as a user runs it.
"""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from sentry_extract.cli import app
from sentry_extract.pipeline.connect import FIRST_REQUEST_TIMEOUT
from sentry_extract.testing.fake_sentry import FakeSentry, ServerSettings
from sentry_extract.testing.organization import FakeOrganization, OrganizationSize

from .helpers import Command, closed_port, command_environment, sentry_connection, signal_when

REPLICATION = (
    "source: SENTRY\ntarget: LOCAL\ndefaults:\n  object: out/{stream_name}\n"
    "streams:\n  teams:\n  issues:\n"
)


def json_log(stderr: str) -> list[dict[str, Any]]:
    """Every line of a JSON log, each one an object."""
    return [json.loads(line) for line in stderr.splitlines()]


def run_json(cli: CliRunner, tmp_path: Path, *extra: str) -> tuple[Any, dict[str, Any], list[Any]]:
    result = cli.invoke(
        app,
        ["run", "r.yaml", "--summary-json", "summary.json", "--log-format", "json", *extra],
    )
    summary = json.loads((tmp_path / "summary.json").read_text())
    return result, summary, json_log(result.stderr)


def assert_reported(result: Any, summary: dict[str, Any], log: list[Any], code: int) -> None:
    assert result.exit_code == code, result.stderr
    assert summary["exit_code"] == code
    assert log[-1]["event"] == "run_end"
    assert log[-1]["exit_code"] == code
    assert log[-1]["fatal"] == summary["fatal"]


@pytest.fixture
def ready(cli: CliRunner, tmp_path: Path) -> CliRunner:
    (tmp_path / "r.yaml").write_text(REPLICATION)
    return cli


def test_a_rejected_token(
    ready: CliRunner, fake: FakeSentry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SENTRY", sentry_connection(fake.base_url, token="sntryu_test_revoked"))
    result, summary, log = run_json(ready, tmp_path)
    assert_reported(result, summary, log, 1)
    host = fake.base_url.removeprefix("http://")
    assert summary["fatal"] == f"the token was rejected by {host} (401)"
    assert log[-1]["level"] == "error"


def test_a_configuration_error(
    ready: CliRunner, fake: FakeSentry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SENTRY", sentry_connection(fake.base_url))
    (tmp_path / "r.yaml").write_text(REPLICATION.replace("issues:", "isues:"))
    result, summary, log = run_json(ready, tmp_path)
    assert_reported(result, summary, log, 2)
    assert summary["fatal"].startswith("r.yaml: streams.isues: unknown stream")
    assert summary["streams"] == [] and fake.requests == []


def test_a_bad_option(
    ready: CliRunner, fake: FakeSentry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SENTRY", sentry_connection(fake.base_url))
    result, summary, log = run_json(ready, tmp_path, "--deadline", "5x")
    assert_reported(result, summary, log, 2)
    assert summary["fatal"].startswith("--deadline: '5x' is not a duration")


def test_an_unreachable_host(
    ready: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, noted_waits: list[float]
) -> None:
    port = closed_port()
    monkeypatch.setenv("SENTRY", sentry_connection(f"http://127.0.0.1:{port}"))
    result, summary, log = run_json(ready, tmp_path)
    assert_reported(result, summary, log, 2)
    assert summary["fatal"].startswith(f"cannot reach 127.0.0.1:{port} (ConnectError")
    assert [line["event"] for line in log].count("retry") == 2 == len(noted_waits)


def test_an_unexpected_crash(
    ready: CliRunner, fake: FakeSentry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*arguments: Any) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setenv("SENTRY", sentry_connection(fake.base_url))
    monkeypatch.setattr("sentry_extract.records.RecordTyper.to_batch", broken)
    result, summary, log = run_json(ready, tmp_path)
    assert_reported(result, summary, log, 1)
    assert summary["fatal"] == "unexpected error: RuntimeError: a bug"
    crash = next(line for line in log if line["event"] == "crash")
    assert "RuntimeError: a bug" in crash["traceback"]


def test_the_summary_is_written_even_for_an_unknown_log_format(
    ready: CliRunner, tmp_path: Path
) -> None:
    result = ready.invoke(
        app, ["run", "r.yaml", "--summary-json", "summary.json", "--log-format", "xml"]
    )
    assert result.exit_code == 2
    assert result.stderr.strip() == "error: --log-format: 'xml' is not one of text, json"
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["exit_code"] == 2 and summary["fatal"].startswith("--log-format: 'xml'")


def test_a_complete_run_is_reported_the_same_way(
    ready: CliRunner, fake: FakeSentry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SENTRY", sentry_connection(fake.base_url))
    result, summary, log = run_json(ready, tmp_path)
    assert_reported(result, summary, log, 0)
    assert summary["fatal"] is None and log[-1]["level"] == "info"
    assert [s["name"] for s in summary["streams"]] == ["teams", "issues"]
    assert summary["requests"] == len(fake.requests)  # the organization's check included


def events_run(tmp_path: Path, fake: FakeSentry, *arguments: str) -> subprocess.Popen[str]:
    """A run of events that takes a while (600 of them, answered slowly), started."""
    (tmp_path / "r.yaml").write_text(REPLICATION.replace("issues:", "events:"))
    environment = command_environment(tmp_path, sentry_connection(fake.base_url))
    return Command(tmp_path, environment).start(*arguments)


def some_events_asked(fake: FakeSentry) -> Callable[[], bool]:
    return lambda: len(fake.requests_to("/events/")) >= 3


@pytest.mark.parametrize(
    ("number", "code", "named"),
    [(signal.SIGINT, 130, "SIGINT (Ctrl-C)"), (signal.SIGTERM, 143, "SIGTERM")],
)
def test_a_signal(tmp_path: Path, number: signal.Signals, code: int, named: str) -> None:
    organization = FakeOrganization("acme", OrganizationSize(events=600))
    with FakeSentry(organization, ServerSettings(latency=0.1)) as fake:
        process = events_run(
            tmp_path, fake, "--summary-json", "summary.json", "--log-format", "json"
        )
        signal_when(process, some_events_asked(fake), number)
        stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == code, stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["exit_code"] == code
    assert summary["fatal"] == f"interrupted by {named}; committed rows and state are kept"
    streams = {stream["name"]: stream for stream in summary["streams"]}
    assert streams["events"]["status"] == "cancelled"
    log = json_log(stderr)
    assert log[-1]["event"] == "run_end" and log[-1]["exit_code"] == code
    assert stdout == ""  # a JSON log's run_end holds the summary: nothing else is printed
    # Stopped, not behind: a first run cut by a signal has nothing to say about keeping up.
    assert "falling_behind" not in [line["event"] for line in log]
    assert streams["events"]["behind"] is None
    assert {s["name"]: s["status"] for s in log[-1]["streams"]}["events"] == "cancelled"


def test_ctrl_c_prints_the_summary_table_in_text_mode(tmp_path: Path) -> None:
    organization = FakeOrganization("acme", OrganizationSize(events=600))
    with FakeSentry(organization, ServerSettings(latency=0.1)) as fake:
        process = events_run(tmp_path, fake)
        signal_when(process, some_events_asked(fake), signal.SIGINT)
        stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 130
    lines = stdout.splitlines()
    assert lines[0].split() == [
        "stream",
        "mode",
        "rows",
        "requests",
        "retries",
        "seconds",
        "status",
    ]
    events = next(line.split() for line in lines if line.startswith("events"))
    assert events[1] == "incremental" and events[-1] == "cancelled"
    assert stderr.strip().endswith("interrupted: committed rows and state are kept")


def test_a_signal_during_the_first_request_stops_at_once(tmp_path: Path) -> None:
    """Nothing is written before the streams start: no need to wait for a slow answer.
    The first request is never answered while the run is stopped: the run ends long
    before that request's own timeout would have ended it (libcurl, in the main thread,
    kept the signal's handler waiting until then)."""
    (tmp_path / "r.yaml").write_text(REPLICATION)
    with FakeSentry(FakeOrganization("acme"), ServerSettings()) as fake:
        fake.hold(after=0)
        environment = command_environment(tmp_path, sentry_connection(fake.base_url))
        process = Command(tmp_path, environment).start("--summary-json", "s.json")
        try:
            signal_when(process, lambda: len(fake.requests) > 0, signal.SIGTERM)
            _, stderr = process.communicate(timeout=FIRST_REQUEST_TIMEOUT / 3)
            assert [record.status for record in fake.requests] == [0]  # still unanswered
        finally:
            fake.release()
    assert process.returncode == 143, stderr
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["exit_code"] == 143 and summary["fatal"].startswith("interrupted by SIGTERM")
    assert stderr.strip().splitlines()[-1] == "interrupted: committed rows and state are kept"


def test_a_full_disk_while_writing_parquet_is_one_line(
    ready: CliRunner, fake: FakeSentry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pyarrow.parquet as pq

    def full(*arguments: Any, **options: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setenv("SENTRY", sentry_connection(fake.base_url))
    monkeypatch.setattr(pq.ParquetWriter, "write_batch", full)
    result, summary, log = run_json(ready, tmp_path)
    assert_reported(result, summary, log, 1)
    problems = [problem for stream in summary["streams"] for problem in stream["problems"]]
    assert problems and all("No space left on device" in problem for problem in problems)
    assert all(problem.startswith("cannot stage rows in ") for problem in problems)
    assert "Traceback" not in result.stderr and "crash" not in [line["event"] for line in log]
