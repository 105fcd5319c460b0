"""The fake organization's code and issue history, made on first use
(`FakeOrganization.code`).

- repositories: two active, one disabled (Sentry lists only active ones unless asked for
  `status=deleted`), by name; the one release commits name (`acme/app`, id 31) among them;
- commits per repository, newest first by the date Sentry recorded them (its
  `date_added`, served as `dateCreated`), as `DateTimePaginator` orders them;
- each issue's activity, as Sentry's `Activity.objects.get_activities_for_group(num=100)`
  gives it: newest first, a run of the same (type, ident, user) other than notes kept
  once, at most 100, ending with a made-up `first_seen` entry (id 0, at the issue's
  `firstSeen`) unless the 100 are full. Status changes and merges add entries.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta
from typing import Protocol

from sentry_extract.testing.rows import Row, iso, parse_iso

ACTIVITY_CAP = 100
REPOSITORIES = (
    ("31", "acme/app", "active", 40),
    ("32", "acme/api", "active", 130),
    ("33", "acme/legacy", "disabled", 5),
)
PEOPLE = (
    {"id": "9000", "name": "Person 0", "email": "person0@example.com"},
    {"id": "9001", "name": "Person 1", "email": "person1@example.com"},
)
STATUS_ACTIVITY = {"resolved": "set_resolved", "ignored": "set_ignored"}


class Organization(Protocol):
    created: datetime
    issues: dict[str, Row]

    def clock(self) -> datetime: ...


def _sha(*parts: object) -> str:
    return hashlib.sha1("/".join(str(part) for part in parts).encode()).hexdigest()


class CodeHistory:
    """Repositories, their commits and the issues' activity; `organization.lock` guards them."""

    def __init__(self, organization: Organization) -> None:
        self.organization = organization
        now = organization.clock()
        self.repositories: list[Row] = []
        self.commits: dict[str, list[Row]] = {}  # repository id -> commits, oldest first
        for repository_id, name, status, count in REPOSITORIES:
            self.repositories.append(self._repository(repository_id, name, status))
            span = now - organization.created
            self.commits[repository_id] = [
                self._commit(repository_id, number, organization.created + span * number / count)
                for number in range(count)
            ]
        self._activity: dict[str, list[Row]] = {}  # issue id -> entries, oldest first
        self._next_activity = 70_000

    def _repository(self, repository_id: str, name: str, status: str) -> Row:
        return {
            "id": repository_id,
            "name": name,
            "url": f"https://git.example/{name}",
            "provider": {"id": "integrations:github", "name": "GitHub"},
            "status": status,
            "dateCreated": iso(self.organization.created),
            "integrationId": "12",
            "externalSlug": name,
            "externalId": str(5500 + int(repository_id)),
        }

    def _commit(self, repository_id: str, number: int, added: datetime) -> Row:
        person = PEOPLE[number % len(PEOPLE)]
        return {
            "id": _sha(repository_id, number),
            "message": f"Change {number}" if number % 7 != 6 else None,
            "dateCreated": iso(added),
            "pullRequest": None,
            "suspectCommitType": "",
            "author": {"name": person["name"], "email": person["email"]},
        }

    def listed_repositories(self, status: str) -> list[Row]:
        """As `repos/?status=` lists them: `active` (the default), `deleted` (every
        other), empty (all); by name."""
        if status == "active":
            shown = [r for r in self.repositories if r["status"] == "active"]
        elif status == "deleted":
            shown = [r for r in self.repositories if r["status"] != "active"]
        elif status == "":
            shown = list(self.repositories)
        else:
            shown = []
        return sorted(shown, key=lambda row: row["name"])

    def repository(self, repository_id: str) -> Row | None:
        return next((r for r in self.repositories if r["id"] == repository_id), None)

    def newest_commits_first(self, repository_id: str) -> list[Row]:
        return sorted(self.commits[repository_id], key=lambda row: row["dateCreated"])[::-1]

    def add_commits(self, repository_id: str, count: int) -> list[Row]:
        """Commits recorded now, newer than all others."""
        commits = self.commits[repository_id]
        now = self.organization.clock()
        added = [
            self._commit(repository_id, len(commits) + index, now + timedelta(seconds=index))
            for index in range(count)
        ]
        commits.extend(added)
        return added

    def disable_repository(self, repository_id: str) -> None:
        repository = self.repository(repository_id)
        assert repository is not None
        repository["status"] = "disabled"

    # --- issue activity --------------------------------------------------------------------

    def _entries(self, issue: Row) -> list[Row]:
        """An issue's recorded activity, oldest first; a closed issue starts with the
        change that closed it, every third issue with an assignment and a comment."""
        issue_id = issue["id"]
        if issue_id not in self._activity:
            entries: list[Row] = []
            first_seen = parse_iso(issue["firstSeen"])
            number = int(issue_id)
            if number % 3 == 0:
                person = PEOPLE[number % 2]
                entries.append(
                    self._entry(
                        "assigned",
                        first_seen + timedelta(hours=1),
                        PEOPLE[1],
                        {"assignee": person["id"], "assigneeType": "user"},
                    )
                )
                entries.append(
                    self._entry(
                        "note",
                        first_seen + timedelta(hours=2),
                        PEOPLE[0],
                        {"text": f"Looking into {issue['shortId']}"},
                    )
                )
            change = STATUS_ACTIVITY.get(issue["status"])
            if change is not None:
                moment = parse_iso(issue["lastSeen"]) + timedelta(hours=3)
                entries.append(self._entry(change, moment, PEOPLE[number % 2], {}))
            self._activity[issue_id] = entries
        return self._activity[issue_id]

    def _entry(self, kind: str, moment: datetime, user: Row | None, data: Row) -> Row:
        self._next_activity += 1
        return {
            "id": str(self._next_activity),
            "type": kind,
            "dateCreated": iso(moment),
            "user": dict(user) if user else None,
            "data": data,
            "_ident": None,
        }

    def record(self, issue: Row, kind: str, data: Row | None = None) -> Row:
        """A new entry for `issue`, now (a status change, a merge, a comment...)."""
        entries = self._entries(issue)
        entry = self._entry(kind, self.organization.clock(), PEOPLE[0], data or {})
        entries.append(entry)
        return entry

    def status_changed(self, issue: Row, status: str) -> None:
        self.record(issue, STATUS_ACTIVITY.get(status, "set_unresolved"))

    def merged(self, survivor: Row, merged_ids: list[str]) -> None:
        self.record(survivor, "merge", {"issues": [{"id": issue} for issue in merged_ids]})

    def activity(self, issue: Row) -> list[Row]:
        """What the issue's details hold under `activity`."""
        newest_first = sorted(self._entries(issue), key=lambda row: row["dateCreated"])[::-1]
        shown: list[Row] = []
        previous = None
        for entry in newest_first[: ACTIVITY_CAP * 2]:
            signature = (entry["type"], entry["_ident"], (entry["user"] or {}).get("id"))
            if entry["type"] == "note" or signature != previous:
                shown.append(entry)
            previous = signature
        first_seen = {
            "id": "0",
            "type": "first_seen",
            "dateCreated": issue["firstSeen"],
            "user": None,
            "data": {},
            "_ident": None,
        }
        shown.append(first_seen)
        return [
            {key: value for key, value in row.items() if not key.startswith("_")}
            for row in shown[:ACTIVITY_CAP]
        ]
