"""The fake's endpoints beyond the seven streams, and their traps, over real HTTP.

Each answer is checked against Sentry's own description of the endpoint
(`tests/contract/sentry-openapi-endpoints.json`, see tests/contract/README.md).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from openapi_core import OpenAPI
from openapi_core.testing import MockRequest, MockResponse

from sentry_extract.testing.fake_sentry import (
    DEFAULT_TOKEN,
    FakeSentry,
    FaultRates,
    RateLimit,
    ServerSettings,
)
from sentry_extract.testing.fake_state import FakeState
from sentry_extract.testing.organization import FakeOrganization, OrganizationSize

DESCRIPTION = Path(__file__).parent / "contract" / "sentry-openapi-endpoints.json"
HOST = "https://us.sentry.io"
ORG = "/api/0/organizations/acme/"


@pytest.fixture(scope="module")
def api() -> OpenAPI:
    return OpenAPI.from_dict(json.loads(DESCRIPTION.read_text()))


@pytest.fixture
def client(fake: FakeSentry) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {DEFAULT_TOKEN}"}
    with httpx.Client(base_url=fake.base_url, headers=headers, timeout=30) as session:
        yield session


def get(client: httpx.Client, path: str, **params: Any) -> httpx.Response:
    return client.get(path, params=params)


def valid(api: OpenAPI, response: httpx.Response) -> Any:
    """The body of a 200, once the description's schema accepts it."""
    assert response.status_code == 200, response.text
    api.validate_response(
        MockRequest(HOST, "get", response.request.url.raw_path.decode().split("?")[0]),
        MockResponse(response.content, status_code=200, content_type="application/json"),
    )
    return response.json()


def detail(response: httpx.Response, status: int = 400) -> str:
    assert response.status_code == status, response.text
    text: str = response.json()["detail"]
    return text


def next_link(response: httpx.Response) -> dict[str, str]:
    return response.links["next"]


def day(days_ago: int) -> datetime:
    return (datetime.now(UTC) - timedelta(days=days_ago)).replace(
        hour=0, minute=0, second=0, microsecond=0
    )


def stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


# --- every route answers what the description says ----------------------------------------


def test_every_new_route_answers_what_the_description_says(
    api: OpenAPI, client: httpx.Client, organization: FakeOrganization
) -> None:
    issue = next(iter(organization.issues))
    version = quote(organization.releases[0]["version"], safe="")
    checks = [
        ("stats_v2/", {"field": "sum(quantity)", "groupBy": ["outcome", "category"]}),
        ("stats-summary/", {"field": "sum(quantity)", "project": "-1"}),
        ("sessions/", {"field": ["sum(session)", "count_unique(user)"], "groupBy": "project"}),
        ("environments/", {}),
        (f"releases/{version}/deploys/", {}),
        (f"releases/{version}/commits/", {}),
        ("monitors/", {"project": "-1"}),
        ("monitors/hourly-sync/checkins/", {}),
        ("replays/", {"project": "-1"}),
        (f"issues/{issue}/tags/browser/values/", {}),
        ("events/", {"dataset": "errors", "field": ["id", "timestamp"], "project": "-1"}),
        ("events/", {"dataset": "errors", "field": ["project.id", "count()"], "project": "-1"}),
    ]
    for path, params in checks:
        valid(api, get(client, ORG + path, **params))
    for number in range(12):  # deploys and commits differ by release
        version = quote(organization.releases[number]["version"], safe="")
        valid(api, get(client, f"{ORG}releases/{version}/deploys/"))
        valid(api, get(client, f"{ORG}releases/{version}/commits/"))
    body = valid(api, get(client, "/api/0/projects/acme/project-0/user-feedback/", status=""))
    assert body


def test_each_route_is_limited_on_its_own(organization: FakeOrganization) -> None:
    limits = {"default": RateLimit(limit=40, window=1.0, concurrent=25)}
    with FakeSentry(organization, ServerSettings(rate_limits=limits)) as fake:
        headers = {"Authorization": f"Bearer {DEFAULT_TOKEN}"}
        for path in ("environments/", "monitors/", "replays/"):
            response = httpx.get(fake.base_url + ORG + path, headers=headers)
            assert response.headers["X-Sentry-Rate-Limit-Remaining"] == "39"
        groups = {record.group for record in fake.requests}
    assert groups == {"environments", "monitors", "replays"}


def test_a_token_without_the_scope_is_refused(organization: FakeOrganization) -> None:
    token = "sntryu_test_releases_only"
    settings = ServerSettings(token_scopes={token: frozenset({"project:releases"})})
    with FakeSentry(organization, settings) as fake:
        headers = {"Authorization": f"Bearer {token}"}
        refused = httpx.get(fake.base_url + ORG + "environments/", headers=headers)
        version = quote(organization.releases[0]["version"], safe="")
        allowed = httpx.get(f"{fake.base_url}{ORG}releases/{version}/deploys/", headers=headers)
    assert refused.status_code == 403
    assert allowed.status_code == 200


# --- usage: stats_v2 and stats-summary ----------------------------------------------------


def test_stats_v2_refuses_what_sentry_refuses(client: httpx.Client) -> None:
    path = ORG + "stats_v2/"
    assert "field" in detail(get(client, path, groupBy="outcome"))
    assert "field" in detail(get(client, path, field="count()", groupBy="outcome"))
    assert "groupBy" in detail(get(client, path, field="sum(quantity)"))
    assert "groupBy" in detail(get(client, path, field="sum(quantity)", groupBy="release"))
    for interval in ("30m", "5h", "2d", "1w", "hourly"):
        wrong = get(client, path, field="sum(quantity)", groupBy="outcome", interval=interval)
        assert "interval" in detail(wrong), interval
    for interval in ("1h", "6h", "60m", "1d"):
        fine = get(client, path, field="sum(quantity)", groupBy="outcome", interval=interval)
        assert fine.status_code == 200, interval
        assert "Link" not in fine.headers
    half = get(client, path, field="sum(quantity)", groupBy="outcome", start=stamp(day(3)))
    assert "start and end" in detail(half)


def test_stats_v2_refuses_a_start_older_than_the_retention(client: httpx.Client) -> None:
    """Unlike the lists, which clamp silently."""
    params = {"field": "sum(quantity)", "groupBy": "outcome", "interval": "1d"}
    old = get(client, ORG + "stats_v2/", **params, start=stamp(day(91)), end=stamp(day(80)))
    assert detail(old) == "Invalid date range. Please try a more recent date range."
    recent = get(client, ORG + "stats_v2/", **params, start=stamp(day(89)), end=stamp(day(80)))
    assert recent.status_code == 200
    assert recent.json()["intervals"][0] == stamp(day(89))


def test_stats_v2_counts_the_accepted_errors_of_each_interval(
    client: httpx.Client, organization: FakeOrganization
) -> None:
    params = {
        "field": "sum(quantity)",
        "groupBy": ["category", "outcome"],
        "interval": "1d",
        "start": stamp(day(20)),
        "end": stamp(day(-1)),
    }
    body = get(client, ORG + "stats_v2/", **params).json()
    starts = [datetime.fromisoformat(text.replace("Z", "+00:00")) for text in body["intervals"]]
    assert starts[0] == day(20)
    assert all(b - a == timedelta(days=1) for a, b in itertools.pairwise(starts))
    errors = next(
        g for g in body["groups"] if g["by"] == {"category": "error", "outcome": "accepted"}
    )
    expected = [
        sum(
            1
            for events in organization.events.values()
            for event in events
            if start <= datetime.fromisoformat(event["dateCreated"]) < start + timedelta(days=1)
        )
        for start in starts
    ]
    assert errors["series"]["sum(quantity)"] == expected
    assert errors["totals"]["sum(quantity)"] == sum(expected)
    kinds = {(g["by"]["category"], g["by"]["outcome"]) for g in body["groups"]}
    assert ("attachment", "client_discard") not in kinds  # groups of zeros are left out
    attachments = next(
        g for g in body["groups"] if g["by"] == {"category": "attachment", "outcome": "accepted"}
    )
    assert attachments["totals"]["sum(quantity)"] > 10_000_000  # bytes

    organization.add_events(5)
    again = get(client, ORG + "stats_v2/", **params).json()
    errors_again = next(
        g for g in again["groups"] if g["by"] == {"category": "error", "outcome": "accepted"}
    )
    assert errors_again["series"]["sum(quantity)"][-1] == expected[-1] + 5
    seen = get(client, ORG + "stats_v2/", **{**params, "field": "sum(times_seen)"}).json()
    attached = next(
        g for g in seen["groups"] if g["by"] == {"category": "attachment", "outcome": "accepted"}
    )
    assert attached["totals"]["sum(times_seen)"] < attachments["totals"]["sum(quantity)"]


def test_stats_v2_by_project_collapses_the_series_into_one_total(client: httpx.Client) -> None:
    params = {"field": "sum(quantity)", "interval": "1d", "category": "transaction"}
    body = get(client, ORG + "stats_v2/", groupBy=["project", "outcome"], **params).json()
    assert body["groups"]
    for group in body["groups"]:
        assert set(group["by"]) == {"project", "outcome"}
        assert isinstance(group["by"]["project"], int)
        series = group["series"]["sum(quantity)"]
        assert series[:-1] == [0] * (len(series) - 1)
        assert series[-1] == group["totals"]["sum(quantity)"]
    by_outcome = get(client, ORG + "stats_v2/", groupBy="outcome", **params).json()
    assert all(set(group["by"]) == {"outcome"} for group in by_outcome["groups"])
    assert sum(g["totals"]["sum(quantity)"] for g in body["groups"]) == sum(
        g["totals"]["sum(quantity)"] for g in by_outcome["groups"]
    )


def test_stats_summary_adds_up_the_days_of_stats_v2(
    api: OpenAPI, client: httpx.Client, organization: FakeOrganization
) -> None:
    window = {"start": stamp(day(10)), "end": stamp(day(3))}
    summary = valid(
        api, get(client, ORG + "stats-summary/", field="sum(quantity)", project="-1", **window)
    )
    assert [p["slug"] for p in summary["projects"]] == ["project-0", "project-1", "project-2"]
    daily = get(
        client,
        ORG + "stats_v2/",
        field="sum(quantity)",
        groupBy=["project", "category", "outcome"],
        interval="1d",
        **window,
    ).json()
    for project in summary["projects"]:
        for stats in project["stats"]:
            assert set(stats["outcomes"]) == {
                "accepted",
                "filtered",
                "rate_limited",
                "invalid",
                "abuse",
                "client_discard",
                "cardinality_limited",
            }
            for outcome, figure in stats["outcomes"].items():
                from_daily = sum(
                    g["totals"]["sum(quantity)"]
                    for g in daily["groups"]
                    if g["by"]
                    == {
                        "project": int(project["id"]),
                        "category": stats["category"],
                        "outcome": outcome,
                    }
                )
                assert figure == from_daily, (project["slug"], stats["category"], outcome)
            assert stats["totals"]["sum(quantity)"] == sum(stats["outcomes"].values())
    mine = get(client, ORG + "stats-summary/", field="sum(quantity)", **window).json()
    assert [p["slug"] for p in mine["projects"]] == ["project-0"]  # the caller's teams' only
    assert "field" in detail(get(client, ORG + "stats-summary/", **window))
    old = {"start": stamp(day(100)), "end": stamp(day(3))}
    assert "date range" in detail(get(client, ORG + "stats-summary/", field="sum(quantity)", **old))


# --- sessions ----------------------------------------------------------------------------


def test_sessions_answer_groups_by_intervals(api: OpenAPI, client: httpx.Client) -> None:
    window = {"start": stamp(day(3)), "end": stamp(day(1))}
    body = valid(
        api,
        get(
            client,
            ORG + "sessions/",
            field=["sum(session)", "count_unique(user)"],
            groupBy=["project", "session.status"],
            project="-1",
            **window,
        ),
    )
    assert len(body["intervals"]) == 48
    assert body["query"] == ""
    assert len(body["groups"]) == 3 * 4
    for group in body["groups"]:
        assert isinstance(group["by"]["project"], int)
        assert len(group["series"]["sum(session)"]) == 48
        assert group["totals"]["sum(session)"] == sum(group["series"]["sum(session)"])
        assert group["totals"]["count_unique(user)"] < group["totals"]["sum(session)"]
    again = get(
        client, ORG + "sessions/", field="sum(session)", groupBy="release", interval="1d", **window
    ).json()
    assert {tuple(g["by"]) for g in again["groups"]} == {("release",)}
    assert len(again["intervals"]) == 2


def test_sessions_refuse_what_sentry_refuses(client: httpx.Client) -> None:
    path = ORG + "sessions/"
    assert "field" in detail(get(client, path))
    assert "field" in detail(get(client, path, field="avg(session.duration)"))
    assert "groupBy" in detail(get(client, path, field="sum(session)", groupBy="os"))
    assert "interval" in detail(get(client, path, field="sum(session)", interval="10m"))
    old = {"start": stamp(day(95)), "end": stamp(day(1))}
    assert "date range" in detail(get(client, path, field="sum(session)", **old))
    hourly = {"start": stamp(day(46)), "end": stamp(day(1)), "interval": "1h"}
    assert detail(get(client, path, field="sum(session)", **hourly)) == (
        "Your interval and date range would create too many results. "
        "Use a larger interval, or a smaller date range."
    )  # 1,080 intervals: more than 1,000
    assert "interval" in detail(get(client, path, field="sum(session)", interval="2d"))


def test_sessions_keep_the_largest_groups_and_drop_the_rest_silently(
    client: httpx.Client, organization: FakeOrganization
) -> None:
    """metrics_sessions_v2.run_sessions_query: at most 5000 // intervals groups of project,
    release and environment, the largest by sum(session), each split into four statuses."""
    organization.add_session_releases(50)  # 3 projects x 54 releases x 2 environments
    every = ["project", "release", "environment", "session.status"]
    fields = ["sum(session)", "count_unique(user)"]

    def sessions(days: int) -> dict[str, Any]:
        window = {"start": stamp(day(days + 1)), "end": stamp(day(1)), "interval": "1d"}
        answer = get(client, ORG + "sessions/", field=fields, groupBy=every, project="-1", **window)
        assert answer.status_code == 200  # never a 400 for too many groups
        body: dict[str, Any] = answer.json()
        return body

    def totals(body: dict[str, Any]) -> dict[tuple[Any, ...], float]:
        summed: dict[tuple[Any, ...], float] = {}
        for group in body["groups"]:
            by = group["by"]
            key = (by["project"], by["release"], by["environment"])
            summed[key] = summed.get(key, 0) + group["totals"]["sum(session)"]
        return summed

    whole = totals(sessions(3))
    assert len(whole) == 3 * 54 * 2  # 324 groups: under 5000 // 3
    cut = sessions(30)
    kept = totals(cut)
    assert len(kept) == 5000 // 30 and len(cut["groups"]) == 4 * len(kept)
    dropped = set(whole) - set(kept)
    assert min(whole[key] for key in kept) >= max(whole[key] for key in dropped)


# --- environments, deploys, commits ------------------------------------------------------


def test_hidden_environments_vanish_by_default(api: OpenAPI, client: httpx.Client) -> None:
    path = ORG + "environments/"
    default = valid(api, get(client, path, project="-1"))
    assert [e["name"] for e in default] == ["canary", "development", "production", "staging"]
    every = valid(api, get(client, path, visibility="all", project="-1"))
    names = ["canary", "development", "legacy-qa", "production", "staging"]
    assert [e["name"] for e in every] == names  # by name, as Sentry orders them
    hidden = get(client, path, visibility="hidden", project="-1").json()
    assert [e["name"] for e in hidden] == ["legacy-qa"]
    assert "Link" not in get(client, path).headers
    assert detail(get(client, path, visibility="some")).startswith("Invalid value")


def test_environments_cover_the_callers_projects_unless_project_is_minus_one(
    client: httpx.Client, organization: FakeOrganization
) -> None:
    """organization_environments.py filters by `get_projects`: no `project` means the
    projects of the caller's teams; `canary` is used only in a project of another team."""
    path = ORG + "environments/"
    last = organization.projects[-1]
    assert last["id"] not in organization.my_project_ids()
    mine = get(client, path, visibility="all").json()
    assert [e["name"] for e in mine] == ["development", "legacy-qa", "production", "staging"]
    every = get(client, path, visibility="all", project="-1").json()
    assert "canary" in [e["name"] for e in every]
    alone = get(client, path, visibility="all", project=last["id"]).json()
    assert [e["name"] for e in alone] == ["canary", "legacy-qa", "production", "staging"]


def test_a_release_version_travels_url_encoded(
    api: OpenAPI, client: httpx.Client, organization: FakeOrganization
) -> None:
    version = "frontend@2.0.0+build/7"
    organization.add_release(version=version)
    before = len(organization.releases)
    for kind in ("deploys", "commits"):
        encoded = get(client, f"{ORG}releases/{quote(version, safe='')}/{kind}/")
        valid(api, encoded)
        assert "Link" in encoded.headers
        raw = client.get(f"{ORG}releases/frontend@2.0.0+build/7/{kind}/")
        assert raw.status_code == 404  # the unencoded slash splits the path
        unknown = get(client, f"{ORG}releases/{quote('app@9.9.9', safe='')}/{kind}/")
        assert detail(unknown, 404)
    assert len(organization.releases) == before


def test_deploys_and_commits_per_release(
    client: httpx.Client, organization: FakeOrganization
) -> None:
    deploys, commits = [], []
    for release in organization.releases:
        version = quote(release["version"], safe="")
        deploys.append(get(client, f"{ORG}releases/{version}/deploys/").json())
        commits.append(get(client, f"{ORG}releases/{version}/commits/"))
    assert {len(rows) for rows in deploys} <= {0, 1, 2, 3}
    assert any(deploys) and not all(deploys)
    empty = [response for response in commits if response.json() == []]
    assert empty and len(empty) < len(commits)  # repositories are linked for some only
    assert all(next_link(response)["results"] == "false" for response in empty)
    rows = next(response.json() for response in commits if response.json())
    assert all(len(row["id"]) == 40 for row in rows)
    assert all(row["releases"][0]["version"] for row in rows)


# --- monitors and check-ins --------------------------------------------------------------


def test_monitors_follow_the_project_filter(api: OpenAPI, client: httpx.Client) -> None:
    every = valid(api, get(client, ORG + "monitors/", project="-1"))
    assert [m["slug"] for m in every] == ["nightly-backup", "hourly-sync", "queue-drain"]
    mine = get(client, ORG + "monitors/").json()
    assert [m["project"]["slug"] for m in mine] == ["project-0"]
    one = get(client, ORG + "monitors/", project=every[1]["project"]["id"]).json()
    assert [m["slug"] for m in one] == ["hourly-sync"]


def test_checkins_come_newest_first_by_offset(
    api: OpenAPI, client: httpx.Client, organization: FakeOrganization
) -> None:
    monitor = get(client, ORG + "monitors/", project="-1").json()[0]
    seen: list[dict[str, Any]] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"per_page": 100, **({"cursor": cursor} if cursor else {})}
        page = get(client, f"{ORG}monitors/{monitor['id']}/checkins/", **params)
        seen.extend(valid(api, page))
        if next_link(page)["results"] == "false":
            break
        cursor = next_link(page)["cursor"]
    assert len(seen) == 240
    clocks = [row["dateClock"] for row in seen]
    assert clocks == sorted(clocks, reverse=True)
    assert {row["status"] for row in seen} == {"ok", "error", "missed"}
    by_slug = get(client, f"{ORG}monitors/{monitor['slug']}/checkins/", per_page=5).json()
    assert by_slug == seen[:5]
    assert detail(get(client, f"{ORG}monitors/no-such/checkins/"), 404)
    assert "per_page" in detail(
        get(client, f"{ORG}monitors/{monitor['slug']}/checkins/", per_page=101)
    )

    added = organization.add_checkins(2, monitor_slug=monitor["slug"])
    newest = get(client, f"{ORG}monitors/{monitor['slug']}/checkins/", per_page=3).json()
    assert [row["id"] for row in newest[:2]] == [added[1]["id"], added[0]["id"]]
    assert newest[2] == seen[0]


def test_a_slug_shared_by_two_projects_finds_the_oldest_monitor(
    client: httpx.Client, organization: FakeOrganization
) -> None:
    """get_monitor_by_org_id_or_slug: a slug names the oldest monitor that has it (slugs
    are unique per project only); an id names its own monitor."""
    oldest = organization.extras.monitor("nightly-backup")
    assert oldest is not None
    newer = organization.add_monitor("nightly-backup", "project-2")
    assert newer["_project_id"] != oldest["_project_id"]
    every = get(client, ORG + "monitors/", project="-1").json()
    assert [m["id"] for m in every if m["slug"] == "nightly-backup"] == [oldest["id"], newer["id"]]

    def checkin_ids(id_or_slug: str) -> list[str]:
        page = get(client, f"{ORG}monitors/{id_or_slug}/checkins/", per_page=100).json()
        return [row["id"] for row in page]

    by_slug, by_old_id, by_new_id = (
        checkin_ids(key) for key in ("nightly-backup", oldest["id"], newer["id"])
    )
    assert by_slug == by_old_id
    assert by_new_id and not set(by_new_id) & set(by_old_id)
    assert checkin_ids(newer["id"].upper()) == by_new_id  # read as a UUID
    assert detail(get(client, f"{ORG}monitors/{newer['id'][:-1]}/checkins/"), 404)


# --- replays -----------------------------------------------------------------------------


def test_replays_return_the_fields_asked_for(
    api: OpenAPI, client: httpx.Client, organization: FakeOrganization
) -> None:
    path = ORG + "replays/"
    every = valid(api, get(client, path, project="-1", per_page=100))["data"]
    assert 50 <= len(every) <= 60
    starts = [row["started_at"] for row in every]
    assert starts == sorted(starts, reverse=True)  # -started_at by default
    assert all(isinstance(row["project_id"], str) and len(row["id"]) == 32 for row in every)
    chosen = valid(api, get(client, path, project="-1", field=["id", "duration"]))["data"]
    assert all(set(row) == {"id", "duration"} for row in chosen)
    assert "Invalid field" in detail(get(client, path, field=["id", "title"]))
    assert "sort" in detail(get(client, path, sort="title"))
    assert "per_page" in detail(get(client, path, per_page=500))
    ascending = get(client, path, project="-1", sort="duration", field="duration").json()["data"]
    assert [r["duration"] for r in ascending] == sorted(r["duration"] for r in ascending)
    page = get(client, path, project="-1", per_page=10)
    assert len(page.json()["data"]) == 10 and next_link(page)["results"] == "true"
    week = get(client, path, project="-1", start=stamp(day(7)), end=stamp(day(-1))).json()
    assert 0 < len(week["data"]) < len(every)
    mine = get(client, path).json()["data"]
    assert {row["project_id"] for row in mine} == {organization.projects[0]["id"]}

    added = organization.add_replays(1, project_slug="project-1")
    newest = get(client, path, project="-1", per_page=1).json()["data"]
    assert newest[0]["id"] == added[0]["id"]


# --- user feedback and tag values --------------------------------------------------------


def test_user_feedback_on_resolved_or_ignored_issues_needs_an_empty_status(
    organization: FakeOrganization,
) -> None:
    """project_user_reports.py: `status` defaults to `unresolved` (reports of resolved and
    ignored issues are filtered out of each page, after paging); only `status=` keeps all."""
    with FakeSentry(organization) as fake:
        headers = {"Authorization": f"Bearer {DEFAULT_TOKEN}"}
        with httpx.Client(base_url=fake.base_url, headers=headers) as client:
            ignored = "/api/0/projects/acme/project-1/user-feedback/"
            assert len(get(client, ignored, status="").json()) == 3
            assert get(client, ignored).json() == []
            short = get(client, ignored, per_page=1)
            assert short.json() == [] and next_link(short)["results"] == "true"
            open_ones = "/api/0/projects/acme/project-2/user-feedback/"
            reports = get(client, open_ones).json()
            assert len(reports) == 4
            for issue in {report["issue"]["id"] for report in reports}:
                organization.set_issue_status(issue, "resolved")
            assert get(client, open_ones).json() == []
            assert get(client, open_ones, status="").json() == reports


def test_user_feedback_per_project(api: OpenAPI, organization: FakeOrganization) -> None:
    settings = ServerSettings(forbidden_projects=frozenset({"project-2"}))
    with FakeSentry(organization, settings) as fake:
        headers = {"Authorization": f"Bearer {DEFAULT_TOKEN}"}
        with httpx.Client(base_url=fake.base_url, headers=headers) as client:
            path = "/api/0/projects/acme/project-1/user-feedback/"
            rows = valid(api, get(client, path, status=""))
            assert 2 <= len(rows) <= 4
            assert all(row["event"]["eventID"] == row["eventID"] for row in rows)
            assert "status" in detail(get(client, path, status="all"))
            unknown = get(client, "/api/0/projects/acme/nope/user-feedback/")
            assert detail(unknown, 404)
            forbidden = get(client, "/api/0/projects/acme/project-2/user-feedback/")
            assert detail(forbidden, 403)


def test_tag_values_most_seen_first(
    api: OpenAPI, client: httpx.Client, organization: FakeOrganization
) -> None:
    issue = max(organization.issues.values(), key=lambda i: int(i["count"]))
    for key in ("browser", "release", "environment", "os", "url", "level"):
        rows = valid(api, get(client, f"{ORG}issues/{issue['id']}/tags/{key}/values/"))
        assert rows, key
        counts = [row["count"] for row in rows]
        assert counts == sorted(counts, reverse=True)
        assert sum(counts) == int(issue["count"])
    assert get(client, f"{ORG}issues/{issue['id']}/tags/no-such-key/values/").json() == []
    assert detail(get(client, f"{ORG}issues/999999/tags/browser/values/"), 404)


def test_tag_values_stop_at_a_thousand(
    client: httpx.Client, organization: FakeOrganization
) -> None:
    issue = next(iter(organization.issues))
    organization.set_tag_values(issue, "url", 1500)
    values: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"per_page": 100, **({"cursor": cursor} if cursor else {})}
        page = get(client, f"{ORG}issues/{issue}/tags/url/values/", **params)
        values.extend(row["value"] for row in page.json())
        if next_link(page)["results"] == "false":
            break
        cursor = next_link(page)["cursor"]
    assert len(values) == 1000
    assert len(set(values)) == 1000
    # The 1,000 seen most recently are kept, not the 1,000 seen most often.
    every = organization.extras.tag_values(organization.issues[issue], "url")
    recent = sorted(every, key=lambda row: row["lastSeen"], reverse=True)[:1000]
    assert set(values) == {row["value"] for row in recent}
    assert set(values) != {f"https://app.example/pages/{n:05d}" for n in range(1000)}


# --- the Explore/Discover index ----------------------------------------------------------

EXPLORE = ORG + "events/"


def test_explore_refuses_what_sentry_refuses(client: httpx.Client) -> None:
    assert "dataset" in detail(get(client, EXPLORE, field="id"))
    assert "dataset" in detail(get(client, EXPLORE, dataset="transactionz", field="id"))
    assert "columns" in detail(get(client, EXPLORE, dataset="errors"))
    assert "Invalid field" in detail(get(client, EXPLORE, dataset="errors", field="nope"))
    many = ["user.id"] * 21
    assert "20" in detail(get(client, EXPLORE, dataset="errors", field=many))
    wrong_sort = get(client, EXPLORE, dataset="errors", field=["id", "title"], sort="-timestamp")
    assert "sort" in detail(wrong_sort)
    assert "per_page" in detail(get(client, EXPLORE, dataset="errors", field="id", per_page=101))
    far = get(client, EXPLORE, dataset="errors", field="id", cursor="0:10000:0")
    assert detail(far) == "Query exceeds max offset. Use a smaller date range."


def test_explore_rows_map_the_events(
    api: OpenAPI, client: httpx.Client, organization: FakeOrganization
) -> None:
    fields = [
        "id",
        "project.id",
        "project",
        "issue.id",
        "issue",
        "title",
        "level",
        "timestamp",
        "environment",
        "release",
        "user.email",
        "event.type",
    ]
    window = {"start": stamp(day(60)), "end": stamp(day(-1))}
    response = get(
        client,
        EXPLORE,
        dataset="errors",
        field=fields,
        sort="timestamp",
        project="-1",
        per_page=100,
        **window,
    )
    body = valid(api, response)
    assert body["meta"]["dataScanned"] == "full"
    assert body["meta"]["fields"]["project.id"] == "integer"
    expected = [
        event
        for events in organization.events.values()
        for event in events
        if window["start"] <= event["dateCreated"] < window["end"]
    ]
    rows = body["data"]
    assert len(rows) == min(100, len(expected))
    stamps = [row["timestamp"] for row in rows]
    assert stamps == sorted(stamps) and stamps[0].endswith("+00:00")
    first = rows[0]
    event = next(e for e in expected if e["eventID"] == first["id"])
    issue = organization.issues[event["groupID"]]
    assert first["project.id"] == int(event["projectID"])
    assert first["issue.id"] == int(issue["id"])
    assert first["issue"] == issue["shortId"]
    assert first["level"] == issue["level"]
    assert first["environment"] == "production"
    assert first["event.type"] == "error"
    assert first["release"] is None
    assert list(first) == fields


def test_explore_defaults_to_the_last_fourteen_days(
    client: httpx.Client, organization: FakeOrganization
) -> None:
    body = get(
        client, EXPLORE, dataset="errors", field="timestamp", project="-1", per_page=100
    ).json()
    recent = [
        event
        for events in organization.events.values()
        for event in events
        if event["dateCreated"] >= (datetime.now(UTC) - timedelta(days=14)).isoformat()[:19]
    ]
    assert 0 < len(body["data"]) == len(recent)
    oldest = min(row["timestamp"] for row in body["data"])
    assert datetime.fromisoformat(oldest) >= datetime.now(UTC) - timedelta(days=14, minutes=1)


def test_explore_counts_by_project_and_sees_added_events(
    api: OpenAPI, client: httpx.Client, fake: FakeSentry, organization: FakeOrganization
) -> None:
    window = {"start": stamp(day(30)), "end": stamp(day(-1))}
    params = {"dataset": "errors", "field": ["project.id", "count()"], "project": "-1", **window}
    counts = valid(api, get(client, EXPLORE, **params, sort="-count()"))["data"]
    figures = [row["count()"] for row in counts]
    assert figures == sorted(figures, reverse=True)
    by_project = {row["project.id"]: row["count()"] for row in counts}
    assert sum(by_project.values()) == len(
        get(
            client, EXPLORE, dataset="errors", field="id", project="-1", per_page=100, **window
        ).json()["data"]
    )
    httpx.get(f"{fake.base_url}/_fake/add_events", params={"count": 6, "projects": "project-1"})
    after = {r["project.id"]: r["count()"] for r in get(client, EXPLORE, **params).json()["data"]}
    project_1 = int(organization.project("project-1")["id"])
    assert after[project_1] == by_project.get(project_1, 0) + 6


def test_explore_stops_paging_at_ten_thousand_rows() -> None:
    organization = FakeOrganization(
        "acme", OrganizationSize(projects=1, issues=2, events=0), seed=3
    )
    organization.add_events(10_050)
    with FakeSentry(organization) as fake:
        headers = {"Authorization": f"Bearer {DEFAULT_TOKEN}"}
        with httpx.Client(base_url=fake.base_url, headers=headers) as client:
            params = {"dataset": "errors", "field": "id", "project": "-1", "per_page": 100}
            last = get(client, EXPLORE, **params, cursor="0:9900:0")
            assert len(last.json()["data"]) == 100
            assert next_link(last)["results"] == "false"  # 50 more exist
            assert next_link(get(client, EXPLORE, **params, cursor="0:9800:0"))["results"] == "true"
            assert get(client, EXPLORE, **params, cursor="0:10000:0").status_code == 400


def test_explore_switches(organization: FakeOrganization) -> None:
    params = {"dataset": "errors", "field": "id", "project": "-1"}
    headers = {"Authorization": f"Bearer {DEFAULT_TOKEN}"}
    with FakeSentry(organization, ServerSettings(explore_partial=True)) as fake:
        body = httpx.get(fake.base_url + EXPLORE, params=params, headers=headers).json()
        assert body["meta"]["dataScanned"] == "partial"
    with FakeSentry(organization, ServerSettings(explore_refused=True)) as fake:
        assert httpx.get(fake.base_url + EXPLORE, params=params, headers=headers).status_code == 403
    timeouts = ServerSettings(faults=FaultRates(query_timeout=1.0))
    with FakeSentry(organization, timeouts) as fake:
        response = httpx.get(fake.base_url + EXPLORE, params=params, headers=headers)
        assert response.status_code == 400
        assert "timeout" in response.json()["detail"].lower()


def test_events_added_since_keep_the_order_a_whole_sort_gives() -> None:
    """The fake puts events added since it last sorted a project's in their place, and
    keeps the order of a project without new ones: the same order (by time, then id)
    and timestamps as sorting them all, and again after a change that is no addition."""
    organization = FakeOrganization("acme", OrganizationSize(projects=3, events=600), seed=4)
    state = FakeState(organization)
    projects = [project["id"] for project in organization.projects]

    def whole_sort(project: str) -> list[str]:
        events = sorted(
            organization.events[project], key=lambda e: (e["dateCreated"], e["eventID"])
        )
        return [event["eventID"] for event in events]

    def agrees(project: str) -> bool:
        ordered, moments = state.sorted_events(project)
        return [e["eventID"] for e in ordered] == whole_sort(project) and moments == [
            e["dateCreated"] for e in ordered
        ]

    assert all(agrees(project) for project in projects)
    counts = [len(organization.events[project]) for project in projects]
    organization.add_events(30, organization.projects[0]["slug"])
    assert len(organization.events[projects[0]]) > counts[0]
    assert [len(organization.events[project]) for project in projects[1:]] == counts[1:]
    assert all(agrees(project) for project in projects)
    organization.events[projects[1]].reverse()  # no addition: sorted again from the start
    organization.version += 1
    assert all(agrees(project) for project in projects)
