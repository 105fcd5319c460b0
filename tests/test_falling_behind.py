"""A stream that cannot keep up says so, with figures, in the summary and the log."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from sentry_extract.api import RunReport
from sentry_extract.events import event_of
from sentry_extract.testing.fake_sentry import FakeSentry, RateLimit, ServerSettings
from sentry_extract.testing.organization import FakeOrganization, OrganizationSize

from .helpers import Workspace, sentry_connection

LIMITS = {
    "events": RateLimit(limit=4, window=1.0, concurrent=1),
    "default": RateLimit(limit=40, window=1.0, concurrent=25),
}


@pytest.mark.parametrize("target", ["LOCAL", "MY_POSTGRES"])
def test_events_arriving_faster_than_the_limits_allow_are_reported(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, pg_url: str, target: str
) -> None:
    organization = FakeOrganization("acme", OrganizationSize(projects=1, events=50), seed=4)
    with FakeSentry(organization, ServerSettings(rate_limits=LIMITS)) as fake:
        environ = {
            "SENTRY_EXTRACT_HOME": str(tmp_path / "home"),
            "SENTRY": sentry_connection(
                fake.base_url, reconcile_every="off", checkpoint_every="1s"
            ),
            "MY_POSTGRES": pg_url,
        }
        workspace = Workspace(tmp_path, environ, [])
        object_template = (
            "sentry.{{stream_name}}"
            if target == "MY_POSTGRES"
            else "file://{folder}/out/{{stream_name}}"
        )
        workspace.replication(
            "  events:\n", mode="incremental", object_template=object_template, target=target
        )
        first = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=30)
        assert workspace.run(started=first, sleep=None).exit_code == 0
        # A burst: 3,000 events in the last minutes, when the limits let 40 a second through.
        for minute in range(10):
            organization.add_events(300, project_slug="project-0", age=timedelta(minutes=minute))
        second = datetime.now(UTC).replace(microsecond=0)
        with caplog.at_level(logging.INFO, logger="sentry_extract"):
            summary = workspace.run(started=second, sleep=None, deadline=3.0)
    events = summary.results[0]
    assert events.status == "cancelled" and 0 < events.rows < 3_000
    assert events.checkpoints > 0  # what it read is kept: the next run goes on from there
    behind = events.behind
    assert behind is not None
    assert behind["lag_seconds"] > 0
    assert behind["rows_per_minute_read"] > 0 and behind["rows_per_minute_arriving"] > 0
    assert "falling behind: the watermark is" in behind["message"]
    assert "narrow inputs.projects" in behind["message"]
    logged = [event_of(record) for record in caplog.records]
    assert any(name == "falling_behind" and fields["lag_seconds"] > 0 for name, fields in logged)
    report = RunReport.from_summary(summary).to_json()
    assert json.loads(json.dumps(report))["streams"][0]["behind"] == behind


def test_a_stream_that_keeps_up_reports_nothing(workspace: Workspace) -> None:
    workspace.replication("  issues:\n  events:\n", mode="incremental")
    summary = workspace.run()
    assert summary.exit_code == 0
    assert [result.behind for result in summary.results] == [None, None]
