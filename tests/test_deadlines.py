"""Deadlines that hold wherever the run waits, and hosts that never answer found out."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import tenacity
from typer.testing import CliRunner

from sentry_extract.errors import TimedOutError
from sentry_extract.source.retry import RetryPolicy, build_retrying
from sentry_extract.testing.fake_sentry import (
    FakeSentry,
    Fault,
    RateLimit,
    ServerSettings,
)
from sentry_extract.testing.organization import FakeOrganization
from sentry_extract.testing.silent_host import SilentHost

from .helpers import Clock, Command, Workspace, command_environment, invoke, sentry_connection

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


def _run_process(folder: Path, base_url: str, *arguments: str, **inputs: object) -> Finished:
    """The CLI in a process of its own (real signals, real time), on `base_url`."""
    (folder / "r.yaml").write_text(REPLICATION + "  issues:\n")
    environment = command_environment(folder, sentry_connection(base_url, **inputs))
    started = time.monotonic()
    process = Command(folder, environment).run(*arguments, "--summary-json", "summary.json")
    summary = json.loads((folder / "summary.json").read_text())
    return Finished(process.returncode, process.stderr, summary, time.monotonic() - started)


@dataclass(frozen=True)
class Finished:
    code: int
    stderr: str
    summary: dict[str, Any]
    seconds: float

    def lines_after(self, text: str) -> list[str]:
        lines = self.stderr.splitlines()
        found = next(number for number, line in enumerate(lines) if text in line)
        return lines[found + 1 :]


def test_a_deadline_abandons_a_request_the_host_never_answers(tmp_path: Path) -> None:
    with SilentHost() as host:
        finished = _run_process(tmp_path, host.base_url, "--deadline", "2s")
    assert finished.code == 1, finished.stderr
    assert finished.seconds < 15  # the request's own timeout is 60s
    fatal = "the run's deadline (2s) passed before any stream began; nothing was written, "
    fatal += "checkpoints kept"
    assert finished.summary["fatal"] == fatal
    assert finished.summary["exit_code"] == 1
    assert finished.stderr.splitlines()[-1] == f"error: {fatal}"
    after = finished.lines_after("the run's deadline passed: stopping")
    assert not [line for line in after if "retrying" in line]
    assert "Traceback" not in finished.stderr


STREAMED_FATAL = (
    "the run's deadline (1.5s) passed; unfinished streams stopped, their checkpoints kept "
    "for the next run"
)


def _retries_after_the_deadline(records: list[logging.LogRecord]) -> list[str]:
    messages = [record.getMessage() for record in records]
    found = messages.index("the run's deadline passed: stopping")
    return [message for message in messages[found:] if message.startswith("retrying")]


def test_a_deadline_ends_a_retry_wait_the_server_asked_for(
    workspace: Workspace, fake: FakeSentry, caplog: pytest.LogCaptureFixture
) -> None:
    fake.faults.append(Fault("/issues/", 429, "slow down", times=3, headers={"Retry-After": "60"}))
    workspace.replication("  issues:\n")
    with caplog.at_level(logging.INFO, logger="sentry_extract"):
        summary = workspace.run(sleep=None, deadline=1.5)
    assert summary.fatal == STREAMED_FATAL
    assert summary.exit_code == 1
    assert summary.seconds < 10  # not the minute the server asked for
    assert [result.status for result in summary.results] == ["cancelled"]
    assert "retrying in 60s: slow down (organizations/acme/issues/)" in caplog.messages
    assert not _retries_after_the_deadline(caplog.records)


def test_a_deadline_ends_a_wait_for_the_rate_limit_window(
    tmp_path: Path, organization: FakeOrganization, caplog: pytest.LogCaptureFixture
) -> None:
    limits = {
        "events": RateLimit(limit=1, window=60.0, concurrent=1),
        "default": RateLimit(limit=100, window=1.0, concurrent=25),
    }
    with FakeSentry(organization, ServerSettings(rate_limits=limits)) as fake:
        environ = {
            "SENTRY_EXTRACT_HOME": str(tmp_path / "home"),
            "SENTRY": sentry_connection(fake.base_url),
        }
        workspace = Workspace(tmp_path, environ, [])
        workspace.replication("  events:\n")
        with caplog.at_level(logging.INFO, logger="sentry_extract"):
            summary = workspace.run(sleep=None, deadline=1.5)
    assert summary.fatal == STREAMED_FATAL
    assert summary.seconds < 10  # not the window's minute
    assert any(message.startswith("waiting ") for message in caplog.messages)
    assert not _retries_after_the_deadline(caplog.records)


def test_a_deadline_abandons_a_stream_request_in_flight(
    workspace: Workspace, fake: FakeSentry, caplog: pytest.LogCaptureFixture
) -> None:
    fake.hold(after=1)  # the organization is answered; the issues' answer never comes
    workspace.replication("  issues:\n")
    try:
        with caplog.at_level(logging.INFO, logger="sentry_extract"):
            summary = workspace.run(sleep=None, deadline=1.5)
    finally:
        fake.release()
    assert summary.fatal == STREAMED_FATAL
    assert summary.seconds < 10  # not the request's 60s timeout
    statuses = {result.name: result.status for result in summary.results}
    assert statuses == {"issues": "cancelled"}
    assert len(fake.requests_to("/issues/")) == 1
    assert not _retries_after_the_deadline(caplog.records)


def test_a_host_that_never_answers_is_found_out_by_the_first_request(tmp_path: Path) -> None:
    with SilentHost() as host:
        finished = _run_process(tmp_path, host.base_url, timeout="1s")
        attempts = host.accepted
    address = host.base_url.removeprefix("http://")
    fatal = (
        f"cannot reach {address}: no answer within 1s (ReadTimeout): check inputs.base_url "
        f"({host.base_url}); the host took the connection and never answered: a wrong port, "
        "a proxy or firewall in the way (HTTPS_PROXY, NO_PROXY), or a server that hangs"
    )
    assert finished.code == 2, finished.stderr
    assert finished.stderr.splitlines()[-1] == f"error: {fatal}"
    assert finished.summary["fatal"] == fatal
    assert finished.summary["exit_code"] == 2
    assert attempts == 2  # not the run's six
    assert finished.seconds < 30
    assert "Traceback" not in finished.stderr


def test_a_request_stops_retrying_when_its_time_is_up(
    workspace: Workspace, fake: FakeSentry
) -> None:
    fake.hold(after=1)  # the organization is answered; the projects' answer never comes
    inputs = {"timeout": "2s", "retry_attempts": 10, "retry_max_wait": "5s"}
    workspace.environ["SENTRY"] = sentry_connection(fake.base_url, **inputs)
    workspace.replication("  projects:\n")
    try:
        summary = workspace.run(sleep=None, retry=None)
    finally:
        fake.release()
    address = fake.base_url.removeprefix("http://")
    projects = summary.results[0]
    assert projects.status == "failed"
    assert projects.problems == [f"no answer from {address} within 2s (ReadTimeout)"]
    assert len(fake.requests_to("/projects/")) == 2  # 5s allows a wait and one more attempt
    assert summary.seconds < 20


def test_retries_are_bounded_by_the_clock_as_well_as_by_count(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = Clock(0.0)  # tenacity's: each attempt takes a quarter of a second of it
    monkeypatch.setattr(tenacity, "time", SimpleNamespace(monotonic=clock))
    attempts: list[float] = []

    def no_answer() -> None:
        attempts.append(clock.moment)
        clock.moment += 0.25
        raise TimedOutError("sentry.example.com", 0.25, "ReadTimeout")

    policy = RetryPolicy(attempts=50, initial_wait=0.0, max_total_time=1.0)
    with pytest.raises(TimedOutError):
        build_retrying(policy, sleep=lambda seconds: None)(no_answer)
    assert attempts == [0.0, 0.25, 0.5, 0.75]  # the fourth ends at the limit: no fifth
