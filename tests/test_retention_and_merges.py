"""Exact on Sentry's edges: issues merged into others, and organizations that keep less
than 90 days (Sentry's Developer plan keeps 30; a self-hosted server what it is told)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from sentry_extract.pipeline.results import RunSummary
from sentry_extract.source.explore_streams import EXPLORE_STREAMS
from sentry_extract.source.further_streams import FURTHER_STREAMS
from sentry_extract.testing.fake_sentry import FakeSentry, Fault, ServerSettings
from sentry_extract.testing.organization import FakeOrganization, OrganizationSize, Row, iso

from .helpers import Clock, Workspace, pg_rows, sentry_connection

NOW = datetime.now(UTC).replace(microsecond=0)
TARGETS = ["LOCAL", "MY_POSTGRES"]


@dataclass
class Sandbox:
    """A clocked organization behind a fake Sentry, and a workspace writing to a target."""

    organization: FakeOrganization
    fake: FakeSentry
    workspace: Workspace
    clock: Clock
    target: str

    def replicate(self, streams: str, **inputs: Any) -> None:
        self.workspace.environ["SENTRY"] = sentry_connection(self.fake.base_url, **inputs)
        template = (
            "sentry.{{stream_name}}"
            if self.target == "MY_POSTGRES"
            else "file://{folder}/out/{{stream_name}}"
        )
        self.workspace.replication(
            streams, mode="incremental", object_template=template, target=self.target
        )

    def run_at(self, moment: datetime) -> RunSummary:
        self.clock.moment = moment
        summary = self.workspace.run(started=moment)
        problems = [(r.name, r.status, r.problems) for r in summary.results if r.problems]
        assert summary.exit_code == 0, problems
        assert {r.status for r in summary.results} <= {"ok"}, problems
        return summary

    def issues(self) -> dict[str, dict[str, Any]]:
        columns = ("id", "status", "count", "_deleted_at", "merged_into_id")
        if self.target == "MY_POSTGRES":
            rows = pg_rows(
                self.workspace.environ["MY_POSTGRES"],
                f"SELECT {', '.join(columns)} FROM sentry.issues",
            )
            return {row[0]: dict(zip(columns, row, strict=True)) for row in rows}
        table = self.workspace.table("issues").select(list(columns))
        return {row["id"]: row for row in table.to_pylist()}

    def live(self, retention: timedelta) -> list[Row]:
        """Sentry's issues, oldest first."""
        issues = self.organization.visible_issues(retention)
        return sorted(issues, key=lambda issue: issue["lastSeen"])


@pytest.fixture
def sandbox(tmp_path: Path, request: pytest.FixtureRequest, pg_url: str) -> Iterator[Sandbox]:
    target, retention_days = request.param
    clock = Clock(NOW)
    size = OrganizationSize(projects=2, issues=40, events=300, history_days=120)
    organization = FakeOrganization("acme", size, seed=11, clock=clock)
    settings = ServerSettings(retention=timedelta(days=retention_days))
    with FakeSentry(organization, settings) as fake:
        environ = {"SENTRY_EXTRACT_HOME": str(tmp_path / "home"), "MY_POSTGRES": pg_url}
        workspace = Workspace(tmp_path, environ, [])
        if target == "AWS_S3":
            workspace.use_bucket(request.getfixturevalue("bucket"))
        yield Sandbox(organization, fake, workspace, clock, target)


# --- merges ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "sandbox", [(t, 90) for t in [*TARGETS, "AWS_S3"]], indirect=True, ids=[*TARGETS, "AWS_S3"]
)
def test_merged_issues_name_the_issue_they_went_into_and_chains_end_at_the_survivor(
    sandbox: Sandbox,
) -> None:
    sandbox.replicate("  issues:\n", reconcile_every="0")
    sandbox.run_at(NOW)
    first, second, third, fourth, fifth, sixth, seventh = (
        issue["id"] for issue in sandbox.live(timedelta(days=90))[:7]
    )
    sandbox.organization.merge_issues([first], second)
    sandbox.organization.merge_issues([third], fourth)
    later = NOW + timedelta(hours=2)
    summary = sandbox.run_at(later)
    assert summary.results[0].deleted == 2
    stored = sandbox.issues()
    for merged, survivor in ((first, second), (third, fourth)):
        assert stored[merged]["_deleted_at"] == later
        assert stored[merged]["merged_into_id"] == survivor
        assert stored[survivor]["_deleted_at"] is None
        assert stored[survivor]["merged_into_id"] is None
        assert int(stored[survivor]["count"]) == int(sandbox.organization.issues[survivor]["count"])
    # A chain over two runs (third into fourth, then fourth into fifth), and one inside a
    # run (sixth into seventh into fifth): every merged row names the survivor.
    sandbox.organization.merge_issues([fourth], fifth)
    sandbox.organization.merge_issues([sixth], seventh)
    sandbox.organization.merge_issues([seventh], fifth)
    last = later + timedelta(hours=1)
    assert sandbox.run_at(last).results[0].deleted == 3
    stored = sandbox.issues()
    assert stored[third]["merged_into_id"] == fifth
    assert stored[third]["_deleted_at"] == later  # stamped once, when it went
    for merged in (fourth, sixth, seventh):
        assert (stored[merged]["_deleted_at"], stored[merged]["merged_into_id"]) == (last, fifth)
    live = {key for key, row in stored.items() if row["_deleted_at"] is None}
    assert live == {issue["id"] for issue in sandbox.live(timedelta(days=90))}


# --- retention --------------------------------------------------------------------------------


def _age(issue: Row, moment: datetime) -> None:
    issue["lastSeen"] = iso(moment)
    issue["firstSeen"] = min(issue["firstSeen"], issue["lastSeen"])


@pytest.mark.parametrize("sandbox", [(t, 30) for t in TARGETS], indirect=True, ids=TARGETS)
def test_a_30_day_organization_runs_every_stream_while_days_age_out(sandbox: Sandbox) -> None:
    further = (*FURTHER_STREAMS, *EXPLORE_STREAMS)
    streams = "  '*':\n" + "".join(f"  {spec.name}:\n" for spec in further)
    sandbox.replicate(streams, reconcile_every="0")
    retention = timedelta(days=30)
    live = sandbox.live(retention)
    aging = live[:3]
    for issue in aging:  # listed now, out of what Sentry keeps in two days
        _age(issue, NOW - timedelta(days=29, hours=6))
    first = sandbox.run_at(NOW)
    assert len(first.results) == 22
    probes = [r for r in sandbox.fake.requests_to("/stats_v2/") if r.status == 400]
    assert len(probes) <= 10  # the 90 days asked once, then what Sentry keeps, found
    deleted, merged, survivor = (issue["id"] for issue in live[-3:])
    sandbox.organization.delete_issue(deleted)
    sandbox.organization.merge_issues([merged], survivor)
    moment = NOW + timedelta(days=2)
    for hour in range(3):  # hourly runs, the reconcile in each
        sandbox.run_at(moment + timedelta(hours=hour))
    stored = sandbox.issues()
    for issue in aging:  # aged out of Sentry: history, kept live
        assert stored[issue["id"]]["_deleted_at"] is None
    assert stored[deleted]["_deleted_at"] == moment
    assert (stored[merged]["_deleted_at"], stored[merged]["merged_into_id"]) == (moment, survivor)
    still = {issue["id"] for issue in sandbox.live(retention)}
    marked = {key for key, row in stored.items() if row["_deleted_at"] is not None}
    assert marked == {deleted, merged} and still <= set(stored)
    sandbox.fake.reset_log()
    sandbox.run_at(moment + timedelta(hours=5))
    refused = [r for r in sandbox.fake.requests if r.status == 400]
    assert refused == []  # what it learned is kept: nothing is asked too early again


@pytest.mark.parametrize("sandbox", [("LOCAL", 30)], indirect=True, ids=["LOCAL"])
def test_the_learned_retention_is_kept_in_state_and_the_input_overrides_it(
    sandbox: Sandbox,
) -> None:
    sandbox.replicate("  org_stats:\n  issues:\n", reconcile_every="0")
    sandbox.run_at(NOW)
    state = json.loads(
        (sandbox.workspace.folder / "out" / "org_stats" / "_sentry_extract_state.json").read_text()
    )
    assert [entry["state"]["retention_days"] for entry in state["streams"].values()] == [30]
    oldest = min(
        r.param("start") or "" for r in sandbox.fake.requests_to("/stats_v2/") if r.status == 200
    )
    assert oldest >= iso(NOW - timedelta(days=30))
    # A server whose answers do not tell (stats forbidden): inputs.retention_days says it.
    sandbox.workspace.folder.joinpath("out").rename(sandbox.workspace.folder / "before")
    sandbox.fake.inject(Fault("/stats_v2/", 403, {"detail": "forbidden"}, times=100))
    sandbox.replicate("  issues:\n", reconcile_every="0", retention_days=30)
    aging = sandbox.live(timedelta(days=30))[:2]
    for issue in aging:
        _age(issue, NOW - timedelta(days=29, hours=12))
    sandbox.run_at(NOW)
    sandbox.fake.reset_log()
    sandbox.run_at(NOW + timedelta(days=1))
    assert sandbox.fake.requests_to("/stats_v2/") == []  # told, not asked
    stored = sandbox.issues()
    assert all(stored[issue["id"]]["_deleted_at"] is None for issue in aging)


@pytest.mark.parametrize("sandbox", [(t, 90) for t in TARGETS], indirect=True, ids=TARGETS)
def test_an_issue_deleted_near_the_retention_edge_is_marked(sandbox: Sandbox) -> None:
    """The soak's extra live row: a deleted issue last seen in the oldest day Sentry keeps
    was never checked (a day of margin), so it stayed live."""
    sandbox.replicate("  issues:\n", reconcile_every="0")
    edge, aged = sandbox.live(timedelta(days=90))[:2]
    _age(edge, NOW - timedelta(days=89, hours=12))
    _age(aged, NOW - timedelta(days=89, hours=23, minutes=30))
    sandbox.run_at(NOW)
    sandbox.organization.delete_issue(edge["id"])
    later = NOW + timedelta(hours=1)  # `aged` is out of Sentry's 90 days now
    sandbox.run_at(later)
    stored = sandbox.issues()
    assert stored[edge["id"]]["_deleted_at"] == later
    assert stored[aged["id"]]["_deleted_at"] is None


def test_a_failed_stream_is_not_called_behind(workspace: Workspace, fake: FakeSentry) -> None:
    """org_stats failing on its first request is a failure, said as one, not a lag."""
    fake.inject(Fault("/stats_v2/", 500, {"detail": "Internal error"}, times=100))
    summary = workspace.run(workspace.replication("  org_stats:\n"))
    result = summary.results[0]
    assert result.status == "failed" and "500" in " ".join(result.problems)
    assert result.behind is None
