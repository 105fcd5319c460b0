"""Repositories, their commits and the issues' activity, against the fake Sentry over
HTTP: rows and keys, what Sentry hides by default, incremental second runs, PostgreSQL,
and replay from cassettes."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sentry_extract.source.code_streams import CODE_STREAMS
from sentry_extract.testing.fake_sentry import FakeSentry, ServerSettings
from sentry_extract.testing.fake_state import Fault, RequestRecord
from sentry_extract.testing.organization import FakeOrganization, OrganizationSize

from .helpers import Workspace, assert_unique, invoke, named, pg_rows, sentry_connection, served

CODE = [spec.name for spec in CODE_STREAMS]
FIRST = datetime.now(UTC).replace(microsecond=0)


def details_asked(fake: FakeSentry) -> list[RequestRecord]:
    """The requests for one issue's details (`issues/{id}/`)."""
    return [r for r in fake.requests_to("/issues/") if r.group == "issue"]


def issue_of(request: RequestRecord) -> str:
    return request.path.rstrip("/").rsplit("/", 1)[1]


def test_repositories_are_the_active_ones_and_a_disabled_one_is_marked_deleted(
    workspace: Workspace, fake: FakeSentry
) -> None:
    path = workspace.replication(streams="  repositories:\n    mode: incremental\n")
    workspace.run(path, started=FIRST)
    table = workspace.table("repositories")
    code = fake.organization.code
    active = {r["id"] for r in code.repositories if r["status"] == "active"}
    assert set(table.column("id").to_pylist()) == active and len(active) < len(code.repositories)
    assert all(request.param("status") is None for request in fake.requests_to("/repos/"))
    code.disable_repository("32")
    workspace.run(path, started=FIRST + timedelta(hours=1))
    rows = {row["id"]: row for row in workspace.table("repositories").to_pylist()}
    assert rows["32"]["_deleted_at"] is not None and rows["31"]["_deleted_at"] is None


def test_repository_commits_read_only_what_is_new(workspace: Workspace, fake: FakeSentry) -> None:
    code = fake.organization.code
    path = workspace.replication(streams=named("repository_commits"))
    workspace.run(path, started=FIRST)
    table = workspace.table("repository_commits")
    assert_unique(table, ["repository_id", "id"])
    active = [r["id"] for r in code.repositories if r["status"] == "active"]
    assert sorted(set(table.column("repository_id").to_pylist())) == sorted(active)
    assert table.num_rows == sum(len(code.commits[repository]) for repository in active)
    first_requests = len(fake.requests_to("/commits/"))
    assert first_requests == sum(-(-len(code.commits[r]) // 100) for r in active)  # 100 a page
    assert all({name for name, _ in r.params} <= {"cursor"} for r in fake.requests_to("/commits/"))
    added = code.add_commits("32", 3)
    fake.reset_log()
    workspace.run(path, started=FIRST + timedelta(hours=1))
    assert len(fake.requests_to("/commits/")) == len(active)  # the first page of each, no more
    table = workspace.table("repository_commits")
    assert table.num_rows == sum(len(code.commits[repository]) for repository in active)
    assert {commit["id"] for commit in added} <= set(table.column("id").to_pylist())
    assert_unique(table, ["repository_id", "id"])


def test_issue_activity_of_issues_seen_since_the_last_run(
    workspace: Workspace, fake: FakeSentry
) -> None:
    organization = fake.organization
    path = workspace.replication(streams=named("issue_activity"))
    summary = workspace.run(path, started=FIRST)
    assert summary.results[0].status == "ok", summary.results[0].problems
    table = workspace.table("issue_activity")
    assert_unique(table, ["issue_id", "id"])
    rows = table.to_pylist()
    asked = {issue_of(request) for request in details_asked(fake)}
    first_seen = [row for row in rows if row["type"] == "first_seen"]
    assert {row["issue_id"] for row in first_seen} == asked  # id 0 in each: the key is a pair
    assert all(row["id"] == "0" for row in first_seen)
    resolved = [row for row in rows if row["type"] == "set_resolved"]
    assert resolved and all(row["issue_id"] in asked for row in resolved)
    collapsed = {("collapse", "stats"), ("collapse", "tags"), ("collapse", "release")}
    assert all(collapsed <= set(request.params) for request in details_asked(fake))
    # An issue gets an event and is resolved; another is merged into a third.
    issue = next(i for i in organization.issues.values() if i["status"] == "unresolved")
    organization.add_events(1, issue_id=issue["id"])
    organization.set_issue_status(issue["id"], "resolved")
    fake.reset_log()
    workspace.run(path, started=FIRST + timedelta(hours=2))
    again = {issue_of(request) for request in details_asked(fake)}
    assert issue["id"] in again and len(again) < len(asked)  # the issues seen since the last run
    table = workspace.table("issue_activity")
    assert_unique(table, ["issue_id", "id"])
    mine = [row for row in table.to_pylist() if row["issue_id"] == issue["id"]]
    assert [row["type"] for row in mine if row["type"] == "set_resolved"] == ["set_resolved"]


def test_issue_activity_skips_an_id_that_answers_the_issue_it_was_merged_into(
    workspace: Workspace, fake: FakeSentry
) -> None:
    organization = fake.organization
    listed = sorted(organization.visible_issues(timedelta(days=90)), key=lambda i: i["id"])
    survivor, merged = listed[0], listed[1]
    # Merged after the list named it: its details answer the survivor, with its own id.
    body = {**survivor, "activity": organization.code.activity(survivor)}
    fake.faults.append(Fault(f"/issues/{merged['id']}/", 200, body))
    workspace.run(workspace.replication(streams=named("issue_activity")), started=FIRST)
    assert merged["id"] in {issue_of(request) for request in details_asked(fake)}
    rows = workspace.table("issue_activity").to_pylist()
    assert not any(row["issue_id"] == merged["id"] for row in rows)
    assert any(row["issue_id"] == survivor["id"] for row in rows)


def test_issue_activity_says_when_sentry_cut_an_issue_at_100_entries(
    workspace: Workspace, fake: FakeSentry
) -> None:
    organization = fake.organization
    issue = next(iter(organization.issues.values()))
    for number in range(120):
        organization.code.record(issue, "note", {"text": f"comment {number}"})
    organization.add_events(1, issue_id=issue["id"], age=timedelta(minutes=1))
    summary = workspace.run(workspace.replication(streams=named("issue_activity")))
    result = summary.results[0]
    assert result.status == "partial"
    assert "1 lists stopped at Sentry's cap of 100 rows" in result.problems[0]
    mine = [
        r for r in workspace.table("issue_activity").to_pylist() if r["issue_id"] == issue["id"]
    ]
    assert len(mine) == 100 and "first_seen" not in {row["type"] for row in mine}


def documented_time_to_resolve() -> str:
    """The time-to-resolve query of docs/incremental.md, as written there."""
    page = (Path(__file__).parent.parent / "docs" / "incremental.md").read_text()
    section = page.split("### Issue history: time to resolve", 1)[1]
    return section.split("```sql\n", 1)[1].split("```", 1)[0]


def test_code_streams_into_postgres_and_time_to_resolve_in_sql(
    pg_workspace: Workspace, pg_url: str, fake: FakeSentry
) -> None:
    streams = [*CODE, "issues"]
    path = pg_workspace.replication(
        streams=named(*streams), object_template="sentry.{{stream_name}}", target="MY_POSTGRES"
    )
    summary = pg_workspace.run(path, started=FIRST)
    assert {result.status for result in summary.results} == {"ok"}
    for stream in streams:
        [(count,)] = pg_rows(pg_url, f"select count(*) from sentry.{stream}")
        assert count > 0, stream
    by_project = pg_rows(pg_url, documented_time_to_resolve())
    listed = fake.organization.visible_issues(timedelta(days=90))  # what Sentry keeps
    resolved = [issue for issue in listed if issue["status"] == "resolved"]
    assert sum(row[1] for row in by_project) == len(resolved)
    assert all(row[2] > timedelta(0) for row in by_project)
    summary = pg_workspace.run(path, started=FIRST + timedelta(hours=1))
    assert {result.status for result in summary.results} == {"ok"}
    [(duplicates,)] = pg_rows(
        pg_url,
        "select count(*) - count(distinct (repository_id, id)) from sentry.repository_commits",
    )
    assert duplicates == 0


def test_discover_lists_the_code_streams_with_their_scopes(
    cli: CliRunner, fake: FakeSentry, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SENTRY", sentry_connection(fake.base_url))
    result = invoke(cli, "conns", "discover", "SENTRY", "-o", "json")
    assert result.exit_code == 0
    listed = {entry["endpoint"]: entry for entry in json.loads(result.stdout)}
    assert listed["repositories"]["scope"] == "org:read (or org:ci)"
    assert listed["repository_commits"]["parent"] == "repository"
    assert listed["repository_commits"]["mode"] == "incremental"
    assert listed["repository_commits"]["primary_key"] == ["repository_id", "id"]
    assert listed["issue_activity"]["scope"] == "event:read"
    assert listed["issue_activity"]["parent"] == "issue"
    assert listed["issue_activity"]["primary_key"] == ["issue_id", "id"]
    assert all(listed[name]["named_only"] for name in CODE)


def test_a_token_without_org_read_skips_nothing_silently() -> None:
    organization = FakeOrganization(size=OrganizationSize(projects=2, issues=6, events=30))
    settings = ServerSettings(token_scopes={"sntryu_test_events": frozenset({"event:read"})})
    with served(organization, settings) as (fake, workspace):
        workspace.environ["SENTRY"] = sentry_connection(fake.base_url, "sntryu_test_events")
        summary = workspace.run(workspace.replication(streams=named("repositories")))
        result = summary.results[0]
        assert result.status == "failed"
        assert "org:read (or org:ci)" in result.problems[0]


def test_issue_details_are_one_rate_limit_group_and_each_repository_shares_one() -> None:
    from sentry_extract.source.ratelimit import ISSUE_GROUP, rate_limit_group

    # Reconcile and issue_activity ask the same endpoint: Sentry limits it as one.
    assert rate_limit_group("organizations/acme/issues/7/") == ISSUE_GROUP
    commits = rate_limit_group("organizations/acme/repos/31/commits/")
    assert commits == rate_limit_group("organizations/acme/repos/32/commits/") != ISSUE_GROUP
    assert rate_limit_group("organizations/acme/repos/") == "repositories"
