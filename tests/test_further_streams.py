"""The twelve streams beyond Sling's seven, each against the fake Sentry over HTTP: rows,
keys, the named-only rule, their traps, incremental runs and replay from cassettes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from sentry_extract.config.connections import DEFAULT_LOOKBACK
from sentry_extract.config.replication import Overrides, load_replication
from sentry_extract.errors import ConfigError
from sentry_extract.source.catalog import STREAMS
from sentry_extract.source.further_streams import FURTHER_STREAMS, LATE_OUTCOMES
from sentry_extract.source.ratelimit import rate_limit_group
from sentry_extract.source.streams import SLING_STREAMS
from sentry_extract.testing.extras import weight
from sentry_extract.testing.fake_sentry import FakeSentry, ServerSettings
from sentry_extract.testing.organization import FakeOrganization, OrganizationSize

from .helpers import (
    Workspace,
    assert_unique,
    invoke,
    keys,
    named,
    pg_rows,
    sentry_connection,
    served,
)

FURTHER = [spec.name for spec in FURTHER_STREAMS]


# --- selection ---------------------------------------------------------------------------


def test_wildcard_keeps_the_seven_and_named_streams_add_to_it(workspace: Workspace) -> None:
    started = datetime.now(UTC)
    path = workspace.replication(streams="  '*':\n" + named("release_deploys", "org_stats"))
    loaded = load_replication(path, workspace.environ, started)
    names = [stream.name for stream in loaded.streams]
    assert names == [spec.name for spec in SLING_STREAMS] + ["org_stats", "release_deploys"]
    alone = load_replication(workspace.replication(), workspace.environ, started)
    assert [stream.name for stream in alone.streams] == [spec.name for spec in SLING_STREAMS]
    with pytest.raises(ConfigError, match="runs only when named"):
        load_replication(
            workspace.replication(), workspace.environ, started, Overrides(("monitors",))
        )


def test_discover_json_lists_every_stream_with_parent_keys_mode_and_scope(
    cli: CliRunner, fake: FakeSentry, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    monkeypatch.setenv("SENTRY", sentry_connection(fake.base_url))
    result = invoke(cli, "conns", "discover", "SENTRY", "-o", "json")
    assert result.exit_code == 0
    listed = {entry["endpoint"]: entry for entry in json.loads(result.stdout)}
    assert len(listed) == len(STREAMS)
    assert listed["release_deploys"]["parent"] == "release"
    assert listed["release_deploys"]["named_only"] is True
    assert listed["events"]["named_only"] is False
    assert listed["error_index"]["primary_key"] == ["project_id", "id"]
    assert listed["monitor_checkins"]["mode"] == "incremental"
    assert listed["environments"]["mode"] == "full-refresh"
    assert listed["members"]["scope"] == "member:read"
    assert listed["org_stats"]["request"] == "GET /api/0/organizations/{organization}/stats_v2/"


def test_each_parent_is_one_rate_limit_group() -> None:
    deploys = rate_limit_group("organizations/acme/releases/a%40b/deploys/")
    assert deploys == rate_limit_group("organizations/acme/releases/1.0/deploys/")
    assert deploys != rate_limit_group("organizations/acme/releases/1.0/commits/")
    checkins = rate_limit_group("organizations/acme/monitors/nightly/checkins/")
    assert checkins == rate_limit_group("organizations/acme/monitors/hourly/checkins/")
    assert rate_limit_group("organizations/acme/issues/7/tags/browser/values/") == (
        rate_limit_group("organizations/acme/issues/8/tags/release/values/")
    )
    assert rate_limit_group("organizations/acme/issues/7/") == "issue"


# --- every stream, both targets ------------------------------------------------------------


def test_every_further_stream_loads_rows_with_unique_keys(
    workspace: Workspace, fake: FakeSentry
) -> None:
    summary = workspace.run(workspace.replication(streams=named(*FURTHER)))
    statuses = {result.name: result.status for result in summary.results}
    assert set(statuses.values()) == {"ok"}, [(r.name, r.problems) for r in summary.results]
    expected_keys = {
        "org_stats": ["interval", "category", "outcome", "reason"],
        "project_stats": ["day", "project_id", "category", "outcome"],
        "sessions": ["interval", "project", "release", "environment", "session_status"],
        "environments": ["id"],
        "release_deploys": ["id"],
        "release_commits": ["release_version", "id"],
        "monitors": ["id"],
        "monitor_checkins": ["id"],
        "replays": ["id"],
        "user_feedback": ["id"],
        "issue_tag_values": ["issue_id", "key", "value"],
        "error_index": ["project_id", "id"],
    }
    for stream, columns in expected_keys.items():
        assert_unique(workspace.table(stream), columns)


def test_environments_include_hidden_ones(workspace: Workspace, fake: FakeSentry) -> None:
    workspace.run(workspace.replication(streams=named("environments")))
    names = set(workspace.table("environments").column("name").to_pylist())
    assert "legacy-qa" in names and "production" in names
    assert "canary" in names  # used only in a project of another team than the caller's
    request = fake.requests_to("/environments/")[0]
    assert request.param("visibility") == "all" and request.param("project") == "-1"


def test_release_children_carry_their_release_and_survive_odd_versions(
    workspace: Workspace, fake: FakeSentry
) -> None:
    fake.organization.add_release(version="web@2.0.0+build/7")
    workspace.run(workspace.replication(streams=named("release_deploys", "release_commits")))
    versions = {release["version"] for release in fake.organization.releases}
    assert len(fake.requests_to("/deploys/")) == len(versions)  # archived releases included
    assert len(fake.requests_to("/commits/")) == len(versions)
    deploys = workspace.table("release_deploys")
    assert set(deploys.column("release_version").to_pylist()) <= versions
    assert any("web%402.0.0%2Bbuild%2F7" in r.path for r in fake.requests_to("/deploys/"))
    assert all(r.status == 200 for r in fake.requests_to("/releases/"))


def test_usage_is_daily_and_reread_for_late_outcomes(
    workspace: Workspace, fake: FakeSentry
) -> None:
    path = workspace.replication(streams=named("org_stats"))
    first = datetime.now(UTC).replace(microsecond=0)
    workspace.run(path, started=first)
    requests = fake.requests_to("/stats_v2/")
    assert sorted(r.param("field") or "" for r in requests) == [
        "sum(quantity)",
        "sum(times_seen)",
    ]
    assert all(r.status == 200 for r in requests)  # the start is inside the retention
    table = workspace.table("org_stats")
    assert_unique(table, ["interval", "category", "outcome", "reason"])
    days = sorted(set(table.column("interval").to_pylist()))
    assert all(day.hour == 0 and day.minute == 0 for day in days)
    accepted = {
        row["interval"]: row["quantity"]
        for row in table.to_pylist()
        if row["category"] == "error" and row["outcome"] == "accepted"
    }
    today = first.replace(hour=0, minute=0, second=0)
    fake.organization.add_events(5)
    fake.reset_log()
    workspace.run(path, started=first + timedelta(hours=1))
    starts = {r.param("start") for r in fake.requests_to("/stats_v2/")}
    # From where the first run ended, less the lookback, less the days still changing,
    # to a whole day: within the lookback after midnight, that is one day earlier.
    reread = (first - DEFAULT_LOOKBACK - LATE_OUTCOMES).replace(hour=0, minute=0, second=0)
    assert starts == {reread.strftime("%Y-%m-%dT%H:%M:%SZ")}
    again = workspace.table("org_stats")
    assert_unique(again, ["interval", "category", "outcome", "reason"])
    newer = {
        row["interval"]: row["quantity"]
        for row in again.to_pylist()
        if row["category"] == "error" and row["outcome"] == "accepted"
    }
    assert newer[today] == accepted.get(today, 0) + 5


def test_project_usage_and_sessions_flatten_into_daily_rows(
    workspace: Workspace, fake: FakeSentry
) -> None:
    workspace.run(workspace.replication(streams=named("project_stats", "sessions")))
    usage = workspace.table("project_stats")
    assert_unique(usage, ["day", "project_id", "category", "outcome"])
    project_ids = {project["id"] for project in fake.organization.projects}
    assert set(usage.column("project_id").to_pylist()) <= project_ids
    sessions = workspace.table("sessions")
    assert_unique(sessions, ["interval", "project", "release", "environment", "session_status"])
    assert {"healthy", "errored"} <= set(sessions.column("session_status").to_pylist())
    assert all(r.status == 200 for r in fake.requests_to("/sessions/"))


def test_monitor_checkins_read_only_what_is_new(workspace: Workspace, fake: FakeSentry) -> None:
    path = workspace.replication(streams=named("monitor_checkins"))
    first = datetime.now(UTC).replace(microsecond=0)
    workspace.run(path, started=first)
    monitors = len(fake.organization.extras.monitors)
    assert len(fake.requests_to("/checkins/")) == 3 * monitors  # 240 check-ins: 3 pages each
    before = workspace.table("monitor_checkins").num_rows
    added = fake.organization.add_checkins(5)
    fake.reset_log()
    workspace.run(path, started=first + timedelta(hours=1))
    assert len(fake.requests_to("/checkins/")) == monitors  # one page each: the new ones
    table = workspace.table("monitor_checkins")
    assert table.num_rows == before + len(added)
    assert_unique(table, ["id"])


def test_monitors_sharing_a_slug_each_keep_their_own_checkins() -> None:
    """Two `nightly-backup` monitors in two projects: by slug the organization's route
    answers the oldest one twice; by id each monitor's check-ins are read."""
    organization = FakeOrganization(size=OrganizationSize(projects=3))
    newer = organization.add_monitor("nightly-backup", "project-2")
    organization.add_checkins(3, monitor_slug=newer["id"])
    with served(organization, ServerSettings()) as (fake, workspace):
        workspace.run(workspace.replication(streams=named("monitor_checkins")))
        table = workspace.table("monitor_checkins")
        stored = dict(keys(table, "id", "monitor_id"))
        expected = {
            checkin["id"]: monitor_id
            for monitor_id, checkins in organization.extras.checkins.items()
            for checkin in checkins
        }
        assert stored == expected  # none missing, each under its own monitor
        paths = {record.path for record in fake.requests_to("/checkins/")}
        assert f"/api/0/organizations/acme/monitors/{newer['id']}/checkins/" in paths


def test_replays_incremental_by_started_at(workspace: Workspace, fake: FakeSentry) -> None:
    path = workspace.replication(streams=named("replays"))
    first = datetime.now(UTC).replace(microsecond=0)
    workspace.run(path, started=first)
    before = workspace.table("replays").num_rows
    fake.organization.add_replays(3)
    workspace.run(path, started=first + timedelta(minutes=5))
    table = workspace.table("replays")
    assert table.num_rows == before + 3
    assert_unique(table, ["id"])
    fields = fake.requests_to("/replays/")[0].params
    assert ("field", "started_at") in fields and ("sort", "-started_at") in fields


def test_tag_values_of_changed_issues_stop_at_the_cap(
    workspace: Workspace, fake: FakeSentry
) -> None:
    organization = fake.organization
    issue = next(iter(organization.issues))
    organization.set_tag_values(issue, "browser", 1_500)
    path = workspace.replication(streams=named("issue_tag_values"))
    first = datetime.now(UTC).replace(microsecond=0)
    summary = workspace.run(path, started=first)
    result = summary.results[0]  # then the preflight's
    assert result.status == "partial"
    assert "cap of 1,000 rows" in result.problems[0]
    assert "the values seen least recently are not in the table" in result.problems[0]
    table = workspace.table("issue_tag_values")
    assert_unique(table, ["issue_id", "key", "value"])
    browsers = [row for row in table.to_pylist() if row["issue_id"] == issue]
    assert sum(row["key"] == "browser" for row in browsers) == 1_000
    organization.add_events(1, issue_id=issue)
    fake.reset_log()
    workspace.run(path, started=first + timedelta(hours=2))
    asked = {r.path.split("/issues/")[1].split("/")[0] for r in fake.requests_to("/tags/")}
    assert issue in asked and len(asked) < len(organization.issues)


def test_user_feedback_per_project(workspace: Workspace, fake: FakeSentry) -> None:
    workspace.run(workspace.replication(streams=named("user_feedback")))
    table = workspace.table("user_feedback")
    assert_unique(table, ["id"])
    assert len(fake.requests_to("/user-feedback/")) >= len(fake.organization.projects)
    assert set(table.column("project_id").to_pylist()) <= {
        project["id"] for project in fake.organization.projects
    }


def test_user_feedback_keeps_reports_on_resolved_and_ignored_issues() -> None:

    organization = FakeOrganization(size=OrganizationSize(projects=8))
    with served(organization, ServerSettings()) as (fake, workspace):
        workspace.run(workspace.replication(streams=named("user_feedback")))
        table = workspace.table("user_feedback")
        reports = [
            report
            for project in organization.projects
            for report in organization.extras.feedback(project["id"])
        ]
        closed = [
            report
            for report in reports
            if organization.issues[report["issue"]["id"]]["status"] != "unresolved"
        ]
        assert (len(reports), len(closed)) == (23, 14)
        assert sorted(table.column("id").to_pylist()) == sorted(r["id"] for r in reports)
        assert all(r.param("status") == "" for r in fake.requests_to("/user-feedback/"))


def test_further_streams_into_postgres(workspace: Workspace, pg_url: str) -> None:
    workspace.environ["MY_POSTGRES"] = pg_url
    streams = ["org_stats", "sessions", "release_deploys", "monitor_checkins", "error_index"]
    path = workspace.replication(
        streams=named(*streams), object_template="further.{{stream_name}}", target="MY_POSTGRES"
    )
    summary = workspace.run(path)
    assert {result.status for result in summary.results} == {"ok"}
    for stream in streams:
        [(count,)] = pg_rows(pg_url, f"select count(*) from further.{stream}")
        assert count > 0, stream
    [(duplicates,)] = pg_rows(
        pg_url, "select count(*) - count(distinct (project_id, id)) from further.error_index"
    )
    assert duplicates == 0


# --- the org-wide index and the events it saves --------------------------------------------


@pytest.fixture
def busy() -> FakeOrganization:

    return FakeOrganization(size=OrganizationSize(projects=60, issues=120, events=600))


def _hourly_events_requests(
    organization: FakeOrganization, refused: bool, pg_url: str | None = None
) -> tuple[int, int]:
    """Per-project events requests of an hourly run after a first one, with new events
    in 11 of 60 projects and, in 20 others, events the first run read that the lookback
    reads again; and the rows stored against what the fake holds."""
    settings = ServerSettings(explore_refused=refused)
    for project in organization.projects[20:40]:  # inside the next run's lookback
        organization.add_events(1, project_slug=project["slug"], age=timedelta(minutes=10))
    with served(organization, settings) as (fake, workspace):
        path = workspace.replication(streams=named("events"))
        if pg_url is not None:
            workspace.environ["MY_POSTGRES"] = pg_url
            path = workspace.replication(
                streams=named("events"),
                object_template="hourly.{{stream_name}}",
                target="MY_POSTGRES",
            )
        first = datetime.now(UTC).replace(microsecond=0)
        workspace.run(path, started=first)
        for project in organization.projects[:11]:
            organization.add_events(2, project_slug=project["slug"])
        fake.reset_log()
        summary = workspace.run(path, started=first + timedelta(hours=1))
        assert summary.results[0].status == "ok"
        per_project = len([r for r in fake.requests if r.group == "events"])
        if pg_url is None:
            table = workspace.table("events")
            stored = set(keys(table, "project_id", "event_id"))
            assert len(stored) == table.num_rows
        else:
            stored = set(pg_rows(pg_url, "select project_id, event_id from hourly.events"))
        assert stored == set(fake.event_keys())
        return per_project, len(organization.projects)


def test_hourly_events_cost_what_is_new(busy: FakeOrganization) -> None:
    per_project, projects = _hourly_events_requests(busy, refused=False)
    assert projects == 60
    assert per_project <= 11 + 3


def test_hourly_events_cost_what_is_new_into_postgres(busy: FakeOrganization, pg_url: str) -> None:
    per_project, _ = _hourly_events_requests(busy, refused=False, pg_url=pg_url)
    assert per_project <= 11 + 3


def test_hourly_events_read_every_project_when_the_index_is_refused(
    busy: FakeOrganization,
) -> None:
    per_project, projects = _hourly_events_requests(busy, refused=True)
    assert per_project >= projects


@pytest.mark.parametrize(
    "settings",
    [
        ServerSettings(),
        ServerSettings(explore_max_rows=7_000),
        ServerSettings(explore_cap_refuses=True),
        ServerSettings(explore_sampled_above=2_000),
    ],
    ids=["cap-ends-the-list", "a-lower-cap", "cap-then-400", "sampled-above-2000"],
)
def test_error_index_is_exact_past_the_row_cap_and_after_an_incremental_run(
    settings: ServerSettings,
) -> None:
    """12,000 events in two days: one query of the first slice reaches the row cap (the
    list ends there, or the page after it is a 400) and the crawl goes on from its newest
    second; or queries of more than 2,000 rows are sampled, and are asked again in halves."""

    organization = FakeOrganization(size=OrganizationSize(projects=4, events=0))
    for index in range(120):
        project = organization.projects[index % 4]["slug"]
        organization.add_events(100, project_slug=project, age=timedelta(minutes=20 * index))
    with served(organization, settings) as (fake, workspace):
        path = workspace.replication(streams=named("error_index"))
        first = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=1)
        summary = workspace.run(path, started=first)
        assert summary.results[0].status == "ok", summary.results[0].problems
        offsets = [r.param("cursor") or "0:0:0" for r in fake.requests_to("/events/")]
        cap = settings.explore_max_rows
        if settings.explore_sampled_above is None:
            assert any(int(cursor.split(":")[1]) >= cap - 100 for cursor in offsets)  # capped
        table = workspace.table("error_index")
        stored = set(keys(table, "project_id", "id"))
        assert len(stored) == table.num_rows
        assert stored == set(fake.event_keys()) and len(stored) >= 12_000
        organization.add_events(30, project_slug=organization.projects[1]["slug"])
        organization.add_events(5, age=timedelta(minutes=30))  # late, inside the lookback
        fake.reset_log()
        workspace.run(path, started=first + timedelta(hours=1))
        assert len(fake.requests_to("/events/")) == 4  # 335 rows in the last two hours
        table = workspace.table("error_index")
        stored = set(keys(table, "project_id", "id"))
        assert len(stored) == table.num_rows and stored == set(fake.event_keys())


def test_rows_without_their_key_still_load_into_postgres(
    workspace: Workspace, fake: FakeSentry, pg_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """An answer of another shape (a mock server's example: aggregate rows without `id`)
    is stored under an empty key instead of failing on PostgreSQL's primary key."""
    from sentry_extract.testing.fake_sentry import Fault

    example = {"data": [{"count()": 10, "transaction": "foo"}, {"count()": 3}], "meta": {}}
    fake.inject(Fault("/organizations/acme/events/", 200, example, times=1_000))
    workspace.environ["MY_POSTGRES"] = pg_url
    path = workspace.replication(
        streams=named("error_index"), object_template="odd.{{stream_name}}", target="MY_POSTGRES"
    )
    summary = workspace.run(path)
    assert summary.results[0].status == "ok"
    assert pg_rows(pg_url, "select project_id, id from odd.error_index") == [("", "")]
    assert "rows came without a value for project_id, id" in caplog.text


def test_sessions_are_exact_past_the_groups_sentry_keeps(
    workspace: Workspace, fake: FakeSentry
) -> None:
    """840 groups of project, release and environment over 89 days, 14 days a request:
    Sentry keeps the largest 5000 // 14 = 357 and drops the rest without a word. A full
    answer is asked again for fewer days (7: 714 kept, still full; 3: all 840)."""
    organization = fake.organization
    organization.add_session_releases(136)  # 3 projects x 140 releases x 2 environments
    started = datetime.now(UTC).replace(microsecond=0)
    summary = workspace.run(workspace.replication(streams=named("sessions")), started=started)
    assert summary.results[0].status == "ok", summary.results[0].problems
    requests = fake.requests_to("/sessions/")
    assert all(record.status == 200 for record in requests)
    lengths = [_days(record.param("start"), record.param("end")) for record in requests]
    assert lengths[:3] == [14, 7, 3]
    table = workspace.table("sessions")
    assert_unique(table, ["interval", "project", "release", "environment", "session_status"])
    series = organization.extras.session_series()
    hourly_sessions = sum(s.sessions for s in series)
    hourly_users = sum(s.users for s in series)
    daily = table.group_by("interval").aggregate([("sessions", "sum"), ("users", "sum")])
    by_day = {row["interval"]: [row["sessions_sum"], row["users_sum"]] for row in daily.to_pylist()}
    today = started.replace(hour=0, minute=0, second=0)
    full_days = sorted(moment for moment in by_day if moment < today)
    assert len(full_days) == 89
    for moment in full_days:
        first_hour = int(moment.timestamp()) // 3600
        hours = weight(first_hour, first_hour + 24)
        assert by_day[moment] == [hourly_sessions * hours, hourly_users * hours], moment
    groups = table.group_by(["project", "release", "environment"]).aggregate([])
    assert groups.num_rows == 840


def _days(start: str | None, end: str | None) -> int:
    assert start and end
    span = datetime.fromisoformat(end) - datetime.fromisoformat(start)
    return -(-span // timedelta(days=1))


def test_sessions_still_cut_for_one_day_end_partial_and_say_so(
    workspace: Workspace, fake: FakeSentry
) -> None:
    """A day with 5,000 groups or more is cut even alone: its rows are kept, and the
    stream says which are missing instead of ending ok."""
    from sentry_extract.testing.fake_sentry import Fault

    first_day = (datetime.now(UTC) - timedelta(days=89)).strftime("%Y-%m-%dT00:00:00Z")
    full = {
        "start": first_day,
        "end": first_day,
        "intervals": [first_day],
        "groups": [
            {
                "by": {"project": 1, "release": f"r{n}", "environment": "production"},
                "totals": {"sum(session)": 1.0, "count_unique(user)": 1.0},
                "series": {"sum(session)": [1.0], "count_unique(user)": [1.0]},
            }
            for n in range(5_000)
        ],
        "query": "",
    }
    fake.inject(Fault("/sessions/", 200, full, times=4))  # 14, 7, 3, then 1 day
    summary = workspace.run(workspace.replication(streams=named("sessions")))
    result = summary.results[0]
    assert result.status == "partial"
    assert result.problems == [
        "on 1 day Sentry answered only its largest groups, even for that day alone (it keeps "
        "5,000 a day); the rows of the smaller groups of those days are missing"
    ]
    requests = fake.requests_to("/sessions/")
    lengths = [_days(record.param("start"), record.param("end")) for record in requests]
    assert lengths[:4] == [14, 7, 3, 1] and set(lengths[4:]) == {1}
    assert workspace.table("sessions").num_rows >= 5_000


def test_sessions_cut_rule_and_interval_limit_follow_sentry() -> None:
    from sentry_extract.source.series import is_cut, is_over_interval_limit

    def answer(intervals: int, groups: int) -> dict[str, Any]:
        statuses = ("healthy", "errored", "crashed", "abnormal")
        return {
            "intervals": [f"day {n}" for n in range(intervals)],
            "groups": [
                {"by": {"release": f"r{n}", "session.status": status}}
                for n in range(groups)
                for status in statuses
            ],
        }

    assert is_cut(answer(14, 357)) and not is_cut(answer(14, 356))  # statuses aside
    assert is_cut(answer(1, 5_000)) and not is_cut(answer(3, 840))
    assert not is_cut(answer(0, 0)) and not is_cut([])
    start = datetime(2026, 1, 1, tzinfo=UTC)
    assert not is_over_interval_limit(start, start + timedelta(days=1_000))
    assert is_over_interval_limit(start, start + timedelta(days=1_000, hours=1))


def test_the_dry_run_shows_whole_days_for_usage_and_no_range_for_fan_outs(
    cli: CliRunner, fake: FakeSentry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SENTRY", sentry_connection(fake.base_url))
    (tmp_path / "r.yaml").write_text(
        "source: SENTRY\ntarget: LOCAL\ndefaults:\n  object: out/{stream_name}\nstreams:\n"
        + named("org_stats", "monitor_checkins")
    )
    first = invoke(cli, "run", "r.yaml", "--dry-run").stdout.splitlines()
    usage = first[first.index(next(line for line in first if line.startswith("org_stats"))) + 1]
    assert usage.endswith(" (Sentry keeps 90 days, assumed)")  # not "a year, no anchor_date"
    assert invoke(cli, "run", "r.yaml").exit_code == 0
    planned = invoke(cli, "run", "r.yaml", "--dry-run")
    assert planned.exit_code == 0
    lines = planned.stdout.splitlines()
    usage = lines[lines.index(next(line for line in lines if line.startswith("org_stats"))) + 1]
    three_days_back = (datetime.now(UTC) - timedelta(hours=1, days=3)).strftime("%Y-%m-%d")
    assert f"window   {three_days_back}T00:00:00Z to " in usage
    checkins = next(line for line in lines if "/checkins/" in line)
    assert checkins.strip().endswith("/monitors/{monitor}/checkins/")  # no range: a cursor only


def test_cassettes_without_the_org_wide_count_replay_as_every_project() -> None:
    """Cassettes recorded before events asked the org-wide count hold no answer to it:
    the count is then unknown, and every project is read, as when they were recorded."""
    import threading

    from sentry_extract.config.connections import SentryConnection
    from sentry_extract.model.windows import Window
    from sentry_extract.pipeline.connect import build_client
    from sentry_extract.source.cassettes import ReplayTransport
    from sentry_extract.source.client import RequestCounter
    from sentry_extract.source.extract import count_events_by_project

    source = SentryConnection("SENTRY", "acme", "sntryu_test_0123456789abcdef")
    client = build_client(source, threading.Event(), transport=ReplayTransport([]))
    end = datetime(2026, 11, 27, tzinfo=UTC)
    window = Window(end - timedelta(hours=2), end)
    with client:
        assert count_events_by_project(client, "acme", window, RequestCounter("events")) is None


def test_an_org_wide_count_that_is_no_decimal_number_leaves_the_count_unknown() -> None:
    """ "²" passes str.isdigit but is no count: the count is unknown, not a crash."""
    import threading

    from sentry_extract.config.connections import SentryConnection
    from sentry_extract.model.windows import Window
    from sentry_extract.pipeline.connect import build_client
    from sentry_extract.source.client import RequestCounter
    from sentry_extract.source.extract import count_events_by_project
    from sentry_extract.testing.fake_state import DEFAULT_TOKEN, Fault

    organization = FakeOrganization(size=OrganizationSize(projects=2, events=10))
    with served(organization, ServerSettings()) as (fake, _):
        counted = {"data": [{"project.id": 1, "count()": "\u00b2"}], "meta": {}}
        fake.faults.append(Fault("/organizations/acme/events/", 200, counted))
        source = SentryConnection("SENTRY", "acme", DEFAULT_TOKEN, base_url=fake.base_url)
        client = build_client(source, threading.Event())
        end = datetime.now(UTC)
        with client:
            window = Window(end - timedelta(hours=2), end)
            assert count_events_by_project(client, "acme", window, RequestCounter("e")) is None
        assert any("/organizations/acme/events/" in request.path for request in fake.requests)


def test_error_index_keeps_samples_and_says_so_when_every_range_is_sampled() -> None:

    organization = FakeOrganization(size=OrganizationSize(projects=2, events=300))
    settings = ServerSettings(explore_partial=True)
    with served(organization, settings) as (fake, workspace):
        summary = workspace.run(workspace.replication(streams=named("error_index")))
        result = summary.results[0]
        assert result.status == "partial" and "sampled data" in result.problems[0]
        assert workspace.table("error_index").num_rows > 0
        assert len(fake.requests_to("/events/")) < 40  # halving stops: sampling is everywhere


# --- ranges too large ----------------------------------------------------------------------

QUERY_TIMEOUT = {"detail": "Query timeout. Please try with a smaller date range."}


def test_error_index_asks_a_range_that_times_out_again_in_halves(
    workspace: Workspace, fake: FakeSentry
) -> None:
    """A query Sentry cannot answer in time (a 400 whose detail says so) is retried; once
    the attempts are spent, the same start is asked for half the range, and every row is
    read all the same."""
    from sentry_extract.testing.fake_sentry import Fault

    fake.inject(Fault("/organizations/acme/events/", 400, QUERY_TIMEOUT, times=4))
    summary = workspace.run(workspace.replication(streams=named("error_index")))
    assert summary.results[0].status == "ok", summary.results[0].problems
    requests = fake.requests_to("/events/")
    assert all(record.param("start") == requests[0].param("start") for record in requests[:5])
    timed_out, halved = requests[0], requests[4]  # four attempts, then half the range
    assert halved.param("start") == timed_out.param("start")
    start = datetime.fromisoformat(str(timed_out.param("start")))
    asked = datetime.fromisoformat(str(timed_out.param("end"))) - start
    assert datetime.fromisoformat(str(halved.param("end"))) - start == asked / 2
    stored = set(keys(workspace.table("error_index"), "project_id", "id"))
    assert stored == set(fake.event_keys())


def test_sessions_ask_a_range_that_times_out_again_for_fewer_days(
    workspace: Workspace, fake: FakeSentry
) -> None:
    """Release health halves its days for a range too large, as for an answer cut short:
    a query timeout on 14 days is asked again for 7."""
    from sentry_extract.testing.fake_sentry import Fault

    fake.inject(Fault("/sessions/", 400, QUERY_TIMEOUT, times=4))
    summary = workspace.run(workspace.replication(streams=named("sessions")))
    assert summary.results[0].status == "ok", summary.results[0].problems
    requests = fake.requests_to("/sessions/")
    lengths = [_days(record.param("start"), record.param("end")) for record in requests]
    assert [record.status for record in requests[:5]] == [400, 400, 400, 400, 200]
    assert lengths[:5] == [14, 14, 14, 14, 7]
    assert workspace.table("sessions").num_rows > 0


def test_sessions_past_the_intervals_one_request_spans_is_a_range_too_large() -> None:
    """The one 400 fewer days cure is told apart from the others by the range asked."""
    from sentry_extract.errors import BadRequestError, RangeTooLargeError
    from sentry_extract.model.spec import Params
    from sentry_extract.source.series import MAX_INTERVALS, read_sessions

    def refuse(params: Params) -> Any:
        raise BadRequestError("too many intervals", url="sessions/", status=400)

    start = datetime(2026, 1, 1, tzinfo=UTC)
    with pytest.raises(RangeTooLargeError):
        read_sessions(refuse, start, start + timedelta(days=MAX_INTERVALS + 1))
    with pytest.raises(BadRequestError) as refused:
        read_sessions(refuse, start, start + timedelta(days=MAX_INTERVALS))
    assert not isinstance(refused.value, RangeTooLargeError)
