"""The fake Sentry's endpoints beyond the seven streams, traps included.

- usage (`stats_v2`, `stats-summary`) and release health (`sessions`): `field` required,
  `start`/`end` both or neither, and a `start` older than the retention is a 400 (the list
  endpoints clamp silently); intervals from 1h, aligned to themselves; `groupBy=project`
  collapses stats_v2's series into one total; sessions keep the largest
  `5000 // intervals` groups of project, release and environment and drop the rest
  silently (each kept group split into its statuses), and refuse more than 1,000
  intervals;
- environments: hidden ones vanish unless `visibility=all` (or `hidden`); without
  `project=-1` only those used in the caller's teams' projects; ordered by name;
- release deploys and commits: the version arrives URL-encoded (an unencoded `/` is a
  404); releases without a linked repository have no commits;
- monitors and their check-ins (newest first, offset cursor); a monitor's slug may repeat
  in another project, and by slug the check-ins route answers the oldest monitor with it
  (by id, its own); replays (rows under `data`,
  `field` must be in the description's list, only those fields come back);
- user feedback per project, only on unresolved issues unless `status=` (empty), filtered
  after paging (short pages); issue tag values, at most 1,000 per key (the most recently
  seen), then `results="false"` although more exist;
- the Explore/Discover index (`organizations/{org}/events/`): `dataset` and `field`
  required, at most 20 fields, `sort` must name a requested field, the last 14 days
  without `start`/`end`, offset paging silently stops at 10,000 rows and a cursor past
  them is a 400; `count()` groups by the other fields. `dataset=spans` and `dataset=logs`
  serve the spans and logs of `fake_traces.py`, filtered by `query`.
"""

from __future__ import annotations

import bisect
import re
import weakref
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import unquote

from sentry_extract.testing.extras import (
    ATTACHMENT_SIZE,
    SessionSeries,
    UsageSeries,
    commits,
    deploys,
    environments,
    weight,
)
from sentry_extract.testing.fake_http import (
    NOT_FOUND,
    Answer,
    BadRequest,
    Params,
    link_header,
    many,
    offset_page,
    one,
    page_size,
    read_cursor,
    selected_projects,
    time_window,
)
from sentry_extract.testing.fake_state import FakeState
from sentry_extract.testing.fake_traces import ITEMS, is_field_name, matches
from sentry_extract.testing.organization import FakeOrganization
from sentry_extract.testing.rows import Row, iso, public

Endpoint = Callable[[FakeState, dict[str, str], Params], Answer]

HOUR = 3600
DAY = 86400
STATS_FIELDS = ("sum(quantity)", "sum(times_seen)")
STATS_GROUPS = ("outcome", "category", "reason", "project")
SUMMARY_OUTCOMES = (
    "accepted",
    "filtered",
    "rate_limited",
    "invalid",
    "abuse",
    "client_discard",
    "cardinality_limited",
)
SESSION_FIELDS = ("sum(session)", "count_unique(user)")
SESSION_GROUPS = ("project", "release", "environment", "session.status")
SESSION_STATUS = "session.status"
SNUBA_LIMIT = 5_000  # data points of one sessions answer (sessions_v2.SNUBA_LIMIT)
MAX_SESSION_INTERVALS = 1_000  # intervals of one sessions request (sessions_v2.MAX_POINTS)
DEFAULT_PERIOD = timedelta(days=14)
REPLAY_FIELDS = (
    "activity",
    "browser",
    "count_dead_clicks",
    "count_errors",
    "count_rage_clicks",
    "count_segments",
    "count_urls",
    "device",
    "dist",
    "duration",
    "environment",
    "error_ids",
    "finished_at",
    "id",
    "is_archived",
    "os",
    "platform",
    "project_id",
    "releases",
    "sdk",
    "started_at",
    "tags",
    "trace_ids",
    "segment_names",
    "urls",
    "user",
    "clicks",
    "info_ids",
    "warning_ids",
    "count_warnings",
    "count_infos",
    "has_viewed",
)
REPLAY_SORTS = ("started_at", "finished_at", "duration", "count_errors", "activity")
MAX_TAG_VALUES = 1000
EXPLORE_DEFAULT_PAGE = 50
EXPLORE_MAX_FIELDS = 20
EXPLORE_FIELDS = {  # name -> the type `meta.fields` reports
    "id": "string",
    "project.id": "integer",
    "project": "string",
    "issue.id": "integer",
    "issue": "string",
    "title": "string",
    "message": "string",
    "level": "string",
    "timestamp": "date",
    "environment": "string",
    "release": "string",
    "platform": "string",
    "culprit": "string",
    "event.type": "string",
    "user.id": "string",
    "user.email": "string",
    "trace": "string",
    "transaction": "string",
    "location": "string",
}
COUNT = "count()"
FORBIDDEN = "You do not have permission to perform this action."
EXPIRED_RANGE = "Invalid date range. Please try a more recent date range."


# --- time series: usage and sessions ---------------------------------------------------------


def _strict_window(fake: FakeState, params: Params) -> tuple[datetime, datetime]:
    """The period asked for; older than the retention is a 400, not a silent clamp."""
    now = fake.organization.clock()
    if not any(one(params, name) for name in ("start", "end", "statsPeriod")):
        return now - DEFAULT_PERIOD, now
    begin, finish = time_window(params, now, timedelta(days=36500))
    if begin < now - fake.settings.retention:
        raise BadRequest(EXPIRED_RANGE)
    if finish <= begin:
        raise BadRequest("start must be before end")
    return begin, finish


def _interval(params: Params, largest: int | None) -> int:
    """The interval in seconds: from 1h, dividing a day (or whole days, if no largest)."""
    text = one(params, "interval") or "1h"
    match = re.fullmatch(r"(\d+)([mhd])", text)
    if match is None:
        raise BadRequest(f"Invalid interval: {text}")
    seconds = int(match.group(1)) * {"m": 60, "h": HOUR, "d": DAY}[match.group(2)]
    too_large = largest is not None and seconds > largest
    if seconds < HOUR or too_large or (DAY % seconds and seconds % DAY):
        raise BadRequest(
            f"Invalid interval: {text}. The interval has to be between 1h and 1d "
            "and divide a day evenly."
        )
    return seconds


def _intervals(begin: datetime, finish: datetime, step: int) -> list[int]:
    """Interval starts (epoch seconds), the first floored to the interval."""
    first = int(begin.timestamp()) // step * step
    return list(range(first, int(finish.timestamp()), step))


def _stamp(seconds: int | float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _hours(start: int, step: int, finish: datetime) -> tuple[int, int]:
    """The epoch hours an interval holds, cut at `finish` (no figures in the future)."""
    last = -(-int(finish.timestamp()) // HOUR)
    return start // HOUR, min((start + step) // HOUR, last)


def _events_per_hour(fake: FakeState, projects: set[str], begin: int, end: int) -> dict[Any, int]:
    """Events by (project id, epoch hour) created in [begin, end) (epoch seconds)."""
    low, high = iso(datetime.fromtimestamp(begin, UTC)), iso(datetime.fromtimestamp(end, UTC))
    counts: dict[Any, int] = {}
    for project_id in projects:
        for event in fake.organization.events.get(project_id, []):
            created = event["dateCreated"]
            if low <= created < high:
                hour = int(datetime.fromisoformat(created.replace("Z", "+00:00")).timestamp())
                key = (project_id, hour // HOUR)
                counts[key] = counts.get(key, 0) + 1
    return counts


def _usage(series: UsageSeries, hours: tuple[int, int], events: dict[Any, int]) -> tuple[int, int]:
    """(quantity, times seen) of one usage series over a range of epoch hours."""
    if (series.outcome, series.category) == ("accepted", "error"):
        count = sum(events.get((series.project_id, hour), 0) for hour in range(*hours))
        return count, count
    quantity = series.per_hour * weight(*hours)
    if series.category == "attachment":
        return quantity, quantity // ATTACHMENT_SIZE
    return quantity, quantity // 2


def _stats_field(params: Params) -> str:
    field = one(params, "field")
    if field not in STATS_FIELDS:
        raise BadRequest(f"Invalid field: {field!r}. Must be one of {', '.join(STATS_FIELDS)}")
    return field


def _stats_v2(fake: FakeState, match: dict[str, str], params: Params) -> Answer:
    field = _stats_field(params)
    group_by = many(params, "groupBy")
    if not group_by:
        raise BadRequest("At least one groupBy is required")
    for name in group_by:
        if name not in STATS_GROUPS:
            raise BadRequest(f"Invalid groupBy: {name}")
    step = _interval(params, DAY)
    begin, finish = _strict_window(fake, params)
    starts = _intervals(begin, finish, step)
    wanted = many(params, "project")
    organization = fake.organization
    with organization.lock:
        every = {project["id"] for project in organization.projects}
        projects = every if not wanted or "-1" in wanted else every & set(wanted)
        category, outcome = one(params, "category"), one(params, "outcome")
        chosen = [
            series
            for series in organization.extras.usage_series()
            if series.project_id in projects
            and category in (None, series.category)
            and outcome in (None, series.outcome)
            and one(params, "reason") in (None, series.reason)
        ]
        events = _events_per_hour(fake, projects, starts[0], starts[-1] + step) if starts else {}
    index = 1 if field == "sum(times_seen)" else 0
    groups: dict[tuple[str, ...], list[int]] = {}
    for series in chosen:
        labels = {
            "outcome": series.outcome,
            "category": series.category,
            "reason": series.reason,
            "project": series.project_id,
        }
        key = tuple(labels[name] for name in group_by)
        values = groups.setdefault(key, [0] * len(starts))
        for position, start in enumerate(starts):
            values[position] += _usage(series, _hours(start, step, finish), events)[index]
    answer = []
    for key, values in sorted(groups.items()):
        total = sum(values)
        if not total:
            continue  # only groups with something in them
        if "project" in group_by and values:  # one total for the whole period
            values = [0] * (len(values) - 1) + [total]
        by: dict[str, Any] = dict(zip(group_by, key, strict=True))
        if "project" in by:
            by["project"] = int(by["project"])
        answer.append({"by": by, "totals": {field: total}, "series": {field: values}})
    return Answer(
        {
            "start": _stamp(starts[0]) if starts else _stamp(begin.timestamp()),
            "end": _stamp(finish.timestamp()),
            "intervals": [_stamp(start) for start in starts],
            "groups": answer,
        }
    )


def _stats_summary(fake: FakeState, match: dict[str, str], params: Params) -> Answer:
    field = _stats_field(params)
    begin, finish = _strict_window(fake, params)
    organization = fake.organization
    with organization.lock:
        projects = selected_projects(fake, params)
        if not projects and not many(params, "project"):
            raise BadRequest("No projects available")
        first = int(begin.timestamp()) // HOUR * HOUR
        hours = (first // HOUR, -(-int(finish.timestamp()) // HOUR))
        events = _events_per_hour(fake, projects, first, hours[1] * HOUR)
        index = 1 if field == "sum(times_seen)" else 0
        figures: dict[tuple[str, str], dict[str, int]] = {}
        for series in organization.extras.usage_series():
            if series.project_id in projects:
                outcomes = figures.setdefault(
                    (series.project_id, series.category), dict.fromkeys(SUMMARY_OUTCOMES, 0)
                )
                outcomes[series.outcome] += _usage(series, hours, events)[index]
        rows = []
        for project in organization.projects:
            if project["id"] not in projects:
                continue
            stats = []
            for (project_id, category), outcomes in figures.items():
                if project_id == project["id"]:
                    dropped = sum(outcomes[o] for o in ("rate_limited", "invalid", "abuse"))
                    totals = {"dropped": dropped, field: sum(outcomes.values())}
                    stats.append({"category": category, "outcomes": outcomes, "totals": totals})
            rows.append({"id": project["id"], "slug": project["slug"], "stats": stats})
    return Answer({"start": _stamp(first), "end": _stamp(finish.timestamp()), "projects": rows})


def _sessions(fake: FakeState, match: dict[str, str], params: Params) -> Answer:
    """As `run_sessions_query` (release_health/metrics_sessions_v2.py): the largest
    `SNUBA_LIMIT // intervals` groups of project, release and environment by the first
    field (`sum(session)` if asked), each then split into its session statuses; the
    groups past that number are dropped silently. Past 1,000 intervals, a 400."""
    fields, group_by = _session_fields(params), _session_group_by(params)
    step = _interval(params, DAY)
    begin, finish = _strict_window(fake, params)
    starts = _intervals(begin, finish, step)
    if len(starts) > MAX_SESSION_INTERVALS:
        raise BadRequest(
            "Your interval and date range would create too many results. "
            "Use a larger interval, or a smaller date range."
        )
    organization = fake.organization
    with organization.lock:
        projects = selected_projects(fake, params)
        chosen = [s for s in organization.extras.session_series() if s.project_id in projects]
    primary = "sum(session)" if "sum(session)" in fields else fields[0]  # _get_primary_field
    groups = _largest_session_groups(chosen, group_by, primary, len(starts))
    spans = [weight(*_hours(start, step, finish)) for start in starts]
    answer = []
    for key, members in groups:
        per_field = {
            "sum(session)": sum(s.sessions for s in members),
            "count_unique(user)": sum(s.users for s in members),
        }
        values = {field: [float(per_field[field] * span) for span in spans] for field in fields}
        by: dict[str, Any] = dict(zip(group_by, key, strict=True))
        if "project" in by:
            by["project"] = int(by["project"])
        totals = {field: float(sum(figures)) for field, figures in values.items()}
        answer.append({"by": by, "totals": totals, "series": values})
    return Answer(
        {
            "start": _stamp(starts[0]) if starts else _stamp(begin.timestamp()),
            "end": _stamp(finish.timestamp()),
            "intervals": [_stamp(start) for start in starts],
            "groups": answer,
            "query": one(params, "query") or "",
        }
    )


def _session_fields(params: Params) -> list[str]:
    fields = many(params, "field")
    if not fields:
        raise BadRequest('Request is missing a "field"')
    for field in fields:
        if field not in SESSION_FIELDS:
            raise BadRequest(f'Invalid field: "{field}"')
    return fields


def _session_group_by(params: Params) -> list[str]:
    group_by = many(params, "groupBy")
    for name in group_by:
        if name not in SESSION_GROUPS:
            raise BadRequest(f'Invalid groupBy: "{name}"')
    return group_by


def _largest_session_groups(
    chosen: list[SessionSeries], group_by: list[str], primary: str, intervals: int
) -> list[tuple[tuple[str, ...], list[SessionSeries]]]:
    """The groups Sentry keeps, each with its series: the largest `SNUBA_LIMIT //
    intervals` by the primary field (every hour weighs the same in every series, so the
    hourly figures order them), each split by status afterwards when asked."""
    outer = [name for name in group_by if name != SESSION_STATUS]
    merged: dict[tuple[str, ...], list[SessionSeries]] = {}
    for series in chosen:
        merged.setdefault(tuple(_session_label(series, name) for name in outer), []).append(series)
    size = {
        key: sum(s.sessions if primary == "sum(session)" else s.users for s in members)
        for key, members in merged.items()
    }
    ranked = sorted(merged, key=lambda key: (-size[key], key))
    kept = ranked[: SNUBA_LIMIT // intervals] if intervals else []
    groups: dict[tuple[str, ...], list[SessionSeries]] = {}
    for outer_key in sorted(kept):
        for series in merged[outer_key]:
            key = tuple(_session_label(series, name) for name in group_by)
            groups.setdefault(key, []).append(series)
    return sorted(groups.items())


def _session_label(series: SessionSeries, name: str) -> str:
    return {
        "project": series.project_id,
        "release": series.release,
        "environment": series.environment,
        SESSION_STATUS: series.status,
    }[name]


# --- organization lists ------------------------------------------------------------------


def _environments(fake: FakeState, match: dict[str, str], params: Params) -> Answer:
    visibility = one(params, "visibility") or "visible"  # hidden ones vanish by default
    if visibility not in ("all", "hidden", "visible"):
        raise BadRequest(
            "Invalid value for 'visibility', valid values are: ['all', 'hidden', 'visible']"
        )
    organization = fake.organization
    with organization.lock:
        chosen = selected_projects(fake, params)  # no `project`: the caller's teams' only
        every = [project["id"] for project in organization.projects]
    return Answer(environments(visibility, every, chosen))


def _release(fake: FakeState, match: dict[str, str]) -> Row:
    version = unquote(match["version"])
    release = next((r for r in fake.organization.releases if r["version"] == version), None)
    if release is None:
        raise BadRequest(NOT_FOUND, status=404)
    return release


def _release_deploys(fake: FakeState, match: dict[str, str], params: Params) -> Answer:
    with fake.organization.lock:
        rows = deploys(_release(fake, match))
    path = f"/api/0/organizations/x/releases/{match['version']}/deploys/"
    return offset_page(rows, params, path, page_size(params))


def _release_commits(fake: FakeState, match: dict[str, str], params: Params) -> Answer:
    with fake.organization.lock:
        rows = commits(_release(fake, match), fake.organization.created)
    path = f"/api/0/organizations/x/releases/{match['version']}/commits/"
    return offset_page(rows, params, path, page_size(params))


def _monitor_row(fake: FakeState, monitor: Row) -> Row:
    organization = fake.organization
    project = next(p for p in organization.projects if p["id"] == monitor["_project_id"])
    checkins = organization.extras.checkins[monitor["id"]]
    last = checkins[-1] if checkins else None
    team = monitor["_team"]
    return {
        **public(monitor),
        "project": {
            **public(project),
            "avatar": {"avatarType": "letter_avatar", "avatarUuid": None, "avatarUrl": None},
            "color": "#3f70bf",
            "isInternal": False,
            "isPublic": False,
            "status": "active",
        },
        "environments": {
            "name": "production",
            "status": "error" if last and last["status"] != "ok" else "ok",
            "isMuted": monitor["isMuted"],
            "dateCreated": monitor["dateCreated"],
            "lastCheckIn": last["dateClock"] if last else monitor["dateCreated"],
            "nextCheckIn": iso(organization.clock() + timedelta(hours=1)),
            "nextCheckInLatest": iso(organization.clock() + timedelta(hours=1, minutes=5)),
            "activeIncident": None,
        },
        "owner": {"type": "team", "id": team["id"], "name": team["name"]}
        if team
        else {"type": "user", "id": "9000", "name": "Person 0", "email": "person0@example.com"},
    }


def _monitors(fake: FakeState, match: dict[str, str], params: Params) -> Answer:
    organization = fake.organization
    with organization.lock:
        projects = selected_projects(fake, params)
        rows = [
            _monitor_row(fake, monitor)
            for monitor in organization.extras.monitors
            if monitor["_project_id"] in projects
        ]
    return offset_page(rows, params, "/api/0/organizations/x/monitors/", page_size(params))


def _checkins(fake: FakeState, match: dict[str, str], params: Params) -> Answer:
    organization = fake.organization
    size = page_size(params)
    with organization.lock:
        monitor = organization.extras.monitor(match["monitor"])
        if monitor is None:
            raise BadRequest(NOT_FOUND, status=404)
        newest_first = organization.extras.checkins[monitor["id"]][::-1]
    path = f"/api/0/organizations/x/monitors/{match['monitor']}/checkins/"
    return offset_page(newest_first, params, path, size)


def _replays(fake: FakeState, match: dict[str, str], params: Params) -> Answer:
    fields = many(params, "field")
    for field in fields:
        if field not in REPLAY_FIELDS:
            raise BadRequest(f"Invalid field: {field}")
    sort = one(params, "sort") or one(params, "orderBy") or "-started_at"
    if sort.removeprefix("-") not in REPLAY_SORTS:
        raise BadRequest(f"Invalid sort: {sort}")
    size = page_size(params)
    organization = fake.organization
    begin, finish = time_window(params, organization.clock(), fake.settings.retention)
    low = begin.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds")
    high = finish.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds")
    with organization.lock:
        projects = selected_projects(fake, params)
        rows = [
            replay
            for replay in organization.extras.replays
            if replay["project_id"] in projects and low <= replay["started_at"] < high
        ]
    rows.sort(key=lambda row: row["id"])
    rows.sort(key=lambda row: row[sort.removeprefix("-")], reverse=sort.startswith("-"))
    shown = [
        {name: row[name] for name in fields} if fields else {n: row[n] for n in REPLAY_FIELDS}
        for row in rows
    ]
    page = offset_page(shown, params, "/api/0/organizations/x/replays/", size)
    return Answer({"data": page.body}, page.link)


def _user_feedback(fake: FakeState, match: dict[str, str], params: Params) -> Answer:
    status = one(params, "status")
    status = "unresolved" if status is None else status  # only `status=` (empty) shows all
    if status not in ("unresolved", ""):
        raise BadRequest("Invalid status choice")
    organization = fake.organization
    slug = match["project"]
    with organization.lock:
        project = next((p for p in organization.projects if slug in (p["slug"], p["id"])), None)
        if project is None:
            raise BadRequest(NOT_FOUND, status=404)
        if project["slug"] in fake.settings.forbidden_projects:
            raise BadRequest(FORBIDDEN, status=403)
        rows = list(organization.extras.feedback(project["id"]))
        path = f"/api/0/projects/x/{project['slug']}/user-feedback/"
        page = offset_page(rows, params, path, page_size(params))
        if status == "unresolved":  # filtered after paging: pages come back short
            page.body = [row for row in page.body if _is_unresolved(organization, row)]
    return page


def _is_unresolved(organization: FakeOrganization, report: Row) -> bool:
    """A user report whose issue is unresolved now (a deleted issue is not)."""
    issue = organization.issues.get((report["issue"] or {}).get("id", ""))
    return issue is not None and issue["status"] == "unresolved"


def _tag_values(fake: FakeState, match: dict[str, str], params: Params) -> Answer:
    organization = fake.organization
    sort = one(params, "sort") or "count"
    orders = {"count": "count", "date": "lastSeen", "age": "firstSeen", "id": "value"}
    if sort.removeprefix("-") not in orders:
        raise BadRequest(f"Invalid sort: {sort}")
    with organization.lock:
        wanted = match["issue"]  # a merged id is served its survivor, as issue details are
        issue = organization.issues.get(organization.redirects.get(wanted, wanted))
        if issue is None or issue["id"] in organization.phantoms:
            raise BadRequest(NOT_FOUND, status=404)
        rows = organization.extras.tag_values(issue, match["key"])
    # No more than 1,000 values per key, whatever exists: the ones seen most recently.
    rows.sort(key=lambda row: row["lastSeen"], reverse=True)
    capped = rows[:MAX_TAG_VALUES]
    key = orders[sort.removeprefix("-")]
    capped.sort(key=lambda row: row[key], reverse=key != "value")
    path = f"/api/0/organizations/x/issues/{issue['id']}/tags/{match['key']}/values/"
    return offset_page(capped, params, path, page_size(params))


# --- the Explore/Discover index ----------------------------------------------------------


def _explore_value(event: Row, name: str, organization: Any) -> Any:
    issue = organization.issues.get(event["groupID"], {})
    if name == "id":
        return event["eventID"]
    if name == "project.id":
        return int(event["projectID"])
    if name == "project":
        return next(p["slug"] for p in organization.projects if p["id"] == event["projectID"])
    if name == "issue.id":
        return int(event["groupID"])
    if name == "issue":
        return issue.get("shortId")
    if name == "level":
        return issue.get("level")
    if name == "timestamp":
        created = event["dateCreated"]
        if len(created) == 24 and created.endswith("Z"):  # iso(): ...T12:34:56.789Z
            return f"{created[:19]}+00:00"
        moment = datetime.fromisoformat(created.replace("Z", "+00:00"))
        return moment.isoformat(timespec="seconds")
    if name == "environment":
        return next((t["value"] for t in event["tags"] if t["key"] == "environment"), None)
    if name == "release":
        release = event.get("release")
        return release.get("version") if isinstance(release, dict) else release
    if name in ("user.id", "user.email"):
        return (event.get("user") or {}).get(name.removeprefix("user."))
    if name == "trace":
        return event["eventID"][::-1] if int(event["eventID"][0], 16) % 2 == 0 else None
    if name == "transaction":
        return event["culprit"]
    if name == "event.type":
        return "error"
    return event.get(name)


def _explore(fake: FakeState, match: dict[str, str], params: Params) -> Answer:
    if fake.settings.explore_refused:
        raise BadRequest(FORBIDDEN, status=403)
    dataset = one(params, "dataset")
    if dataset is None:
        raise BadRequest("A dataset is required: errors, spans, logs, ...")
    if dataset != "errors" and dataset not in ITEMS:
        raise BadRequest(f"Unsupported dataset: {dataset}")
    fields = many(params, "field")
    if not fields:
        raise BadRequest("No columns selected")
    if len(fields) > EXPLORE_MAX_FIELDS:
        raise BadRequest(f"You can view up to {EXPLORE_MAX_FIELDS} fields at a time.")
    for field in fields:
        known = field in EXPLORE_FIELDS if dataset == "errors" else is_field_name(field)
        if not known and field != COUNT:
            raise BadRequest(f"Invalid field: {field}")
    sort = one(params, "sort")
    if sort is not None and sort.removeprefix("-") not in fields:
        raise BadRequest(f"Cannot sort by a field that is not selected: {sort}")
    size = page_size(params, default=EXPLORE_DEFAULT_PAGE)
    _, offset, _ = read_cursor(params)
    cap = fake.settings.explore_max_rows
    if offset >= cap:
        raise BadRequest("Query exceeds max offset. Use a smaller date range.")
    organization = fake.organization
    now = organization.clock()
    if not any(one(params, name) for name in ("start", "end", "statsPeriod")):
        begin, finish = now - DEFAULT_PERIOD, now  # the short default window
    else:
        begin, finish = time_window(params, now, fake.settings.retention)
    if begin >= finish:  # Sentry's outside_retention_with_modified_start: all of it expired
        raise BadRequest(EXPIRED_RANGE)
    low, high = iso(begin), iso(finish)
    with organization.lock:
        projects = sorted(selected_projects(fake, params))
        query = one(params, "query") or ""
        rows, sampled = _ordered_rows(fake, dataset, projects, (low, high), fields, sort, query)
        reachable = min(len(rows), cap)  # offset paging stops at 10,000 rows
        page = rows[offset : min(offset + size, reachable)]
        if dataset not in ITEMS and COUNT not in fields:
            page = [
                {name: _explore_value(event, name, organization) for name in fields}
                for event in page
            ]
    following = offset + len(page)
    has_next = following < reachable or (
        fake.settings.explore_cap_refuses and following < len(rows)
    )
    link = link_header(
        "/api/0/organizations/x/events/",
        f"0:{max(0, offset - size)}:1",
        offset > 0,
        f"0:{following}:0",
        has_next,
    )
    types = EXPLORE_FIELDS if dataset == "errors" else ITEMS[dataset][1]
    meta = {
        "fields": {f: types.get(f, "integer" if f == COUNT else "string") for f in fields},
        "units": dict.fromkeys(fields),
        "isMetricsData": False,
        "tips": {},
        "dataset": dataset,
        "dataScanned": "partial" if fake.settings.explore_partial or sampled else "full",
    }
    return Answer({"data": page, "meta": meta}, link)


# The rows of the last query each fake answered, in order: the pages that follow ask again.
_ORDERED: weakref.WeakKeyDictionary[FakeState, tuple[tuple[Any, ...], list[Row], bool]] = (
    weakref.WeakKeyDictionary()
)


def _ordered_rows(
    fake: FakeState,
    dataset: str,
    projects: list[str],
    window: tuple[str, str],
    fields: list[str],
    sort: str | None,
    query: str,
) -> tuple[list[Row], bool]:
    """A query's rows in order (events, or counts with `count()`), and whether they are a
    sample. Only the sort field of every event is looked up: `_explore` makes the page."""
    organization = fake.organization
    threshold = fake.settings.explore_sampled_above
    size = sum(len(organization.events.get(project_id, ())) for project_id in projects)
    asked = (dataset, query, tuple(projects), window, tuple(fields), sort, threshold)
    key = (*asked, organization.version, size)
    cached = _ORDERED.get(fake)
    if cached is not None and cached[0] == key:
        return cached[1], cached[2]
    low, high = window
    found = []
    for project_id in projects:  # each project's events in the window, by bisection
        ordered, moments = fake.sorted_events(project_id)
        found += ordered[bisect.bisect_left(moments, low) : bisect.bisect_left(moments, high)]
    if dataset in ITEMS:
        found = _items(dataset, found, organization, query)
    sampled = threshold is not None and len(found) > threshold
    if sampled:
        found = found[::2]  # a sample: rows go missing
    name = (sort or "").removeprefix("-")
    if dataset in ITEMS:
        rows = _item_rows(found, fields)
        if sort is not None:
            rows.sort(key=lambda row: _sort_key(row[name]), reverse=sort.startswith("-"))
    elif COUNT in fields:
        rows = _aggregate(found, [f for f in fields if f != COUNT], organization)
        if sort is not None:
            rows.sort(key=lambda row: _sort_key(row[name]), reverse=sort.startswith("-"))
    else:
        rows = sorted(found, key=lambda event: event["eventID"])
        if sort is not None:
            rows.sort(
                key=lambda event: _sort_key(_explore_value(event, name, organization)),
                reverse=sort.startswith("-"),
            )
    _ORDERED[fake] = (key, rows, sampled)
    return rows, sampled


def _sort_key(value: Any) -> tuple[bool, Any]:
    return value is None, value


def _items(dataset: str, events: list[Row], organization: Any, query: str) -> list[Row]:
    """The spans or logs of these events that the query selects, by id."""
    make = ITEMS[dataset][0]
    items = [item for event in events for item in make(event, organization)]
    return sorted((item for item in items if matches(item, query)), key=lambda item: item["id"])


def _item_rows(items: list[Row], fields: list[str]) -> list[Row]:
    """The fields asked for; `count()` groups by the others."""
    if COUNT not in fields:
        return [{name: item.get(name) for name in fields} for item in items]
    keys = [name for name in fields if name != COUNT]
    counts: dict[tuple[Any, ...], int] = {}
    for item in items:
        key = tuple(item.get(name) for name in keys)
        counts[key] = counts.get(key, 0) + 1
    return [{**dict(zip(keys, key, strict=True)), COUNT: count} for key, count in counts.items()]


def _aggregate(events: list[Row], keys: list[str], organization: Any) -> list[Row]:
    counts: dict[tuple[Any, ...], int] = {}
    for event in events:
        key = tuple(_explore_value(event, name, organization) for name in keys)
        counts[key] = counts.get(key, 0) + 1
    ordered = sorted(counts.items(), key=lambda item: tuple((v is None, str(v)) for v in item[0]))
    return [{**dict(zip(keys, key, strict=True)), COUNT: count} for key, count in ordered]


_ORG = r"^organizations/(?P<org>[^/]+)/"
ROUTES = (
    (re.compile(_ORG + r"stats_v2/$"), "stats_v2"),
    (re.compile(_ORG + r"stats-summary/$"), "stats_summary"),
    (re.compile(_ORG + r"sessions/$"), "sessions"),
    (re.compile(_ORG + r"environments/$"), "environments"),
    (re.compile(_ORG + r"releases/(?P<version>[^/]+)/deploys/$"), "release_deploys"),
    (re.compile(_ORG + r"releases/(?P<version>[^/]+)/commits/$"), "release_commits"),
    (re.compile(_ORG + r"monitors/$"), "monitors"),
    (re.compile(_ORG + r"monitors/(?P<monitor>[^/]+)/checkins/$"), "checkins"),
    (re.compile(_ORG + r"replays/$"), "replays"),
    (re.compile(r"^projects/(?P<org>[^/]+)/(?P<project>[^/]+)/user-feedback/$"), "user_feedback"),
    (re.compile(_ORG + r"issues/(?P<issue>[^/]+)/tags/(?P<key>[^/]+)/values/$"), "tag_values"),
    (re.compile(_ORG + r"events/$"), "explore"),
)
RELEASE_SCOPES = {"project:releases", "project:read", "org:ci"}
SCOPES = {
    "stats_v2": {"org:read"},
    "stats_summary": {"org:read"},
    "sessions": {"org:read"},
    "environments": {"org:read"},
    "release_deploys": RELEASE_SCOPES,
    "release_commits": RELEASE_SCOPES,
    "monitors": {"org:read"},
    "checkins": {"org:read"},
    "replays": {"org:read"},
    "user_feedback": {"project:read"},
    "tag_values": {"event:read"},
    "explore": {"event:read", "event:write", "event:admin"},  # OrganizationEventPermission
}
ENDPOINTS: dict[str, Endpoint] = {
    "stats_v2": _stats_v2,
    "stats_summary": _stats_summary,
    "sessions": _sessions,
    "environments": _environments,
    "release_deploys": _release_deploys,
    "release_commits": _release_commits,
    "monitors": _monitors,
    "checkins": _checkins,
    "replays": _replays,
    "user_feedback": _user_feedback,
    "tag_values": _tag_values,
    "explore": _explore,
}
