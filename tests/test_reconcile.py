"""Reconcile: the stored issues equal Sentry's, statuses and deletions included."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from sentry_extract.model.windows import Window
from sentry_extract.reading.reconcile import Reconcile
from sentry_extract.source.client import RequestCounter
from sentry_extract.source.retention import Retention
from sentry_extract.testing.fake_sentry import FakeSentry
from sentry_extract.testing.organization import FakeOrganization, OrganizationSize, iso

from .helpers import RETENTION, Clock, Workspace, pg_rows, sentry_connection

NOW = datetime.now(UTC).replace(microsecond=0)


def stored_issues(workspace: Workspace, target: str) -> dict[str, dict[str, Any]]:
    if target == "MY_POSTGRES":
        rows = pg_rows(
            workspace.environ["MY_POSTGRES"],
            "SELECT id, status, _deleted_at, last_seen FROM sentry.issues",
        )
        return {
            row[0]: {"status": row[1], "_deleted_at": row[2], "last_seen": row[3]} for row in rows
        }
    table = workspace.table("issues")
    return {row["id"]: row for row in table.to_pylist()}


@pytest.fixture
def clock() -> Clock:
    return Clock(NOW)


@pytest.fixture
def organization(clock: Clock) -> FakeOrganization:
    size = OrganizationSize(projects=2, issues=40, events=300, history_days=120)
    return FakeOrganization("acme", size, seed=9, clock=clock)


def setup(
    workspace: Workspace, fake: FakeSentry, target: str, every: str
) -> Callable[[datetime], int]:
    workspace.environ["SENTRY"] = sentry_connection(fake.base_url, reconcile_every=every)
    object_template = (
        "sentry.{{stream_name}}"
        if target == "MY_POSTGRES"
        else "file://{folder}/out/{{stream_name}}"
    )
    workspace.replication("  issues:\n", mode="incremental", object_template=object_template,
                          target=target)  # fmt: skip

    def run(started: datetime) -> int:
        summary = workspace.run(started=started)
        assert summary.exit_code == 0, summary.results
        return summary.results[0].deleted

    return run


@pytest.mark.parametrize("target", ["LOCAL", "MY_POSTGRES", "AWS_S3"])
def test_status_changes_and_deletions_are_reconciled(
    pg_workspace: Workspace,
    fake: FakeSentry,
    organization: FakeOrganization,
    clock: Clock,
    target: str,
    request: pytest.FixtureRequest,
) -> None:
    if target == "AWS_S3":
        pg_workspace.use_bucket(request.getfixturevalue("bucket"))
    run = setup(pg_workspace, fake, target, every="0")
    run(NOW)
    visible = sorted(organization.visible_issues(RETENTION), key=lambda i: i["lastSeen"])
    quiet, deleted, merged = visible[0], visible[1], visible[2]  # old: no new event since
    organization.set_issue_status(
        quiet["id"], "resolved" if quiet["status"] != "resolved" else "ignored"
    )
    organization.delete_issue(deleted["id"])
    organization.delete_issue(merged["id"])
    later = NOW + timedelta(hours=2)
    clock.moment = later
    assert run(later) == 2
    stored = stored_issues(pg_workspace, target)
    assert stored[quiet["id"]]["status"] == organization.issues[quiet["id"]]["status"]
    assert stored[deleted["id"]]["_deleted_at"] == later
    assert stored[merged["id"]]["_deleted_at"] == later
    live = {key for key, row in stored.items() if row["_deleted_at"] is None}
    assert live == {issue["id"] for issue in organization.visible_issues(RETENTION)}
    # It comes back (restored in Sentry): live again.
    organization.issues[deleted["id"]] = deleted
    organization.add_events(1, project_slug=deleted["project"]["slug"], issue_id=deleted["id"])
    again = later + timedelta(hours=1)
    clock.moment = again
    run(again)
    assert stored_issues(pg_workspace, target)[deleted["id"]]["_deleted_at"] is None


@pytest.mark.parametrize("target", ["LOCAL", "MY_POSTGRES"])
def test_history_out_of_sentrys_window_is_not_deletion(
    pg_workspace: Workspace,
    fake: FakeSentry,
    organization: FakeOrganization,
    clock: Clock,
    target: str,
) -> None:
    run = setup(pg_workspace, fake, target, every="0")
    aging = organization.visible_issues(RETENTION)[:3]
    for issue in aging:  # last seen 85 days ago: listed now, out of Sentry's window in 10 days
        issue["lastSeen"] = iso(NOW - timedelta(days=85))
    run(NOW)
    before = stored_issues(pg_workspace, target)
    later = NOW + timedelta(days=10)  # issues last seen 80 to 90 days ago fall out of Sentry
    clock.moment = later
    assert run(later) == 0
    after = stored_issues(pg_workspace, target)
    fallen = [
        key
        for key, row in before.items()
        if row["last_seen"] < later - RETENTION  # no longer listed by Sentry
    ]
    assert fallen, "the test needs issues that fall out of the window"
    assert all(after[key]["_deleted_at"] is None for key in fallen)
    assert set(after) == set(before)


def test_reconcile_every_spaces_the_full_reads(
    workspace: Workspace, fake: FakeSentry, clock: Clock
) -> None:
    run = setup(workspace, fake, "LOCAL", every="24h")
    run(NOW)  # the first run reads everything: it counts as a reconcile
    fake.reset_log()
    clock.moment = NOW + timedelta(hours=1)
    run(NOW + timedelta(hours=1))
    hourly = len(fake.requests_to("/issues/"))
    assert hourly == 1  # one slice of the last hour (plus lookback)
    fake.reset_log()
    clock.moment = NOW + timedelta(hours=25)
    run(NOW + timedelta(hours=25))
    assert len(fake.requests_to("/issues/")) > hourly  # a day later: the whole window again


def test_reconcile_off_never_marks(
    workspace: Workspace, fake: FakeSentry, organization: FakeOrganization, clock: Clock
) -> None:
    run = setup(workspace, fake, "LOCAL", every="off")
    run(NOW)
    victim = organization.visible_issues(RETENTION)[0]
    organization.delete_issue(victim["id"])
    clock.moment = NOW + timedelta(days=2)
    assert run(NOW + timedelta(days=2)) == 0
    assert stored_issues(workspace, "LOCAL")[victim["id"]]["_deleted_at"] is None


def test_a_team_removed_from_sentry_is_marked_in_incremental_mode(
    workspace: Workspace, fake: FakeSentry, organization: FakeOrganization, tmp_path: Path
) -> None:
    workspace.replication("  teams:\n", mode="incremental")
    assert workspace.run(started=NOW).exit_code == 0
    removed = organization.teams.pop()
    summary = workspace.run(started=NOW + timedelta(minutes=5))
    assert summary.exit_code == 0 and summary.results[0].deleted == 1
    rows = {row["id"]: row for row in workspace.table("teams").to_pylist()}
    assert rows[removed["id"]]["_deleted_at"] == NOW + timedelta(minutes=5)
    assert sum(row["_deleted_at"] is None for row in rows.values()) == len(organization.teams)


def test_what_another_stream_learns_meanwhile_marks_no_aged_out_issue() -> None:
    """The streams of a run share what Sentry keeps, and another may learn it (or read it
    from its state) while the issues are reconciled. The issues missing from the crawl
    were asked with the 90 days assumed, then found unambiguous with the 30 days learned
    meanwhile: an issue that had only aged out was marked deleted (one run in five of
    `test_a_30_day_organization_runs_every_stream_while_days_age_out`, under load)."""
    retention = Retention(None, None, NOW, clock=lambda: 0.0)
    listed = NOW - timedelta(hours=1)
    stored = {"aged-out": NOW - timedelta(days=31), "listed": listed}
    asked: list[Window] = []

    def stored_keys(column: str, window: Window) -> set[str]:
        if not asked:
            retention.remember(30)  # another stream, from its saved state, meanwhile
        asked.append(window)
        return {key for key, seen in stored.items() if window.start <= seen < window.end}

    scope = SimpleNamespace(
        retention=retention, stream=SimpleNamespace(update_key="last_seen"), started=NOW
    )
    session = SimpleNamespace(
        sink=SimpleNamespace(stored_keys=stored_keys), counter=RequestCounter()
    )
    reconcile = Reconcile(scope, session, {"listed"})  # type: ignore[arg-type]
    assert reconcile._missing(Window(NOW - timedelta(days=120), NOW), listed) == []
    assert retention.days == 30 and len(asked) == 3
