"""Time-series answers (usage, release health) flattened into rows: one row a group and
interval (or a project, category and outcome a day).

Each reader asks for one window and gives its rows, and says when the answer was cut.
Group-by values that an answer leaves out are empty text, never null: they are part of the
row's key.

Release health is cut without a word. Sentry's sessions endpoint
(`release_health/metrics_sessions_v2.py`, `run_sessions_query`) asks for at most
`SNUBA_LIMIT // len(intervals)` groups of project, release and environment, the largest
by the first field (`sum(session)` when asked), then splits each into its four session
statuses; the groups past that limit are dropped and nothing says so. Only past
`MAX_POINTS` intervals is the request a 400 (`sessions_v2.get_constrained_date_range`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from sentry_extract.errors import BadRequestError, RangeTooLargeError
from sentry_extract.model.spec import Fetch, Params, Row, SeriesPiece
from sentry_extract.model.windows import format_datetime

DAY = "1d"  # every reader asks for daily intervals
SNUBA_LIMIT = 5_000  # data points one sessions answer holds at most (sessions_v2.SNUBA_LIMIT)
MAX_INTERVALS = 1_000  # intervals one sessions request may span (sessions_v2.MAX_POINTS)
USAGE_FIELDS = (("sum(quantity)", "quantity"), ("sum(times_seen)", "timesSeen"))
USAGE_GROUPS = ("category", "outcome", "reason")
SESSION_FIELDS = (("sum(session)", "sessions"), ("count_unique(user)", "users"))
SESSION_GROUPS = ("project", "release", "environment", "session.status")


def read_usage(fetch: Fetch, start: datetime, end: datetime) -> SeriesPiece:
    """stats_v2, by day, category, outcome and reason. Its `field` takes one value: one
    request for quantities, one for times seen, joined on the group and day."""
    rows: dict[tuple[str, ...], Row] = {}
    for field, column in USAGE_FIELDS:
        body = fetch(
            {
                "field": field,
                "groupBy": USAGE_GROUPS,
                "interval": DAY,
                "start": format_datetime(start),
                "end": format_datetime(end),
            }
        )
        for row in flatten_groups(body, USAGE_GROUPS, ((field, column),)):
            key = tuple(str(row[name]) for name in ("interval", *USAGE_GROUPS))
            rows.setdefault(key, {}).update(row)
    return SeriesPiece(list(rows.values()))


def read_sessions(fetch: Fetch, start: datetime, end: datetime) -> SeriesPiece:
    """Release health by day, project, release, environment and session status; cut when
    the answer holds as many groups as Sentry keeps for its number of intervals. A 400
    for a range past the intervals one request spans is `RangeTooLargeError`."""
    params: Params = {
        "field": tuple(field for field, _ in SESSION_FIELDS),
        "groupBy": SESSION_GROUPS,
        "interval": DAY,
        "project": "-1",
        "start": format_datetime(start),
        "end": format_datetime(end),
    }
    try:
        body = fetch(params)
    except BadRequestError as error:
        if not is_over_interval_limit(start, end):
            raise
        raise RangeTooLargeError(
            f"{error.message}: more than {MAX_INTERVALS:,} days in one request",
            url=error.url,
            status=error.status,
        ) from error
    return SeriesPiece(flatten_groups(body, SESSION_GROUPS, SESSION_FIELDS), is_cut(body))


def is_cut(body: Any) -> bool:
    """Whether a sessions answer may have lost groups: it holds `SNUBA_LIMIT // intervals`
    groups (session statuses aside, as Sentry counts them) or more. An answer exactly at
    the limit may be complete; asking again for fewer days tells, and costs little."""
    if not isinstance(body, dict):
        return False
    intervals = len(body.get("intervals") or [])
    if not intervals:
        return False
    groups = {
        tuple(
            sorted(
                (str(key), str(value))
                for key, value in (group.get("by") or {}).items()
                if key != "session.status"
            )
        )
        for group in body.get("groups") or []
        if isinstance(group, dict)
    }
    return len(groups) >= SNUBA_LIMIT // intervals


def is_over_interval_limit(start: datetime, end: datetime) -> bool:
    """Whether a range of daily intervals is more than a sessions request may span: the
    one thing Sentry refuses with a 400 that fewer days cure."""
    return math.ceil((end - start) / timedelta(days=1)) > MAX_INTERVALS


def read_project_usage(fetch: Fetch, start: datetime, end: datetime) -> SeriesPiece:
    """stats-summary gives totals for its whole range: one request a day, so each row is
    a project's day in one category and outcome."""
    rows: list[Row] = []
    day = start
    while day < end:
        following = min(day + timedelta(days=1), end)
        body = fetch(
            {
                "field": "sum(quantity)",
                "project": "-1",
                "start": format_datetime(day),
                "end": format_datetime(following),
            }
        )
        rows.extend(flatten_projects(body, day))
        day = following
    return SeriesPiece(rows)


def flatten_groups(
    body: Any, groups: Iterable[str], fields: Iterable[tuple[str, str]]
) -> list[Row]:
    """`{intervals[], groups[{by, series}]}` -> one row per group and interval."""
    if not isinstance(body, dict):
        return []
    intervals = [str(moment) for moment in body.get("intervals") or []]
    names = tuple(groups)
    rows: list[Row] = []
    for group in body.get("groups") or []:
        if not isinstance(group, dict):
            continue
        by = group.get("by") or {}
        series = group.get("series") or {}
        dimensions = {name: _text(by.get(name)) for name in names}
        for index, interval in enumerate(intervals):
            row: Row = {"interval": interval, **dimensions}
            for field, column in fields:
                values = series.get(field) or []
                row[column] = _count(values[index]) if index < len(values) else None
            rows.append(row)
    return rows


def flatten_projects(body: Any, day: datetime) -> list[Row]:
    """`{projects[{id, slug, stats[{category, outcomes{}}]}]}` -> one row per project,
    category and outcome."""
    if not isinstance(body, dict):
        return []
    rows: list[Row] = []
    for project in body.get("projects") or []:
        if not isinstance(project, dict):
            continue
        for stats in project.get("stats") or []:
            if not isinstance(stats, dict):
                continue
            for outcome, quantity in (stats.get("outcomes") or {}).items():
                rows.append(
                    {
                        "day": format_datetime(day),
                        "projectID": _text(project.get("id")),
                        "projectSlug": _text(project.get("slug")),
                        "category": _text(stats.get("category")),
                        "outcome": str(outcome),
                        "quantity": _count(quantity),
                    }
                )
    return rows


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _count(value: Any) -> Any:
    """Counts come as JSON numbers, sometimes `368.0`: whole ones as integers."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value
