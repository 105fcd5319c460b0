"""The fake Sentry's control routes: GET `/_fake/NAME?...` from another process looks at
the fake or changes it, and answers JSON (a bad parameter: 400 `{"detail": ...}`).

Looking: `stats`, `requests`, `event_keys` (what a complete extraction holds), `issues`
(id, shortId, status, lastSeen and project of each issue a reader can get, newest first,
to pick ids from).
Pacing a client (the benchmarks): `reset` the request log, `hold?after=N` (answer N more
requests, hold the rest), `release`.
Changing the organization as people change Sentry:
- `add_events?count=100&projects=all` (or slugs, comma separated): events created now;
- `new_issue?project=SLUG&events=N`: a new unresolved issue with N events created now;
- `resolve?issue=ID&status=resolved|ignored|unresolved`: the status only; `lastSeen`
  stays, so only a reconcile sees it, as with Sentry;
- `delete?issue=ID`: the issue and its events are gone;
- `merge?issues=A,B&into=C`: A and B merge into C (one project), their ids redirect to C.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sentry_extract.testing.fake_http import BadRequest, Params, one
from sentry_extract.testing.fake_state import FakeState
from sentry_extract.testing.organization import STATUSES
from sentry_extract.testing.rows import Row

ALL_PROJECTS = "all"
MAX_COUNT = 100_000


def compact(issue: Row) -> dict[str, Any]:
    """What a person needs to pick an issue: its ids, status, last seen and project."""
    return {
        "id": issue["id"],
        "shortId": issue["shortId"],
        "status": issue["status"],
        "lastSeen": issue["lastSeen"],
        "project": issue["project"]["slug"],
    }


def _count(params: Params, name: str, default: int) -> int:
    text = one(params, name)
    if text is None:
        return default
    if not text.isdigit() or not 1 <= int(text) <= MAX_COUNT:
        raise BadRequest(f"{name}: '{text}' is not a number from 1 to {MAX_COUNT}")
    return int(text)


def _required(params: Params, name: str) -> str:
    text = one(params, name)
    if not text:
        raise BadRequest(f"{name} is required")
    return text


def _project_slugs(fake: FakeState, text: str) -> list[str]:
    known = [project["slug"] for project in fake.organization.projects]
    slugs = known if text == ALL_PROJECTS else text.split(",")
    unknown = [slug for slug in slugs if slug not in known]
    if unknown:
        raise BadRequest(f"no project '{unknown[0]}'; the projects: {', '.join(known)}")
    return slugs


def _issue_id(fake: FakeState, text: str) -> str:
    issues = fake.organization.issues
    if text not in issues or text in fake.organization.phantoms:
        raise BadRequest(f"no issue '{text}' (GET /_fake/issues lists them)")
    return text


# --- looking ---------------------------------------------------------------------------


def _requests(fake: FakeState, params: Params) -> Any:
    return [{"path": r.path, "params": r.params, "status": r.status} for r in fake.requests_to("")]


def _stats(fake: FakeState, params: Params) -> Any:
    return fake.stats()


def _event_keys(fake: FakeState, params: Params) -> Any:
    return fake.event_keys()


def _issues(fake: FakeState, params: Params) -> Any:
    shown = fake.organization.visible_issues(fake.settings.retention)
    shown.sort(key=lambda issue: (issue["lastSeen"], int(issue["id"])), reverse=True)
    return [compact(issue) for issue in shown]


# --- pacing ----------------------------------------------------------------------------


def _reset(fake: FakeState, params: Params) -> Any:
    fake.reset_log()
    return {"reset": True}


def _hold(fake: FakeState, params: Params) -> Any:
    text = one(params, "after") or "0"
    if not text.isdigit():
        raise BadRequest(f"after: '{text}' is not a number of requests")
    fake.hold(int(text))
    return {"hold_after": fake.hold_after}


def _release(fake: FakeState, params: Params) -> Any:
    fake.release()
    return {"released": True}


# --- changing --------------------------------------------------------------------------


def _add_events(fake: FakeState, params: Params) -> Any:
    slugs = _project_slugs(fake, one(params, "projects") or ALL_PROJECTS)
    return {"added": fake.add_events_to(_count(params, "count", 1), slugs)}


def _new_issue(fake: FakeState, params: Params) -> Any:
    organization = fake.organization
    default = organization.projects[0]["slug"]
    (slug,) = _project_slugs(fake, one(params, "project") or default)
    with organization.lock:
        events = organization.add_events(_count(params, "events", 1), slug, new_issue=True)
        issue_id = events[0]["groupID"]
        organization.set_issue_status(issue_id, "unresolved")  # as a new issue is in Sentry
        return compact(organization.issues[issue_id])


def _resolve(fake: FakeState, params: Params) -> Any:
    status = one(params, "status") or "resolved"
    if status not in STATUSES:
        raise BadRequest(f"status: '{status}' is not one of {', '.join(STATUSES)}")
    organization = fake.organization
    with organization.lock:
        issue_id = _issue_id(fake, _required(params, "issue"))
        organization.set_issue_status(issue_id, status)
        return compact(organization.issues[issue_id])


def _delete(fake: FakeState, params: Params) -> Any:
    with fake.organization.lock:
        issue_id = _issue_id(fake, _required(params, "issue"))
        fake.organization.delete_issue(issue_id)
    return {"deleted": issue_id}


def _merge(fake: FakeState, params: Params) -> Any:
    organization = fake.organization
    with organization.lock:
        survivor_id = _issue_id(fake, _required(params, "into"))
        named = dict.fromkeys(_required(params, "issues").split(","))
        merged_ids = [_issue_id(fake, text) for text in named]
        if survivor_id in merged_ids:
            raise BadRequest(f"issue '{survivor_id}' cannot be merged into itself")
        project = organization.issues[survivor_id]["project"]["slug"]
        for merged_id in merged_ids:
            if organization.issues[merged_id]["project"]["slug"] != project:
                raise BadRequest(
                    f"issue '{merged_id}' is not in project '{project}': Sentry merges "
                    "issues of one project"
                )
        survivor = organization.merge_issues(merged_ids, survivor_id)
        return {"merged": merged_ids, "into": compact(survivor)}


ROUTES: dict[str, Callable[[FakeState, Params], Any]] = {
    "stats": _stats,
    "requests": _requests,
    "event_keys": _event_keys,
    "issues": _issues,
    "reset": _reset,
    "hold": _hold,
    "release": _release,
    "add_events": _add_events,
    "new_issue": _new_issue,
    "resolve": _resolve,
    "delete": _delete,
    "merge": _merge,
}
