"""What every endpoint of the fake Sentry shares: parameters, errors, pages and windows."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sentry_extract.testing.fake_state import FakeState
from sentry_extract.testing.rows import Row, parse_iso

MAX_PAGE_SIZE = 100
NOT_FOUND = "The requested resource does not exist"
Params = list[tuple[str, str]]


class BadRequest(Exception):
    def __init__(self, detail: str, status: int = 400) -> None:
        self.detail = detail
        self.status = status


@dataclass
class Answer:
    body: Any
    link: str | None = None


def one(params: Params, name: str) -> str | None:
    return next((value for key, value in params if key == name), None)


def many(params: Params, name: str) -> list[str]:
    return [value for key, value in params if key == name]


def page_size(params: Params, name: str = "per_page", default: int = MAX_PAGE_SIZE) -> int:
    text = one(params, name)
    if text is None:
        return default
    try:
        size = int(text)
    except ValueError:
        raise BadRequest(f"Invalid {name} value.") from None
    if size > MAX_PAGE_SIZE:
        raise BadRequest(f"Invalid {name} value. Cannot exceed {MAX_PAGE_SIZE}.")
    return max(1, size)


def read_cursor(params: Params) -> tuple[int, int, int]:
    text = one(params, "cursor")
    if text is None:
        return 0, 0, 0
    try:
        value, offset, is_prev = (int(part) for part in text.split(":"))
    except ValueError:
        raise BadRequest("Invalid cursor parameter.") from None
    return value, offset, is_prev


def link_header(
    path: str, previous: str, has_previous: bool, following: str, has_next: bool
) -> str:
    base = f"http://sentry.invalid{path}"  # the Link host is not ours to follow
    return (
        f'<{base}?&cursor={previous}>; rel="previous"; results="{str(has_previous).lower()}"; '
        f'cursor="{previous}", '
        f'<{base}?&cursor={following}>; rel="next"; results="{str(has_next).lower()}"; '
        f'cursor="{following}"'
    )


def offset_page(rows: list[Row], params: Params, path: str, size: int) -> Answer:
    _, offset, _ = read_cursor(params)
    page = rows[offset : offset + size]
    following = offset + len(page)
    return Answer(
        page,
        link_header(
            path,
            f"0:{max(0, offset - size)}:1",
            offset > 0,
            f"0:{following}:0",
            following < len(rows),
        ),
    )


def time_window(params: Params, now: datetime, retention: timedelta) -> tuple[datetime, datetime]:
    start, end, period = one(params, "start"), one(params, "end"), one(params, "statsPeriod")
    oldest = now - retention
    if period:
        match = re.fullmatch(r"(\d+)([smhdw])", period)
        if match is None:
            raise BadRequest("Invalid statsPeriod")
        unit = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
        begin = now - timedelta(**{unit[match.group(2)]: int(match.group(1))})
        return max(begin, oldest), now
    if (start is None) != (end is None):
        raise BadRequest("start and end are both required")
    if start is None or end is None:
        return max(now - timedelta(days=90), oldest), now
    try:
        begin, finish = (
            parse_iso(start.replace("Z", "+00:00")),
            parse_iso(end.replace("Z", "+00:00")),
        )
    except ValueError:
        raise BadRequest("Error parsing start or end") from None
    if begin.tzinfo is None or finish.tzinfo is None:
        begin, finish = begin.replace(tzinfo=UTC), finish.replace(tzinfo=UTC)
    return max(begin, oldest), finish  # the server clamps to retention silently


def selected_projects(fake: FakeState, params: Params) -> set[str]:
    wanted = many(params, "project")
    every = {project["id"] for project in fake.organization.projects}
    if not wanted:
        return fake.organization.my_project_ids()
    if "-1" in wanted:
        return every
    return {value for value in wanted if value in every}
