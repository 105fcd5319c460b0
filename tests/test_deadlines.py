"""Deadlines that hold wherever the run waits, and hosts that never answer found out.

No assertion here reads a clock: a wait the deadline ends is seen on the run's cancel
event (ended by the cancel, not by its time), a request it abandons by the timeout the
request was sent with, a host found out by the attempts it took. A build where the
deadline did not hold would wait the five minutes or the hour asked for: the module's
timeout fails it."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import tenacity
from typer.testing import CliRunner

from sentry_extract.errors import TimedOutError
from sentry_extract.source import retry
from sentry_extract.source.client import DEADLINE_MARGIN
from sentry_extract.source.retry import RetryPolicy, build_retrying, call_with_retries
from sentry_extract.source.wire import CurlSender, Timeouts
from sentry_extract.testing.fake_sentry import (
    FakeSentry,
    Fault,
    RateLimit,
    ServerSettings,
)
from sentry_extract.testing.organization import FakeOrganization
from sentry_extract.testing.silent_host import SilentHost

from .helpers import Clock, Workspace, invoke, sentry_connection

REPLICATION = "source: SENTRY\ntarget: LOCAL\ndefaults:\n  object: out/{stream_name}\nstreams:\n"
AN_HOUR = 3600  # a rate-limit window, or what a request may take: never reached
DEADLINE = 1.5  # seconds a run may take

pytestmark = pytest.mark.timeout(120)  # a deadline that does not hold fails, not waits


class WatchedCancel(threading.Event):
    """The run's cancel event, noting each wait on it: the seconds it was to last, and
    whether the cancel ended it (True) or its own time did (False)."""

    def __init__(self) -> None:
        super().__init__()
        self.waits: list[tuple[float | None, bool]] = []

    def wait(self, timeout: float | None = None) -> bool:
        ended_by_cancel = super().wait(timeout)
        self.waits.append((timeout, ended_by_cancel))
        return ended_by_cancel

    def ends_of_waits_longer_than(self, limit: float) -> list[bool]:
        """For each wait longer than `limit` seconds: whether the cancel ended it."""
        return [ended for seconds, ended in self.waits if seconds is not None and seconds > limit]


@pytest.fixture
def read_timeouts(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, list[float]]]:
    """The read timeout each request was sent with, by path (the real sender still sends)."""
    sent: dict[str, list[float]] = {}
    send = CurlSender.get

    def noted(sender: CurlSender, target: str, path: str, timeouts: Timeouts) -> object:
        sent.setdefault(path.split("/api/0/", 1)[-1], []).append(float(timeouts["read"] or 0))
        return send(sender, target, path, timeouts)

    monkeypatch.setattr(CurlSender, "get", noted)
    yield sent


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


def _run(
    cli: CliRunner,
    monkeypatch: pytest.MonkeyPatch,
    base_url: str,
    *arguments: str,
    **inputs: object,
) -> Finished:
    """The command, in-process, on `base_url`; its summary read back from its JSON."""
    Path("r.yaml").write_text(REPLICATION + "  issues:\n")
    monkeypatch.setenv("SENTRY", sentry_connection(base_url, **inputs))
    result = invoke(cli, "run", "r.yaml", *arguments, "--summary-json", "summary.json")
    summary = json.loads(Path("summary.json").read_text())
    return Finished(result.exit_code, result.stderr, summary)


@dataclass(frozen=True)
class Finished:
    code: int
    stderr: str
    summary: dict[str, Any]

    def lines_after(self, text: str) -> list[str]:
        lines = self.stderr.splitlines()
        found = next(number for number, line in enumerate(lines) if text in line)
        return lines[found + 1 :]


def test_a_deadline_abandons_a_request_the_host_never_answers(
    cli: CliRunner, monkeypatch: pytest.MonkeyPatch, read_timeouts: dict[str, list[float]]
) -> None:
    with SilentHost() as host:
        finished = _run(cli, monkeypatch, host.base_url, "--deadline", "2s")
        attempts = host.accepted
    assert finished.code == 1, finished.stderr
    # Sent to be given up at the deadline, not after the first request's own 15 seconds.
    [sent_with] = read_timeouts.pop("organizations/acme/")
    assert 0 < sent_with <= 2 + DEADLINE_MARGIN and not read_timeouts
    assert attempts == 1
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
    retry_after = {"Retry-After": "300"}  # the longest wait the client takes
    fake.faults.append(Fault("/issues/", 429, "slow down", times=3, headers=retry_after))
    workspace.replication("  issues:\n")
    cancel = WatchedCancel()
    with caplog.at_level(logging.INFO, logger="sentry_extract"):
        summary = workspace.run(sleep=None, deadline=DEADLINE, cancelled=cancel)
    assert summary.fatal == STREAMED_FATAL
    assert summary.exit_code == 1
    waits = cancel.ends_of_waits_longer_than(DEADLINE)
    assert waits and all(waits)  # ended by the deadline, not by the 300s the server asked
    assert [result.status for result in summary.results] == ["cancelled"]
    assert len(fake.requests_to("/issues/")) == 1
    assert "retrying in 300s: slow down (organizations/acme/issues/)" in caplog.messages
    assert not _retries_after_the_deadline(caplog.records)


def test_a_deadline_ends_a_wait_for_the_rate_limit_window(
    tmp_path: Path, organization: FakeOrganization, caplog: pytest.LogCaptureFixture
) -> None:
    limits = {
        "events": RateLimit(limit=1, window=AN_HOUR, concurrent=1),
        "default": RateLimit(limit=100, window=1.0, concurrent=25),
    }
    with FakeSentry(organization, ServerSettings(rate_limits=limits)) as fake:
        environ = {
            "SENTRY_EXTRACT_HOME": str(tmp_path / "home"),
            "SENTRY": sentry_connection(fake.base_url),
        }
        workspace = Workspace(tmp_path, environ, [])
        workspace.replication("  events:\n")
        cancel = WatchedCancel()
        with caplog.at_level(logging.INFO, logger="sentry_extract"):
            summary = workspace.run(sleep=None, deadline=DEADLINE, cancelled=cancel)
    assert summary.fatal == STREAMED_FATAL
    waits = cancel.ends_of_waits_longer_than(DEADLINE)
    assert waits and all(waits)  # ended by the deadline, not by the window's hour
    assert any(message.startswith("waiting ") for message in caplog.messages)
    assert not _retries_after_the_deadline(caplog.records)


def test_a_deadline_abandons_a_stream_request_in_flight(
    workspace: Workspace,
    fake: FakeSentry,
    caplog: pytest.LogCaptureFixture,
    read_timeouts: dict[str, list[float]],
) -> None:
    fake.hold(after=1)  # the organization is answered; the issues' answer never comes
    workspace.environ["SENTRY"] = sentry_connection(fake.base_url, timeout="1h")
    workspace.replication("  issues:\n")
    try:
        with caplog.at_level(logging.INFO, logger="sentry_extract"):
            summary = workspace.run(sleep=None, deadline=DEADLINE)
    finally:
        fake.release()
    assert summary.fatal == STREAMED_FATAL
    # Sent to be given up at the deadline, not after the hour the connection allows.
    [sent_with] = read_timeouts["organizations/acme/issues/"]
    assert sent_with <= DEADLINE + DEADLINE_MARGIN
    statuses = {result.name: result.status for result in summary.results}
    assert statuses == {"issues": "cancelled"}
    assert len(fake.requests_to("/issues/")) == 1
    assert not _retries_after_the_deadline(caplog.records)


def test_a_host_that_never_answers_is_found_out_by_the_first_request(
    cli: CliRunner, monkeypatch: pytest.MonkeyPatch, noted_waits: list[float]
) -> None:
    with SilentHost() as host:
        finished = _run(cli, monkeypatch, host.base_url, timeout="1s")
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
    assert attempts == 2 == len(noted_waits) + 1  # not the run's six
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


RetryEntry = Callable[[RetryPolicy, Callable[[], None]], None]


@pytest.mark.parametrize(
    "entry",
    [
        pytest.param(
            lambda policy, attempt: build_retrying(policy, sleep=lambda seconds: None)(attempt),
            id="tenacity",
        ),
        # The first attempt runs on its own; when it fails, tenacity goes on clocked from
        # when it began, so the bound holds the same.
        pytest.param(
            lambda policy, attempt: call_with_retries(policy, attempt, sleep=lambda s: None),
            id="first-attempt-alone",
        ),
    ],
)
def test_retries_are_bounded_by_the_clock_as_well_as_by_count(
    monkeypatch: pytest.MonkeyPatch, entry: RetryEntry
) -> None:
    clock = Clock(0.0)  # tenacity's and the retry module's: an attempt takes a quarter second
    monkeypatch.setattr(tenacity, "time", SimpleNamespace(monotonic=clock))
    monkeypatch.setattr(retry, "time", SimpleNamespace(monotonic=clock))
    attempts: list[float] = []

    def no_answer() -> None:
        attempts.append(clock.moment)
        clock.moment += 0.25
        raise TimedOutError("sentry.example.com", 0.25, "ReadTimeout")

    policy = RetryPolicy(attempts=50, initial_wait=0.0, max_total_time=1.0)
    with pytest.raises(TimedOutError):
        entry(policy, no_answer)
    assert attempts == [0.0, 0.25, 0.5, 0.75]  # the fourth ends at the limit: no fifth


def test_a_failed_first_attempt_is_retried_as_tenacitys_first() -> None:
    answers: list[Exception | str] = [TimedOutError("sentry.example.com", 1.0, "ReadTimeout"), "ok"]
    retried: list[tuple[int, str]] = []
    waits: list[float] = []

    def attempt() -> str:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    def noted(state: tenacity.RetryCallState) -> None:
        outcome = state.outcome
        assert outcome is not None
        retried.append((state.attempt_number, type(outcome.exception()).__name__))

    policy = RetryPolicy(attempts=3, initial_wait=2.0, max_wait=2.0)
    assert call_with_retries(policy, attempt, sleep=waits.append, on_retry=noted) == "ok"
    assert retried == [(1, "TimedOutError")]
    assert len(waits) == 1 and 2.0 <= waits[0] <= 4.0  # backoff of a first attempt, jittered
    assert call_with_retries(policy, lambda: "at once", sleep=waits.append) == "at once"
    assert len(waits) == 1
