"""Fault injection: every failure sentry.io shows now and then ends in complete, exact data."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from sentry_extract.source.retry import RetryPolicy
from sentry_extract.testing.fake_sentry import (
    FakeSentry,
    Fault,
    FaultRates,
    RateLimit,
    ServerSettings,
)
from sentry_extract.testing.organization import FakeOrganization, OrganizationSize

from .helpers import (
    PATIENT,
    RETENTION,
    Workspace,
    assert_complete,
    pg_rows,
    sentry_connection,
)


@pytest.mark.parametrize(
    "rates",
    [
        FaultRates(server_error=0.2, seed=1),
        FaultRates(rate_limited=0.2, seed=2),
        FaultRates(reset=0.2, seed=3),
        FaultRates(slow=0.15, slow_seconds=1.0, seed=4),
        FaultRates(truncated=0.2, seed=5),
        FaultRates(query_timeout=0.2, seed=6),
    ],
    ids=["5xx", "429", "reset", "slow", "truncated", "query-timeout"],
)
def test_each_fault_ends_in_exact_data(tmp_path: Path, rates: FaultRates) -> None:
    organization = FakeOrganization("acme", OrganizationSize(projects=3, issues=30, events=200))
    with FakeSentry(organization, ServerSettings(faults=rates)) as fake:
        environ = {
            "SENTRY_EXTRACT_HOME": str(tmp_path / "home"),
            "SENTRY": sentry_connection(fake.base_url, timeout="300ms"),
        }
        workspace = Workspace(tmp_path, environ, [])
        workspace.replication()
        started = datetime.now(UTC).replace(microsecond=0)
        summary = workspace.run(started=started, retry=PATIENT)
        assert summary.exit_code == 0, [r.problems for r in summary.results]
        assert sum(fake.injected.values()) > 0
        retries = sum(r.retries for r in summary.results)
        # A kept connection reset before any byte of its answer: libcurl sends the request
        # again at once on a new one (counted as one request, not as a retry).
        resent = len(fake.requests) - summary.requests
        assert resent == 0 or (rates.reset > 0 and resent > 0)
        assert retries + resent >= sum(fake.injected.values())
    assert_complete(workspace, organization, started)


def test_every_fault_at_once_with_sentry_io_limits_into_postgres(
    tmp_path: Path, pg_url: str
) -> None:
    organization = FakeOrganization("acme", OrganizationSize(projects=4, issues=40, events=300))
    limits = {
        "events": RateLimit(limit=20, window=1.0, concurrent=1),
        "default": RateLimit(limit=20, window=1.0, concurrent=2),
    }
    rates = FaultRates(
        server_error=0.05,
        rate_limited=0.05,
        reset=0.05,
        slow=0.03,
        truncated=0.05,
        query_timeout=0.05,
        slow_seconds=1.0,
        seed=9,
    )
    settings = ServerSettings(rate_limits=limits, faults=rates)
    with FakeSentry(organization, settings) as fake:
        environ = {
            "SENTRY_EXTRACT_HOME": str(tmp_path / "home"),
            "MY_POSTGRES": pg_url,
            "SENTRY": sentry_connection(fake.base_url, timeout=0.3),
        }
        workspace = Workspace(tmp_path, environ, [])
        workspace.replication(object_template="sentry.{{stream_name}}", target="MY_POSTGRES")
        started = datetime.now(UTC).replace(microsecond=0)
        # The real clock: rate-limit windows only reset as time passes.
        summary = workspace.run(started=started, retry=PATIENT, sleep=time.sleep)
        assert summary.exit_code == 0, [r.problems for r in summary.results]
        assert len(fake.injected) >= 4
    stored = pg_rows(pg_url, "SELECT project_id, event_id FROM sentry.events")
    assert len(stored) == len(set(stored))
    assert set(stored) == {
        (e["projectID"], e["eventID"]) for e in organization.visible_events(RETENTION, started)
    }
    assert {row[0] for row in pg_rows(pg_url, "SELECT id FROM sentry.issues")} == {
        i["id"] for i in organization.visible_issues(RETENTION, started)
    }


def test_a_plain_400_is_not_retried(workspace: Workspace, fake: FakeSentry) -> None:
    fake.inject(Fault("/teams/", 400, body={"detail": "Invalid cursor parameter."}, times=5))
    workspace.replication("  teams:\n")
    summary = workspace.run()
    assert summary.exit_code == 1
    assert summary.results[0].problems == ["Invalid cursor parameter."]
    assert len(fake.requests_to("/teams/")) == 1


def test_the_total_wait_for_one_request_is_bounded(workspace: Workspace, fake: FakeSentry) -> None:
    fake.inject(Fault("/teams/", 429, body="slow down", times=50, headers={"Retry-After": "0.6"}))
    workspace.replication("  teams:\n")
    summary = workspace.run(retry=RetryPolicy(attempts=50, max_total_wait=1.0))
    assert summary.exit_code == 1
    assert len(fake.requests_to("/teams/")) == 3  # waited 0.6, then 1.2 >= 1.0: stop
    assert workspace.sleeps.count(0.6) >= 2


def test_a_missing_project_is_skipped_with_a_warning(
    workspace: Workspace,
    fake: FakeSentry,
    organization: FakeOrganization,
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake.inject(
        Fault(
            "/project-0/events/",
            404,
            body={"detail": "The requested resource does not exist"},
            times=1,
        )
    )
    workspace.replication("  events:\n")
    summary = workspace.run()
    assert summary.exit_code == 1 and summary.results[0].status == "partial"
    assert summary.results[0].problems == [
        "project 'project-0' skipped: The requested resource does not exist (404)"
    ]
    assert "project 'project-0' skipped" in caplog.text
