"""Each trap of the Sentry API, through the fake over real HTTP.

Every test here fails on a client that falls into its trap: it compares what was
written with what the organization holds, or checks the request that avoids it.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from sentry_extract.config.replication import Overrides
from sentry_extract.errors import AuthenticationError
from sentry_extract.source.catalog import WILDCARD_NAMES
from sentry_extract.testing.fake_sentry import FULL_PAGE_CAP, FakeSentry, Fault
from sentry_extract.testing.organization import FakeOrganization, OrganizationSize, iso

from .helpers import RETENTION, Workspace, keys, parquet_files, sentry_connection


def run_all(workspace: Workspace) -> None:
    workspace.replication()
    summary = workspace.run()
    assert summary.exit_code == 0, [r.problems for r in summary.results]


def test_every_stream_is_read_completely(
    workspace: Workspace, fake: FakeSentry, organization: FakeOrganization
) -> None:
    started = datetime.now(UTC).replace(microsecond=0)
    workspace.replication()
    summary = workspace.run(started=started)
    assert summary.exit_code == 0
    assert [r.name for r in summary.results] == list(WILDCARD_NAMES)
    assert workspace.table("organizations").column("slug").to_pylist() == ["acme"]
    assert sorted(workspace.table("projects").column("id").to_pylist()) == sorted(
        p["id"] for p in organization.projects
    )
    assert sorted(workspace.table("teams").column("id").to_pylist()) == sorted(
        t["id"] for t in organization.teams
    )
    assert sorted(workspace.table("members").column("id").to_pylist()) == sorted(
        m["id"] for m in organization.members
    )
    assert sorted(workspace.table("releases").column("id").to_pylist()) == sorted(
        r["id"] for r in organization.releases
    )
    expected_issues = {i["id"] for i in organization.visible_issues(RETENTION, started)}
    issue_ids = workspace.table("issues").column("id").to_pylist()
    assert sorted(issue_ids) == sorted(expected_issues)
    expected_events = {
        (e["projectID"], e["eventID"]) for e in organization.visible_events(RETENTION, started)
    }
    event_keys = keys(workspace.table("events"), "project_id", "event_id")
    assert len(event_keys) == len(set(event_keys)) == len(expected_events)
    assert set(event_keys) == expected_events


def test_issues_of_every_status_are_read(workspace: Workspace, fake: FakeSentry) -> None:
    run_all(workspace)
    statuses = set(workspace.table("issues").column("status").to_pylist())
    assert statuses == {"unresolved", "resolved", "ignored"}
    request = fake.requests_to("/issues/")[0]
    assert request.has_param("query") and request.param("query") == ""


def test_issues_and_releases_cover_every_project(
    workspace: Workspace, fake: FakeSentry, organization: FakeOrganization
) -> None:
    mine = organization.my_project_ids()
    assert mine != {p["id"] for p in organization.projects}  # the trap is armed
    run_all(workspace)
    projects = workspace.table("issues").column("project").to_pylist()
    issue_projects = {json.loads(project)["id"] for project in projects}
    assert issue_projects == {p["id"] for p in organization.projects}
    release_projects = {
        json.loads(p)[0]["id"] for p in workspace.table("releases").column("projects").to_pylist()
    }
    assert {str(p) for p in release_projects} - mine
    for path in ("/issues/", "/releases/"):
        assert all(r.param("project") == "-1" for r in fake.requests_to(path))


def test_archived_releases_are_read(workspace: Workspace, fake: FakeSentry) -> None:
    run_all(workspace)
    assert "archived" in set(workspace.table("releases").column("status").to_pylist())
    assert all(
        r.has_param("status") and r.param("status") == "" for r in fake.requests_to("/releases/")
    )


def test_windows_send_start_and_end_together(workspace: Workspace, fake: FakeSentry) -> None:
    run_all(workspace)
    windowed = fake.requests_to("/issues/") + fake.requests_to("/events/")
    assert windowed
    for request in windowed:
        start, end = request.param("start"), request.param("end")
        assert start and end and start.endswith("Z") and end.endswith("Z")
        assert request.param("statsPeriod") is None


def test_short_and_empty_issue_pages_do_not_end_the_crawl(tmp_path: Path) -> None:
    # 260 issues, the 120 most recent of them phantoms: the search finds them, the page
    # drops them, so the first page is empty and the second short, with results="true".
    organization = FakeOrganization(
        "acme", OrganizationSize(projects=2, issues=260, events=300, phantom_every=0), seed=5
    )
    newest = sorted(organization.issues.values(), key=lambda i: i["lastSeen"], reverse=True)
    organization.phantoms.update(issue["id"] for issue in newest[:120])
    # All in the last hours, so that one slice holds them: 120 phantoms, then 30 real ones.
    now = datetime.now(UTC)
    for rank, issue in enumerate(newest[:150]):
        issue["lastSeen"] = iso(now - timedelta(minutes=rank + 1))
    with FakeSentry(organization) as fake:
        workspace = Workspace(
            tmp_path,
            {
                "SENTRY_EXTRACT_HOME": str(tmp_path / "home"),
                "SENTRY": sentry_connection(fake.base_url),
            },
            [],
        )
        workspace.replication("  issues:\n")
        assert workspace.run().exit_code == 0
        requests = fake.requests_to("/issues/")
    # The trap was armed: in one slice, an empty first page, then a short one.
    slices: dict[tuple[str | None, str | None], list[int]] = {}
    for request in requests:
        slices.setdefault((request.param("start"), request.param("end")), []).append(request.rows)
    assert any(len(rows) > 1 and rows[0] == 0 and 0 < rows[1] < 100 for rows in slices.values()), (
        slices
    )
    expected = {i["id"] for i in organization.visible_issues(RETENTION)}
    assert set(workspace.table("issues").column("id").to_pylist()) == expected


def test_last_page_with_a_next_link_stops_without_another_request(
    workspace: Workspace, fake: FakeSentry
) -> None:
    run_all(workspace)
    teams = fake.requests_to("/teams/")
    assert len(teams) == 1  # one page, its next link says results="false"


def test_cursor_is_sent_with_our_own_url_and_parameters(
    workspace: Workspace, fake: FakeSentry
) -> None:
    run_all(workspace)
    pages = [r for r in fake.requests_to("/events/") if r.has_param("cursor")]
    assert pages, "no second page was read"
    for request in pages:
        # The Link URLs name another host and drop parameters: they must not be followed.
        assert request.param("full") == "true"
        assert request.param("start") and request.param("end")


def test_a_repeated_cursor_stops_with_an_error(workspace: Workspace, fake: FakeSentry) -> None:
    link = (
        '<http://x/>; rel="previous"; results="false"; cursor="0:0:1", '
        '<http://x/>; rel="next"; results="true"; cursor="0:100:0"'
    )
    fake.inject(
        Fault(
            "/teams/",
            200,
            body=[{"id": "1", "slug": "a", "name": "A"}],
            times=5,
            headers={"Link": link},
        )
    )
    workspace.replication("  teams:\n")
    summary = workspace.run()
    result = summary.results[0]
    assert result.status == "failed"
    assert "a second time" in result.problems[0]
    assert len(fake.requests_to("/teams/")) == 2


def test_events_are_read_with_full_payloads_through_capped_pages(
    workspace: Workspace, fake: FakeSentry, organization: FakeOrganization
) -> None:
    run_all(workspace)
    requests = fake.requests_to("/events/")
    assert all(r.param("full") == "true" for r in requests)
    assert max(r.rows for r in requests) == FULL_PAGE_CAP  # capped pages, results still true
    table = workspace.table("events")
    assert all(entry and "stacktrace" in entry for entry in table.column("entries").to_pylist())
    assert table.num_rows == len(organization.visible_events(RETENTION))


def test_events_arriving_during_the_crawl_cause_no_duplicate_and_no_gap(
    workspace: Workspace, fake: FakeSentry, organization: FakeOrganization
) -> None:
    started = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=1)
    expected = {
        (e["projectID"], e["eventID"]) for e in organization.visible_events(RETENTION, started)
    }

    def add_events(record: object) -> None:
        if "/events/" in getattr(record, "path", ""):
            organization.add_events(3, project_slug="project-0")
            organization.add_events(2, project_slug="project-1", age=timedelta(seconds=0))

    fake.on_request = add_events
    workspace.replication("  events:\n")
    assert workspace.run(started=started).exit_code == 0
    got = keys(workspace.table("events"), "project_id", "event_id")
    assert len(got) == len(set(got))
    assert set(got) == expected


def test_same_event_id_in_two_projects_gives_two_rows(
    workspace: Workspace, organization: FakeOrganization
) -> None:
    first, second = organization.projects[0]["id"], organization.projects[1]["id"]
    event = dict(organization.events[first][0])
    event["projectID"] = second
    organization.events[second].append(event)
    workspace.replication("  events:\n    primary_key: [event_id]\n")
    assert workspace.run().exit_code == 0
    table = workspace.table("events")
    matching = [k for k in keys(table, "project_id", "event_id") if k[1] == event["eventID"]]
    assert sorted(matching) == sorted([(first, event["eventID"]), (second, event["eventID"])])


def test_no_page_size_above_100_and_never_all_projects(
    workspace: Workspace, fake: FakeSentry
) -> None:
    run_all(workspace)
    for request in fake.requests:
        assert int(request.param("per_page") or 0) <= 100
        assert not request.has_param("all_projects")
        assert request.status == 200
    assert all(r.param("limit") == "100" for r in fake.requests_to("/issues/"))


def test_history_older_than_retention_is_clamped_not_failed(
    workspace: Workspace, organization: FakeOrganization
) -> None:
    workspace.environ["SENTRY"] = workspace.environ["SENTRY"].replace(
        '"rate_limit": 0', '"rate_limit": 0, "anchor_date": "2020-01-01"'
    )
    run_all(workspace)
    assert workspace.table("events").num_rows == len(organization.visible_events(RETENTION))


def test_429_with_a_bare_string_is_retried_after_the_reset(
    workspace: Workspace, fake: FakeSentry
) -> None:
    reset = int(datetime.now(UTC).timestamp()) + 2
    fake.inject(
        Fault(
            "/members/",
            429,
            body="You are attempting to use this endpoint too "
            "frequently. Limit is 60 requests in 60 seconds",
            times=1,
            headers={"X-Sentry-Rate-Limit-Reset": str(reset)},
        )
    )
    workspace.replication("  members:\n")
    summary = workspace.run()
    assert summary.exit_code == 0
    assert summary.results[0].retries == 1
    assert 0.5 < workspace.sleeps[0] <= 2.5  # waited for the reset, not a blind backoff


@pytest.mark.parametrize("status", [500, 502, 503])
def test_server_errors_are_retried(workspace: Workspace, fake: FakeSentry, status: int) -> None:
    fake.inject(Fault("/projects/", status, body={"detail": "Internal Error"}, times=2))
    workspace.replication("  projects:\n")
    summary = workspace.run()
    assert summary.exit_code == 0
    assert summary.results[0].retries == 2
    assert summary.results[0].rows == 3


def test_403_stops_the_stream_without_retrying(workspace: Workspace, fake: FakeSentry) -> None:
    fake.inject(
        Fault(
            "/members/",
            403,
            body={"detail": "You do not have permission to perform this action."},
            times=1,
        )
    )
    workspace.replication("  members:\n  teams:\n")
    summary = workspace.run()
    by_name = {r.name: r for r in summary.results}
    assert by_name["members"].status == "failed"
    assert "member:read" in by_name["members"].problems[0]
    assert by_name["teams"].status == "ok"
    assert len(fake.requests_to("/members/")) == 1
    assert summary.exit_code == 1


def test_a_rejected_token_stops_before_any_stream(workspace: Workspace, fake: FakeSentry) -> None:
    workspace.environ["SENTRY"] = sentry_connection(fake.base_url, token="sntryu_test_rejected")
    workspace.replication()
    with pytest.raises(AuthenticationError, match=r"the token was rejected by .* \(401\)"):
        workspace.run()
    assert len(fake.requests) == 1
    assert not (workspace.folder / "out").exists()


def test_a_401_during_the_run_stops_every_stream(workspace: Workspace, fake: FakeSentry) -> None:
    fake.settings.latency = 0.02
    fake.inject(Fault("/issues/", 401, body={"detail": "Invalid token"}, times=1))
    workspace.replication()
    summary = workspace.run()
    assert summary.exit_code == 1
    assert summary.fatal is not None and "rejected" in summary.fatal
    by_name = {r.name: r for r in summary.results}
    assert by_name["issues"].status == "failed"
    assert by_name["events"].status == "cancelled"
    assert not parquet_files(workspace.folder / "out" / "events")


def test_a_forbidden_project_is_skipped_in_incremental_mode(
    workspace: Workspace, fake: FakeSentry, organization: FakeOrganization
) -> None:
    fake.settings.forbidden_projects = frozenset({"project-1"})
    workspace.replication("  events:\n")
    summary = workspace.run()
    result = summary.results[0]
    assert result.status == "partial" and summary.exit_code == 1
    assert "project-1" in result.problems[0]
    projects = set(workspace.table("events").column("project_id").to_pylist())
    assert organization.project("project-1")["id"] not in projects
    assert len(projects) == 2


def test_streams_run_side_by_side_within_the_in_flight_cap(
    workspace: Workspace, fake: FakeSentry
) -> None:
    fake.settings.latency = 0.05
    workspace.replication()
    assert workspace.run(overrides=Overrides()).exit_code == 0
    assert fake.max_in_flight["all"] == 2  # concurrency used, and never above the default cap of 2


def test_projects_input_limits_events_and_reports_unknown_slugs(
    workspace: Workspace, fake: FakeSentry, organization: FakeOrganization
) -> None:
    workspace.environ["SENTRY"] = sentry_connection(
        fake.base_url, projects=["project-2", "no-such-project"]
    )
    workspace.replication("  events:\n")
    summary = workspace.run()
    result = summary.results[0]
    assert result.status == "partial" and summary.exit_code == 1
    assert result.problems == ["project 'no-such-project' is not in organization 'acme'; skipped"]
    assert set(workspace.table("events").column("project_id").to_pylist()) == {
        organization.project("project-2")["id"]
    }
    assert {r.path.split("/")[5] for r in fake.requests_to("/events/")} == {"project-2"}
