"""A generated Sentry organization: the data the fake server serves.

Deterministic for a seed. Holds what a real organization holds, traps included:
resolved and ignored issues, archived releases, pending invites (`user` null),
teams without `dateCreated`, events with stack traces spread over more than the
retention period, and "phantom" issues that the search finds but the page drops
(so issue pages come back short). It can change between and during runs.
"""

from __future__ import annotations

import random
import threading
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sentry_extract.testing.code import CodeHistory
from sentry_extract.testing.extras import Extras
from sentry_extract.testing.rows import Row, iso
from sentry_extract.testing.rows import public as public  # tests import it from here


@dataclass(frozen=True)
class OrganizationSize:
    projects: int = 3
    teams: int = 3
    members: int = 8
    releases: int = 12
    issues: int = 40
    events: int = 400
    history_days: int = 120  # events spread over this many days; retention cuts the oldest
    frames: int = 12  # stack frames per exception
    # Deep frames, as Sentry sends them for Python: source lines either side of the
    # frame's line (`context`) and that many local variables (`vars`). 0: a compact frame
    # of two lines and two variables.
    frame_context_lines: int = 0
    frame_vars: int = 2
    phantom_every: int = 7  # one issue in N is found by search but dropped from its page


PROJECT_FLAGS = (
    "hasFeedbacks",
    "hasFlags",
    "hasInsightsAgentMonitoring",
    "hasInsightsAppStart",
    "hasInsightsAssets",
    "hasInsightsCaches",
    "hasInsightsDb",
    "hasInsightsHttp",
    "hasInsightsMCP",
    "hasInsightsQueues",
    "hasInsightsScreenLoad",
    "hasInsightsVitals",
    "hasLogs",
    "hasMinifiedStackTrace",
    "hasNewFeedbacks",
    "hasTraceMetrics",
)
MEMBER_FLAGS = (
    "idp:provisioned",
    "idp:role-restricted",
    "member-limit:restricted",
    "partnership:restricted",
    "sso:invalid",
    "sso:linked",
)
LEVELS = ("error", "warning", "fatal", "info")
STATUSES = ("unresolved", "resolved", "ignored")
SUBSTATUSES = {"unresolved": "ongoing", "resolved": None, "ignored": "archived_forever"}
PLATFORMS = ("python", "javascript", "go", "java")


class FakeOrganization:
    """All rows of one organization, guarded by a lock (the server is threaded)."""

    def __init__(
        self,
        slug: str = "acme",
        size: OrganizationSize = OrganizationSize(),
        seed: int = 7,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.slug = slug
        self.size = size
        self.seed = seed
        self.clock = clock
        self.random = random.Random(seed)
        self.lock = threading.RLock()
        now = clock()
        self.id = "1001"
        self.created = now - timedelta(days=900)
        self.projects: list[Row] = []
        self.teams: list[Row] = []
        self.members: list[Row] = []
        self.releases: list[Row] = []
        self.issues: dict[str, Row] = {}
        self.phantoms: set[str] = set()
        self.redirects: dict[str, str] = {}  # merged-away issue id -> the issue it went into
        self.events: dict[str, list[Row]] = {}  # project id -> events
        self.my_team_ids: set[str] = set()
        self.version = 0  # counts changes made through the methods below
        self._next_id = 5000
        self._frames_by_issue: dict[int, list[Row]] = {}
        self._extras: Extras | None = None
        self._code: CodeHistory | None = None
        self._generate(now)

    # --- generation ----------------------------------------------------------------------

    def _new_id(self) -> str:
        self._next_id += 1
        return str(self._next_id)

    def _generate(self, now: datetime) -> None:
        size = self.size
        for index in range(size.teams):
            created = None if index % 3 == 2 else iso(now - timedelta(days=400 - index))
            self.teams.append(self._team(index, created))
        self.my_team_ids = {self.teams[0]["id"]} if self.teams else set()
        for index in range(size.projects):
            self.add_project(f"project-{index}", team_index=index % max(1, size.teams))
        for index in range(size.members):
            self._add_member(index, pending=index % 4 == 3, now=now)
        for index in range(size.releases):
            self._add_release(index, now, archived=index % 4 == 1)
        for index in range(size.issues):
            project = self.projects[index % len(self.projects)]
            issue = self._new_issue(project, now - timedelta(days=size.history_days))
            if size.phantom_every and index % size.phantom_every == size.phantom_every - 1:
                self.phantoms.add(issue["id"])
        real_issues = [issue for issue in self.issues.values() if issue["id"] not in self.phantoms]
        for index in range(size.events):
            issue = real_issues[index % len(real_issues)]
            age = timedelta(seconds=self.random.uniform(0, size.history_days * 86400))
            self._add_event(issue, now - age)
        for issue in self.issues.values():  # phantoms look recent: they sort among the others
            if issue["id"] in self.phantoms:
                moment = now - timedelta(seconds=self.random.uniform(0, 40 * 86400))
                issue["firstSeen"] = issue["lastSeen"] = iso(moment)

    def _team(self, index: int, created: str | None) -> Row:
        team_id = self._new_id()
        return {
            "id": team_id,
            "slug": f"team-{index}",
            "name": f"Team {index}",
            "dateCreated": created,
            "isMember": index == 0,
            "teamRole": "contributor" if index == 0 else None,
            "flags": {"idp:provisioned": False},
            "access": ["project:read", "event:read"],
            "hasAccess": True,
            "isPending": False,
            "memberCount": 2 + index,
            "avatar": {"avatarType": "letter_avatar", "avatarUuid": None},
            "externalTeams": [],
            "projects": [],
        }

    def add_project(self, slug: str, team_index: int = 0) -> Row:
        with self.lock:
            team = self.teams[team_index] if self.teams else None
            project = {
                "id": self._new_id(),
                "slug": slug,
                "name": slug.replace("-", " ").title(),
                "platform": PLATFORMS[len(self.projects) % len(PLATFORMS)],
                "dateCreated": iso(self.created + timedelta(days=len(self.projects))),
                "isBookmarked": False,
                "isMember": team is not None and team["id"] in self.my_team_ids,
                "hasAccess": True,
                "firstEvent": None,
                "firstTransactionEvent": False,
                "hasSessions": False,
                "hasProfiles": False,
                "hasReplays": False,
                "hasMonitors": False,
                "hasUserReports": False,
                **{flag: False for flag in PROJECT_FLAGS},
                "features": ["releases", "minidump"],
                "access": ["project:read", "event:read"],
                "team": {"id": team["id"], "slug": team["slug"], "name": team["name"]}
                if team
                else None,
                "teams": [{"id": team["id"], "slug": team["slug"], "name": team["name"]}]
                if team
                else [],
                "platforms": [],
                "environments": ["production"],
                "latestRelease": None,
                "latestDeploys": None,
                "options": {},
                "_team_id": team["id"] if team else None,
            }
            self.projects.append(project)
            self.events[str(project["id"])] = []
            return project

    def _add_member(self, index: int, pending: bool, now: datetime) -> None:
        member_id = self._new_id()
        email = f"person{index}@example.com"
        user = (
            None
            if pending
            else {
                "id": str(9000 + index),
                "name": f"Person {index}",
                "email": email,
                "username": email,
                "isActive": True,
                "dateJoined": iso(now - timedelta(days=300)),
                "avatarUrl": f"https://avatars.example/{index}.png",
                "emails": [{"id": str(8000 + index), "email": email, "is_verified": True}],
                "experiments": {},
                "has2fa": index % 2 == 0,
                "hasPasswordAuth": True,
                "isManaged": False,
                "isStaff": False,
                "isSuperuser": False,
                "isSuspended": False,
                "lastActive": iso(now - timedelta(hours=index)),
                "lastLogin": None,
            }
        )
        self.members.append(
            {
                "id": member_id,
                "email": email,
                "name": f"Person {index}" if not pending else email,
                "user": user,
                "orgRole": "member" if index else "owner",
                "pending": pending,
                "expired": False,
                "flags": dict.fromkeys(MEMBER_FLAGS, False),
                "dateCreated": iso(now - timedelta(days=300 - index)),
                "inviteStatus": "requested_to_be_invited" if pending else "approved",
                "inviterName": "Person 0" if pending else None,
                "externalUsers": [],
            }
        )

    def _add_release(
        self, index: int, now: datetime, archived: bool, version: str | None = None
    ) -> Row:
        project = self.projects[index % len(self.projects)]
        created = now - timedelta(days=200 - index * 5)
        release = {
            "id": 700 + index,
            "version": version or f"app@1.{index}.0",
            "shortVersion": version or f"1.{index}.0",
            "status": "archived" if archived else "open",
            "ref": None,
            "url": None,
            "dateReleased": iso(created) if index % 2 else None,
            "dateCreated": iso(created),
            "dateStarted": None,
            "firstEvent": None,
            "lastEvent": None,
            "newGroups": index,
            "commitCount": 0,
            "deployCount": 0,
            "userAgent": None,
            "owner": None,
            "lastCommit": None,
            "lastDeploy": None,
            "versionInfo": {
                "package": "app",
                "version": {"raw": f"1.{index}.0"},
                "buildHash": None,
            },
            "data": {},
            "authors": [],
            "projects": [
                {
                    "id": int(project["id"]),
                    "slug": project["slug"],
                    "name": project["name"],
                    "platform": project["platform"],
                    "platforms": [project["platform"]],
                    "hasHealthData": False,
                    "newGroups": index % 3,
                }
            ],
            "currentProjectMeta": {},
            "adoptionStages": None,
        }
        self.releases.append(release)
        return release

    def _new_issue(self, project: Row, first_seen: datetime) -> Row:
        issue_id = self._new_id()
        number = len(self.issues) + 1
        status = STATUSES[number % 3]
        issue = {
            "id": issue_id,
            "shortId": f"{project['slug'].upper()}-{number}",
            "title": f"ValueError: bad value {number}",
            "culprit": f"app.handlers in handle_{number}",
            "permalink": f"https://sentry.example/organizations/{self.slug}/issues/{issue_id}/",
            "logger": None,
            "level": LEVELS[number % len(LEVELS)],
            "status": status,
            "substatus": SUBSTATUSES[status],
            "statusDetails": {},
            "isPublic": False,
            "platform": project["platform"],
            "priority": "high" if number % 2 else "medium",
            "project": {
                "id": project["id"],
                "name": project["name"],
                "slug": project["slug"],
                "platform": project["platform"],
            },
            "type": "error",
            "issueType": "error",
            "issueCategory": "error",
            "metadata": {
                "type": "ValueError",
                "value": f"bad value {number}",
                "filename": "app/handlers.py",
                "function": f"handle_{number}",
            },
            "numComments": 0,
            "assignedTo": None,
            "isBookmarked": False,
            "isSubscribed": False,
            "hasSeen": False,
            "isUnhandled": bool(number % 2),
            "count": "0",
            "userCount": 0,
            "firstSeen": iso(first_seen),
            "lastSeen": iso(first_seen),
            "shareId": None,
            "annotations": [],
            "stats": {"24h": []},
            "subscriptionDetails": None,
            "derivedData": {
                "blocker": "",
                "hasOpenFixPr": False,
                "hasRootCause": False,
                "isAssigned": False,
                "lastCompletedAutofixStep": "",
                "lastProgressedAt": None,
                "progress": "",
                "status": "",
                "viewCount": 0,
            },
            "filtered": None,
            "inbox": {"date_added": iso(first_seen), "reason": 0, "reason_details": None},
            "integrationIssues": [],
            "sentryAppIssues": [],
            "latestEventHasAttachments": False,
            "lifetime": {},
            "owners": {"date_added": iso(first_seen), "owner": "team:1", "type": "codeowners"},
            "matchingEventEnvironment": None,
            "matchingEventId": None,
            "priorityLockedAt": None,
            "seerAutofixLastTriggered": None,
            "seerExplorerAutofixLastTriggered": None,
            "seerFixabilityScore": None,
            "sessionCount": 0,
        }
        self.issues[issue_id] = issue
        return issue

    def _frames(self, number: int) -> list[Row]:
        """An issue's stack frames, shared by its events (they depend only on the issue):
        an organization of large events stays small in memory."""
        cached = self._frames_by_issue.get(number)
        if cached is None:
            cached = self._frames_by_issue[number] = self._new_frames(number)
        return cached

    def _new_frames(self, number: int) -> list[Row]:
        if self.size.frame_context_lines:
            return [self._deep_frame(number, depth) for depth in range(self.size.frames)]
        return [
            {
                "filename": f"app/module_{depth}.py",
                "absPath": f"/srv/app/app/module_{depth}.py",
                "module": f"app.module_{depth}",
                "function": f"function_{depth}_{number % 17}",
                "lineNo": 10 + depth * 7,
                "colNo": None,
                "inApp": depth > 2,
                "context": [
                    [9 + depth * 7, "    value = compute()"],
                    [10 + depth * 7, "    return transform(value)"],
                ],
                "vars": {"value": f"'{number}'", "depth": str(depth)},
            }
            for depth in range(self.size.frames)
        ]

    def _deep_frame(self, number: int, depth: int) -> Row:
        """A frame with source lines around its line and several small local variables:
        many small JSON values, as Sentry's Python SDK sends them."""
        line = 10 + depth * 7
        around = self.size.frame_context_lines
        return {
            "filename": f"app/m{depth}.py",
            "module": f"app.m{depth}",
            "function": f"f{depth}_{number % 17}",
            "lineNo": line,
            "inApp": depth > 2,
            "context": [
                [line + offset, f"v{offset + around}=g()"] for offset in range(-around, around + 1)
            ],
            "vars": {f"v{index}": f"'{index}'" for index in range(self.size.frame_vars)},
        }

    def _add_event(self, issue: Row, created: datetime, received: datetime | None = None) -> Row:
        project_id = issue["project"]["id"]
        event_id = uuid.UUID(int=self.random.getrandbits(128)).hex
        number = int(issue["shortId"].rsplit("-", 1)[1])
        event = {
            "id": event_id,
            "event.type": "error",
            "groupID": issue["id"],
            "eventID": event_id,
            "projectID": project_id,
            "message": issue["title"],
            "title": issue["title"],
            "location": "app/handlers.py",
            "culprit": issue["culprit"],
            "user": {
                "id": str(number % 50),
                "email": f"user{number % 50}@example.com",
                "username": None,
                "ip_address": "10.0.0.1",
                "name": None,
                "data": None,
            },
            "tags": [
                {"key": "environment", "value": "production"},
                {"key": "level", "value": issue["level"]},
            ],
            "platform": issue["platform"],
            "dateCreated": iso(created),
            "crashFile": None,
            "metadata": dict(issue["metadata"]),
            # full=true only:
            "entries": [
                {
                    "type": "exception",
                    "data": {
                        "values": [
                            {
                                "type": "ValueError",
                                "value": issue["metadata"]["value"],
                                "mechanism": {"type": "generic", "handled": False},
                                "stacktrace": {
                                    "frames": self._frames(number),
                                    "framesOmitted": None,
                                },
                            }
                        ]
                    },
                },
                {
                    "type": "breadcrumbs",
                    "data": {
                        "values": [
                            {
                                "timestamp": iso(created),
                                "category": "http",
                                "level": "info",
                                "message": f"GET /items/{number}",
                                "type": "http",
                                "data": None,
                            },
                        ]
                    },
                },
            ],
            "contexts": {
                "os": {"name": "Linux", "version": "6.1"},
                "runtime": {"name": "CPython", "version": "3.11.7"},
            },
            "context": {},
            "sdk": {"name": "sentry.python", "version": "2.19.0"},
            "dateReceived": iso(received or created),
            "errors": [],
            "fingerprints": ["{{ default }}"],
            "packages": {},
            "size": 4000 + number,
            "release": None,
        }
        self.events[project_id].append(event)
        self.version += 1
        if iso(created) > issue["lastSeen"]:
            issue["lastSeen"] = iso(created)
        if iso(created) < issue["firstSeen"]:
            issue["firstSeen"] = iso(created)
        issue["count"] = str(int(issue["count"]) + 1)
        issue["userCount"] = min(int(issue["count"]), 50)
        return event

    # --- changes between (and during) runs ----------------------------------------------

    def add_events(
        self,
        count: int,
        project_slug: str | None = None,
        age: timedelta = timedelta(0),
        issue_id: str | None = None,
        new_issue: bool = False,
    ) -> list[Row]:
        """Events created `age` ago (0: now; larger: late arrivals with old timestamps)."""
        with self.lock:
            now = self.clock()
            project = self.project(project_slug) if project_slug else self.projects[0]
            if new_issue:
                issue = self._new_issue(project, now - age)
            elif issue_id is not None:
                issue = self.issues[issue_id]
            else:
                candidates = [
                    i
                    for i in self.issues.values()
                    if i["project"]["id"] == project["id"] and i["id"] not in self.phantoms
                ]
                issue = candidates[0] if candidates else self._new_issue(project, now - age)
            return [self._add_event(issue, now - age, received=now) for _ in range(count)]

    def set_issue_status(self, issue_id: str, status: str) -> None:
        """A new status (and the substatus Sentry gives it); `lastSeen` stays as it was."""
        with self.lock:
            self.issues[issue_id]["status"] = status
            self.issues[issue_id]["substatus"] = SUBSTATUSES[status]
            self.code.status_changed(self.issues[issue_id], status)

    def delete_issue(self, issue_id: str) -> None:
        """The issue and its events are gone (deleted, or merged away)."""
        with self.lock:
            issue = self.issues.pop(issue_id)
            events = self.events[issue["project"]["id"]]
            events[:] = [event for event in events if event["groupID"] != issue_id]
            self.version += 1

    def merge_issues(self, merged_ids: Iterable[str], survivor_id: str) -> Row:
        """Merge issues into `survivor_id` as Sentry does: their events move to it (their
        `groupID` becomes the survivor's), its count and seen times take theirs in, the
        merged issues are gone, and their ids (and ids merged into them before) redirect
        to the survivor."""
        merged_ids = list(merged_ids)
        with self.lock:
            survivor = self.issues[survivor_id]
            for merged_id in merged_ids:
                merged = self.issues.pop(merged_id)
                for event in self.events[merged["project"]["id"]]:
                    if event["groupID"] == merged_id:
                        event["groupID"] = survivor_id
                survivor["count"] = str(int(survivor["count"]) + int(merged["count"]))
                survivor["lastSeen"] = max(survivor["lastSeen"], merged["lastSeen"])
                survivor["firstSeen"] = min(survivor["firstSeen"], merged["firstSeen"])
                for old, target in list(self.redirects.items()):
                    if target == merged_id:
                        self.redirects[old] = survivor_id
                self.redirects[merged_id] = survivor_id
            self.code.merged(survivor, merged_ids)
            self.version += 1
            return survivor

    def set_release_status(self, version: str, status: str) -> None:
        with self.lock:
            next(r for r in self.releases if r["version"] == version)["status"] = status

    def add_release(self, archived: bool = False, version: str | None = None) -> Row:
        """A new release (`version` may hold `@`, `+` and `/`, as real ones do)."""
        with self.lock:
            return self._add_release(len(self.releases), self.clock(), archived, version)

    @property
    def extras(self) -> Extras:
        """Monitors, replays, feedback and the rest, made the first time they are asked for."""
        with self.lock:
            if self._extras is None:
                self._extras = Extras(self)
            return self._extras

    @property
    def code(self) -> CodeHistory:
        """Repositories, commits and the issues' activity, made the first time asked for."""
        with self.lock:
            if self._code is None:
                self._code = CodeHistory(self)
            return self._code

    def add_checkins(self, count: int, monitor_slug: str | None = None) -> list[Row]:
        """Check-ins newer than all others, for a monitor (default the first)."""
        with self.lock:
            return self.extras.add_checkins(count, monitor_slug)

    def add_monitor(self, slug: str, project_slug: str) -> Row:
        """A new monitor (with its check-ins); another project may have one with this slug."""
        with self.lock:
            return self.extras.add_monitor(slug, project_slug)

    def add_session_releases(self, count: int) -> None:
        """`count` more releases in each project's sessions (no release object behind
        them): groups of release health by the thousand, cheaply."""
        with self.lock:
            self.extras.session_releases += count

    def add_replays(self, count: int, project_slug: str | None = None) -> list[Row]:
        with self.lock:
            return self.extras.add_replays(count, project_slug)

    def set_tag_values(self, issue_id: str, key: str, count: int) -> None:
        """Give an issue `count` distinct values of a tag (more than the 1,000 served)."""
        with self.lock:
            self.extras.tag_value_counts[(issue_id, key)] = count

    def add_member(self, pending: bool = False) -> None:
        with self.lock:
            self._add_member(len(self.members), pending, self.clock())

    def project(self, slug: str) -> Row:
        return next(project for project in self.projects if project["slug"] == slug)

    # --- what a complete extraction must hold ----------------------------------------------

    def visible_events(self, retention: timedelta, until: datetime | None = None) -> list[Row]:
        """Events a reader can get: inside retention, created before `until`."""
        with self.lock:
            now = self.clock()
            oldest = iso(now - retention)
            latest = iso(until) if until else None
            return [
                event
                for events in self.events.values()
                for event in events
                if event["dateCreated"] >= oldest
                and (latest is None or event["dateCreated"] < latest)
            ]

    def visible_issues(self, retention: timedelta, until: datetime | None = None) -> list[Row]:
        with self.lock:
            oldest = iso(self.clock() - retention)
            latest = iso(until) if until else None
            return [
                issue
                for issue in self.issues.values()
                if issue["id"] not in self.phantoms
                and issue["lastSeen"] >= oldest
                and (latest is None or issue["lastSeen"] < latest)
            ]

    def my_project_ids(self) -> set[str]:
        return {p["id"] for p in self.projects if p["_team_id"] in self.my_team_ids}
