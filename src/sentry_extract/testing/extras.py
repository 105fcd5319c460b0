"""The data behind the endpoints beyond the seven streams, made on first use.

Built lazily (`FakeOrganization.extras`) so that the organizations most tests build stay
as cheap as before, and derived from the seven streams' rows without changing them:
environments (one hidden), release deploys and commits (only some releases have linked
repositories), cron monitors with hourly check-ins, session replays, user feedback on
events, issue tag values, and hourly usage and session figures as closed forms (a sum
over any range of hours costs the same as one hour).
"""

from __future__ import annotations

import hashlib
import random
import uuid
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from sentry_extract.testing.rows import Row, iso

# Environments and the projects that use them (Sentry's EnvironmentProject): every one,
# the first (one of the caller's), or the last (in no team of the caller's, when there
# are several projects).
ENVIRONMENTS = (
    {"id": "1", "name": "production", "hidden": False, "projects": "every"},
    {"id": "2", "name": "staging", "hidden": False, "projects": "every"},
    {"id": "3", "name": "development", "hidden": False, "projects": "first"},
    {"id": "4", "name": "legacy-qa", "hidden": True, "projects": "every"},
    {"id": "5", "name": "canary", "hidden": False, "projects": "last"},
)
MONITORS = (
    ("nightly-backup", "Nightly backup", "crontab", "0 3 * * *"),
    ("hourly-sync", "Hourly sync", "crontab", "0 * * * *"),
    ("queue-drain", "Queue drain", "crontab", "*/30 * * * *"),
)
CHECKIN_DAYS = 10
REPLAYS = 60
REPLAY_DAYS = 30
BROWSERS = ("Chrome", "Firefox", "Safari", "Edge")
SYSTEMS = ("Windows", "Mac OS X", "Linux", "iOS")
TAG_KEYS = ("browser", "release", "environment", "os", "url", "level")

# Usage (stats_v2, stats-summary): per outcome and reason, units per hour for each
# category, before the project's factor; accepted errors are the organization's events.
USAGE_CATEGORIES = ("error", "transaction", "attachment")
USAGE_OUTCOMES = (
    ("accepted", "none", {"error": 0, "transaction": 40, "attachment": 250_000}),
    ("filtered", "browser-extensions", {"error": 3, "transaction": 0, "attachment": 0}),
    ("filtered", "release-version", {"error": 1, "transaction": 2, "attachment": 0}),
    ("rate_limited", "usage_exceeded", {"error": 2, "transaction": 9, "attachment": 1_000_000}),
    ("client_discard", "sample_rate", {"error": 0, "transaction": 25, "attachment": 0}),
)
ATTACHMENT_SIZE = 50_000  # bytes: times_seen of attachments counts files
SESSION_ENVIRONMENTS = {"production": 5, "staging": 1}
SESSION_STATUSES = {"healthy": 20, "errored": 3, "crashed": 1, "abnormal": 1}

# Every figure varies with the hour of the day by these weights.
HOURLY = tuple(1 + (hour * 7) % 5 for hour in range(24))
_BEFORE = tuple(sum(HOURLY[:hour]) for hour in range(25))


def weight(first_hour: int, last_hour: int) -> int:
    """The sum of the hourly weights over epoch hours [first_hour, last_hour)."""

    def through(hour: int) -> int:
        return (hour // 24) * _BEFORE[24] + _BEFORE[hour % 24]

    return max(0, through(last_hour) - through(first_hour))


def figure(*parts: object) -> int:
    """A stable number for these parts (no process-dependent hashing)."""
    return zlib.crc32("|".join(str(part) for part in parts).encode())


@dataclass(frozen=True)
class UsageSeries:
    """One project's hourly usage for a category, outcome and reason."""

    project_id: str
    category: str
    outcome: str
    reason: str
    per_hour: int  # before the hourly weights; 0 for accepted errors (counted from events)


@dataclass(frozen=True)
class SessionSeries:
    project_id: str
    release: str
    environment: str
    status: str
    sessions: int  # per hour, before the hourly weights
    users: int


class Organization(Protocol):
    """What the further rows are derived from: the seven streams' rows of a
    `FakeOrganization` (which makes its `Extras` on first use, so this module cannot
    import it)."""

    seed: int
    clock: Callable[[], datetime]
    projects: list[Row]
    teams: list[Row]
    releases: list[Row]
    issues: dict[str, Row]
    events: dict[str, list[Row]]

    def project(self, slug: str) -> Row: ...


class Extras:
    """The further rows of one organization; `organization.lock` guards them."""

    def __init__(self, organization: Organization) -> None:
        self.organization = organization
        self.random = random.Random(organization.seed * 7919 + 13)
        now = organization.clock()
        self.monitors: list[Row] = []  # oldest first (Sentry's lowest id)
        self.checkins: dict[str, list[Row]] = {}  # monitor id -> check-ins, oldest first
        count = len(MONITORS) if organization.projects else 0
        for monitor in [self._monitor(index, now) for index in range(count)]:
            self._add_monitor(monitor, now)
        self.replays: list[Row] = []
        for index in range(REPLAYS if organization.projects else 0):
            age = timedelta(seconds=self.random.uniform(0, REPLAY_DAYS * 86400))
            self.replays.append(self._replay(index, now - age))
        self.tag_value_counts: dict[tuple[str, str], int] = {}  # (issue, key) -> values
        self.session_releases = 0  # releases per project seen only in sessions (SDKs name them)
        self._feedback: dict[str, list[Row]] = {}

    # --- monitors and check-ins ------------------------------------------------------------

    def _monitor(self, index: int, now: datetime, project: Row | None = None) -> Row:
        organization = self.organization
        project = project or organization.projects[index % len(organization.projects)]
        slug, name, schedule_type, schedule = MONITORS[index % len(MONITORS)]
        team = next((t for t in organization.teams if t["id"] == project["_team_id"]), None)
        return {
            "id": str(uuid.UUID(int=self.random.getrandbits(128), version=4)),  # its guid
            "slug": slug,
            "name": name,
            "status": "active",
            "isMuted": index == 2,
            "isUpserting": False,
            "config": {
                "schedule_type": schedule_type,
                "schedule": schedule,
                "checkin_margin": 5 if index else None,
                "max_runtime": 30,
                "timezone": "UTC",
                "failure_issue_threshold": 1,
                "recovery_threshold": 1,
                "alert_rule_id": None,
            },
            "dateCreated": iso(now - timedelta(days=60 - index)),
            "_project_id": project["id"],
            "_team": team,
        }

    def _checkin(self, monitor: Row, clock: datetime, index: int) -> Row:
        status = "missed" if index % 11 == 10 else "error" if index % 7 == 6 else "ok"
        duration = None if status == "missed" else 1000 + figure(monitor["slug"], index) % 60_000
        finished = clock + timedelta(milliseconds=duration or 0)
        return {
            "id": str(uuid.UUID(int=self.random.getrandbits(128))),
            "environment": "production",
            "status": status,
            "duration": duration,
            "dateCreated": iso(clock),
            "dateAdded": iso(clock),
            "dateUpdated": iso(finished),
            "dateInProgress": None if status == "missed" else iso(clock),
            "dateClock": iso(clock),
            "expectedTime": iso(clock),
            "monitorConfig": dict(monitor["config"]),
            "groups": [],
        }

    def _add_monitor(self, monitor: Row, now: datetime) -> Row:
        self.monitors.append(monitor)
        latest = now.replace(minute=0, second=0, microsecond=0)
        self.checkins[monitor["id"]] = [
            self._checkin(monitor, latest - timedelta(hours=hours), index)
            for index, hours in enumerate(range(CHECKIN_DAYS * 24 - 1, -1, -1))
        ]
        return monitor

    def add_monitor(self, slug: str, project_slug: str) -> Row:
        """A new monitor in this project: its slug may be another project's monitor's
        (slugs are unique per project, not per organization)."""
        now = self.organization.clock()
        monitor = self._monitor(len(self.monitors), now, self.organization.project(project_slug))
        monitor.update(slug=slug, dateCreated=iso(now))
        return self._add_monitor(monitor, now)

    def monitor(self, id_or_slug: str) -> Row | None:
        """As the organization's monitor routes find one (`get_monitor_by_org_id_or_slug`):
        by slug first, the oldest monitor with it; else by id (a UUID)."""
        by_slug = [monitor for monitor in self.monitors if monitor["slug"] == id_or_slug]
        if by_slug:
            return by_slug[0]
        try:
            guid = str(uuid.UUID(id_or_slug, version=4))
        except ValueError:
            return None
        return next((monitor for monitor in self.monitors if monitor["id"] == guid), None)

    def add_checkins(self, count: int, monitor_slug: str | None = None) -> list[Row]:
        """`count` check-ins newer than every other one of the monitor (its id or slug;
        default the first)."""
        monitor = self.monitor(monitor_slug) if monitor_slug else self.monitors[0]
        if monitor is None:
            raise KeyError(monitor_slug)
        checkins = self.checkins[monitor["id"]]
        added = []
        for _ in range(count):
            latest = datetime.fromisoformat(checkins[-1]["dateClock"].replace("Z", "+00:00"))
            moment = max(latest + timedelta(seconds=1), self.organization.clock())
            added.append(self._checkin(monitor, moment, len(checkins)))
            checkins.append(added[-1])
        return added

    # --- replays ---------------------------------------------------------------------------

    def _replay(self, index: int, started: datetime) -> Row:
        organization = self.organization
        project = organization.projects[index % len(organization.projects)]
        duration = 20 + figure("replay", index) % 1800
        finished = started + timedelta(seconds=duration)
        releases = self.versions(project["id"])
        errors = index % 4
        urls = [f"/items/{index}", f"/items/{index}/edit"][: 1 + index % 2]
        person = index % 9
        return {
            "id": uuid.UUID(int=self.random.getrandbits(128)).hex,
            "project_id": project["id"],
            "started_at": _naive(started),
            "finished_at": _naive(finished),
            "duration": duration,
            "count_errors": errors,
            "count_segments": 1 + duration // 300,
            "count_urls": len(urls),
            "count_dead_clicks": index % 3,
            "count_rage_clicks": index % 5 // 4,
            "count_warnings": index % 2,
            "count_infos": 0,
            "activity": min(10, 1 + errors * 2 + index % 3),
            "urls": urls,
            "segment_names": [],
            "clicks": [],
            "user": {
                "id": str(person),
                "username": None,
                "email": f"user{person}@example.com",
                "ip": "10.0.0.2",
                "display_name": f"user{person}@example.com",
                "geo": {"city": None, "country_code": "DE", "region": None, "subdivision": None},
            },
            "browser": {"name": BROWSERS[index % 4], "version": f"{120 + index % 5}.0"},
            "os": {"name": SYSTEMS[index % 4], "version": f"{10 + index % 4}"},
            "device": {"name": None, "brand": None, "model": None, "family": "Other"},
            "sdk": {"name": "sentry.javascript.browser", "version": "8.40.0"},
            "environment": "production" if index % 5 else "staging",
            "releases": releases[index % len(releases) :][:1] if releases else [],
            "platform": "javascript",
            "dist": None,
            "is_archived": None,
            "error_ids": [uuid.UUID(int=figure("error", index, n)).hex for n in range(errors)],
            "info_ids": [],
            "warning_ids": [],
            "trace_ids": [hashlib.md5(f"trace{index}".encode()).hexdigest()],
            "tags": {"replayType": ["session"], "browser.name": [BROWSERS[index % 4]]},
            "has_viewed": index % 3 == 0,
        }

    def add_replays(self, count: int, project_slug: str | None = None) -> list[Row]:
        """`count` replays that started now, on this project (default: spread over all)."""
        organization = self.organization
        added = []
        for _ in range(count):
            replay = self._replay(len(self.replays), organization.clock())
            if project_slug:
                replay["project_id"] = organization.project(project_slug)["id"]
            self.replays.append(replay)
            added.append(replay)
        return added

    # --- user feedback ---------------------------------------------------------------------

    def feedback(self, project_id: str) -> list[Row]:
        """A project's user reports (newest first): one on each of its first few events."""
        cached = self._feedback.get(project_id)
        if cached is None:
            organization = self.organization
            events = organization.events.get(project_id, [])
            count = 2 + int(project_id) % 3
            cached = [self._report(event, n) for n, event in enumerate(events[:count])]
            cached.sort(key=lambda row: (row["dateCreated"], row["id"]), reverse=True)
            self._feedback[project_id] = cached
        return cached

    def _report(self, event: Row, number: int) -> Row:
        issue = self.organization.issues.get(event["groupID"])
        person = event["user"]
        return {
            "id": str(figure("report", event["eventID"]) % 900_000 + 100_000),
            "eventID": event["eventID"],
            "name": f"Reporter {number}",
            "email": person["email"],
            "comments": f"It broke when I clicked save ({number}).",
            "dateCreated": event["dateCreated"],
            "user": None
            if number % 3 == 2
            else {"id": person["id"], "email": person["email"], "name": None},
            "event": {"eventID": event["eventID"], "id": event["eventID"]},
            "issue": None
            if issue is None
            else {key: issue[key] for key in ("id", "shortId", "title", "culprit", "permalink")},
        }

    # --- issue tag values ------------------------------------------------------------------

    def tag_values(self, issue: Row, key: str) -> list[Row]:
        """One issue's values of a tag key, most seen first (an unknown key has none)."""
        extra = self.tag_value_counts.get((issue["id"], key))
        if extra is not None:  # seen at times that do not follow how often
            url = "https://app.example/pages/{:05d}"
            newest = datetime.fromisoformat(issue["lastSeen"].replace("Z", "+00:00"))
            return [
                {
                    **_tag_value(key, url.format(n), extra - n, issue),
                    "lastSeen": iso(newest - timedelta(minutes=n * 7919 % extra)),
                }
                for n in range(extra)
            ]
        if key not in TAG_KEYS:
            return []
        seen: dict[str, tuple[int, str, str]] = {}
        for event in self.organization.events.get(issue["project"]["id"], []):
            if event["groupID"] != issue["id"]:
                continue
            value = self._event_tag(event, issue, key)
            count, first, last = seen.get(value, (0, event["dateCreated"], event["dateCreated"]))
            when = event["dateCreated"]
            seen[value] = (count + 1, min(first, when), max(last, when))
        rows = [
            {**_tag_value(key, value, count, issue), "firstSeen": first, "lastSeen": last}
            for value, (count, first, last) in seen.items()
        ]
        rows.sort(key=lambda row: (-row["count"], row["value"]))
        return rows

    def _event_tag(self, event: Row, issue: Row, key: str) -> str:
        spread = figure(event["eventID"], key)
        if key == "environment":
            return "production"
        if key == "level":
            return str(issue["level"])
        if key == "browser":
            return f"{BROWSERS[spread % 4]} {120 + spread % 3}"
        if key == "os":
            return SYSTEMS[spread % 4]
        if key == "url":
            return f"https://app.example/items/{spread % 7}"
        versions = self.versions(issue["project"]["id"])
        return versions[spread % len(versions)] if versions else "unknown"

    def versions(self, project_id: str) -> list[str]:
        """The versions of a project's releases."""
        return [
            release["version"]
            for release in self.organization.releases
            if str(release["projects"][0]["id"]) == str(project_id)
        ]

    # --- usage and sessions ----------------------------------------------------------------

    def usage_series(self) -> list[UsageSeries]:
        series = []
        for factor, project in enumerate(self.organization.projects, start=1):
            for outcome, reason, per_category in USAGE_OUTCOMES:
                for category in USAGE_CATEGORIES:
                    per_hour = per_category[category] * factor
                    if per_hour or (outcome, category) == ("accepted", "error"):
                        found = UsageSeries(project["id"], category, outcome, reason, per_hour)
                        series.append(found)
        return series

    def session_series(self) -> list[SessionSeries]:
        """Hourly sessions of each project, release, environment and status: the releases
        of the project, then the ones seen only in sessions."""
        series = []
        for factor, project in enumerate(self.organization.projects, start=1):
            versions = self.versions(project["id"])
            versions += [f"{project['slug']}@0.{n}.0" for n in range(self.session_releases)]
            for rank, version in enumerate(versions, start=1):
                for environment, env_factor in SESSION_ENVIRONMENTS.items():
                    for status, status_factor in SESSION_STATUSES.items():
                        sessions = factor * rank * env_factor * status_factor
                        users = max(1, sessions // 4)
                        series.append(
                            SessionSeries(
                                project["id"], version, environment, status, sessions, users
                            )
                        )
        return series


def _naive(moment: datetime) -> str:
    """Replays' timestamps: UTC, microseconds, no offset (as the description's example)."""
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds")


def _tag_value(key: str, value: str, count: int, issue: Row) -> Row:
    return {
        "key": key,
        "name": value,
        "value": value,
        "count": count,
        "lastSeen": issue["lastSeen"],
        "firstSeen": issue["firstSeen"],
    }


def deploys(release: Row) -> list[Row]:
    """A release's deploys, newest first: none to three, by its id."""
    created = datetime.fromisoformat(release["dateCreated"].replace("Z", "+00:00"))
    rows = []
    for number in range(figure("deploys", release["version"]) % 4):
        started = created + timedelta(hours=2 + number * 5)
        rows.append(
            {
                "id": str(40_000 + figure("deploy", release["version"], number) % 50_000),
                "environment": ("production", "staging")[number % 2],
                "dateStarted": iso(started) if number % 2 == 0 else None,
                "dateFinished": iso(started + timedelta(minutes=7)),
                "name": f"{release['version']} to {('production', 'staging')[number % 2]}"
                if number != 1
                else None,
                "url": f"https://ci.example/deploys/{number}" if number != 2 else None,
            }
        )
    rows.sort(key=lambda row: (row["dateFinished"], row["id"]), reverse=True)
    return rows


def commits(release: Row, organization_created: datetime) -> list[Row]:
    """A release's commits, newest first; none unless its project has a linked repository
    (every other release here)."""
    if figure("repository", release["version"]) % 2:
        return []
    created = datetime.fromisoformat(release["dateCreated"].replace("Z", "+00:00"))
    repository = {
        "id": "31",
        "name": "acme/app",
        "url": "https://git.example/acme/app",
        "provider": {"id": "integrations:github", "name": "GitHub"},
        "status": "active",
        "integrationId": "12",
        "externalSlug": "acme/app",
        "externalId": "5501",
        "dateCreated": iso(organization_created),
    }
    summary = {
        key: release[key]
        for key in ("version", "shortVersion", "ref", "url", "dateReleased", "dateCreated")
    }
    rows = []
    for number in range(1 + figure("commits", release["version"]) % 6):
        sha = hashlib.sha1(f"{release['version']}/{number}".encode()).hexdigest()
        rows.append(
            {
                "id": sha,
                "message": f"Fix the handler ({number})" if number % 4 != 3 else None,
                "dateCreated": iso(created - timedelta(hours=number * 3 + 1)),
                "pullRequest": None,
                "suspectCommitType": "",
                "repository": repository,
                "author": {
                    "name": f"Person {number % 3}",
                    "email": f"person{number % 3}@example.com",
                },
                "releases": [summary],
            }
        )
    return rows


def environment_projects(environment: Row, project_ids: list[str]) -> list[str]:
    """The projects (ids, in the organization's order) that use an environment."""
    if environment["projects"] == "first":
        return project_ids[:1]
    if environment["projects"] == "last":
        return project_ids[-1:] if len(project_ids) > 1 else []
    return list(project_ids)


def environments(visibility: str, project_ids: list[str], chosen: set[str]) -> list[Row]:
    """The environments of the chosen projects, by name, as Sentry lists them: those with
    a link to one of the projects that passes the visibility filter."""
    shown: Iterable[Row] = ENVIRONMENTS
    if visibility == "visible":
        shown = [e for e in ENVIRONMENTS if not e["hidden"]]
    elif visibility == "hidden":
        shown = [e for e in ENVIRONMENTS if e["hidden"]]
    used = [e for e in shown if chosen & set(environment_projects(e, project_ids))]
    return [{"id": e["id"], "name": e["name"]} for e in sorted(used, key=lambda e: e["name"])]
